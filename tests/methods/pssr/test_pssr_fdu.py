"""The frequency-domain update against an independent numpy port of the release's ``fuse_patch``
(``HiDream-ai/PS-SR:inference_step_2.py`` @ 3ea208b), and the properties issue 11 asks for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsrkit.methods.pssr.config import PSSRConfig
from vsrkit.methods.pssr.method import video_fdu
from vsrkit.methods.pssr.model import FrequencyDomainUpdate

rgb_to_yuv, yuv_to_rgb, lowpass = FrequencyDomainUpdate.rgb_to_yuv, FrequencyDomainUpdate.yuv_to_rgb, FrequencyDomainUpdate.lowpass


def frequency_domain_update(consistent, sharp, **options):
    return FrequencyDomainUpdate(**options)(consistent, sharp)


def butterworth_lowpass(height, width, cutoff, order):
    return FrequencyDomainUpdate(cutoff=cutoff, order=order).gain(height, width)


def release_fuse_patch(tc: np.ndarray, ts: np.ndarray, fc=0.20, alpha=1.0, border=2, order=2, eps=1e-6):
    """``fuse_patch`` of inference_step_2.py, line for line, in float64 numpy (``(T, 3, H, W)`` in [0, 1]).

    Like the release, ``fftshift``/``ifftshift`` get no axes: they also roll the frame and channel axes.
    """
    def rgb_to_yuv_np(img):
        r, g, b = img[:, 0:1], img[:, 1:2], img[:, 2:3]
        return np.concatenate([0.299 * r + 0.587 * g + 0.114 * b, -0.14713 * r - 0.28886 * g + 0.436 * b,
                               0.615 * r - 0.51499 * g - 0.10001 * b], axis=1)

    def yuv_to_rgb_np(img):
        y, u, v = img[:, 0:1], img[:, 1:2], img[:, 2:3]
        return np.concatenate([y + 1.13983 * v, y - 0.39465 * u - 0.5806 * v, y + 2.03211 * u], axis=1)

    h, w = tc.shape[-2:]
    u = np.linspace(-0.5, 0.5, w).reshape(1, 1, 1, w)
    v = np.linspace(-0.5, 0.5, h).reshape(1, 1, h, 1)
    hlp = 1.0 / (1.0 + (np.sqrt(u ** 2 + v ** 2) / fc) ** (2 * order))
    yuv_c, yuv_s = rgb_to_yuv_np(tc), rgb_to_yuv_np(ts)
    yc, ys = yuv_c[:, 0:1], yuv_s[:, 0:1]

    def get_hp(y):
        f = np.fft.fftshift(np.fft.fft2(y, norm="ortho"))
        ilp = np.real(np.fft.ifft2(np.fft.ifftshift(f * hlp), norm="ortho"))
        return ilp, y - ilp

    lc, hc = get_hp(yc)
    _, hs = get_hp(ys)
    w_hf = np.abs(hs) / (np.abs(hs) + np.abs(hc) + eps)
    y_fused = lc + alpha * (w_hf * hs + (1.0 - w_hf) * hc)
    if border > 0:
        mask = np.zeros_like(y_fused)
        mask[:, :, border:h - border, border:w - border] = 1.0
        y_fused = mask * y_fused + (1.0 - mask) * yc
    return np.clip(yuv_to_rgb_np(np.concatenate([y_fused, yuv_c[:, 1:]], axis=1)), 0, 1)


def _pair(t=3, h=20, w=26, seed=0, noise=0.15):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(t, 3, h, w, generator=g) * 0.6 + 0.2
    sharp = (base + noise * torch.randn(t, 3, h, w, generator=g)).clamp(0, 1)
    return base, sharp


@pytest.mark.parametrize("alpha,border,size", [(1.0, 2, (20, 26)), (0.6, 2, (21, 17)), (1.0, 0, (16, 16)),
                                               (0.3, 3, (15, 24))])
def test_fdu_matches_the_release_script(alpha, border, size):
    base, sharp = _pair(h=size[0], w=size[1])
    ours = frequency_domain_update(base, sharp, alpha=alpha, border=border)
    theirs = release_fuse_patch(base.double().numpy(), sharp.double().numpy(), alpha=alpha, border=border)
    np.testing.assert_allclose(ours.numpy(), theirs, atol=2e-6)


@pytest.mark.parametrize("cutoff,order", [(0.1, 2), (0.2, 4), (0.35, 1)])
def test_fdu_cutoff_and_order_follow_the_release(cutoff, order):
    base, sharp = _pair(seed=3)
    ours = frequency_domain_update(base, sharp, cutoff=cutoff, order=order)
    theirs = release_fuse_patch(base.double().numpy(), sharp.double().numpy(), fc=cutoff, order=order)
    np.testing.assert_allclose(ours.numpy(), theirs, atol=2e-6)
    # A different cut-off changes the result (the filter is live).
    other = frequency_domain_update(base, sharp, cutoff=cutoff * 1.5, order=order)
    assert (other - ours).abs().max() > 1e-3


def test_identical_inputs_come_back_at_alpha_one():
    base, _ = _pair(seed=1)
    out = frequency_domain_update(base, base.clone(), alpha=1.0)
    # Luma exact up to float32 rounding; RGB within the release's non-inverse YUV matrices (1.6e-5).
    torch.testing.assert_close(rgb_to_yuv(out)[:, :1], rgb_to_yuv(base)[:, :1], rtol=0, atol=2e-6)
    torch.testing.assert_close(out, base, rtol=0, atol=3e-5)


def test_low_band_chroma_and_border_come_from_the_base():
    base, sharp = _pair(seed=2, noise=0.04)
    _, other_sharp = _pair(seed=5, noise=0.04)
    yuv_base = rgb_to_yuv(base)
    gain = butterworth_lowpass(base.shape[-2], base.shape[-1], 0.20, 2)
    low_base = lowpass(yuv_base[:, :1], gain)
    for alpha in (1.0, 0.6):
        out = frequency_domain_update(base, sharp, alpha=alpha)
        yuv = rgb_to_yuv(out)
        assert 0 < out.min() and out.max() < 1  # the clamp does not act, so chroma can be compared
        # Chroma is the base's.
        torch.testing.assert_close(yuv[:, 1:], yuv_base[:, 1:], rtol=0, atol=3e-5)
        # The 2-pixel border's luma is the base's; the interior's is not.
        border = torch.ones_like(out[:, :1], dtype=torch.bool)
        border[..., 2:-2, 2:-2] = False
        torch.testing.assert_close(yuv[:, :1][border], yuv_base[:, :1][border], rtol=0, atol=3e-5)
        assert (yuv[:, :1, 2:-2, 2:-2] - yuv_base[:, :1, 2:-2, 2:-2]).abs().max() > 1e-3
    # With alpha 0 the interior luma is exactly the base's low band, whatever the draft is.
    zero_a = frequency_domain_update(base, sharp, alpha=0.0)
    zero_b = frequency_domain_update(base, other_sharp, alpha=0.0)
    torch.testing.assert_close(zero_a, zero_b, rtol=0, atol=0)
    torch.testing.assert_close(rgb_to_yuv(zero_a)[:, :1, 2:-2, 2:-2], low_base[..., 2:-2, 2:-2], rtol=0, atol=3e-5)


def test_high_frequencies_come_from_the_sharper_input():
    # A flat base (odd size: the filter passes DC exactly, so its high band is 0) and a
    # checkerboard draft: w = 1 everywhere and the luma is the base's mean plus the draft's high band.
    base = torch.full((1, 3, 33, 33), 0.5)
    check = ((torch.arange(33).view(-1, 1) + torch.arange(33).view(1, -1)) % 2).float()
    sharp = (0.5 + 0.2 * (check - 0.5)).expand(1, 3, 33, 33).clone()
    out = frequency_domain_update(base, sharp, alpha=1.0, border=0)
    gain = butterworth_lowpass(33, 33, 0.20, 2)
    y_sharp = rgb_to_yuv(sharp)[:, :1]
    high_sharp = y_sharp - lowpass(y_sharp, gain)
    torch.testing.assert_close(rgb_to_yuv(out)[:, :1] - 0.5, high_sharp, rtol=0, atol=1e-4)


def test_butterworth_gain_on_the_release_grid():
    gain = butterworth_lowpass(9, 13, 0.20, 2)
    assert gain.shape == (1, 1, 9, 13)
    assert gain[0, 0, 4, 6] == 1.0  # odd sizes: the grid has an exact DC sample
    r = (0.5 ** 2 + 0.5 ** 2) ** 0.5  # a corner of linspace(-0.5, 0.5)
    assert float(gain[0, 0, 0, 0]) == pytest.approx(1 / (1 + (r / 0.2) ** 4), rel=1e-6)
    even = butterworth_lowpass(8, 8, 0.20, 2)
    assert float(even.max()) == pytest.approx(0.9389, abs=1e-4)  # pssr.md errata: no DC sample at 8x8


def test_yuv_round_trip_is_the_release_pair():
    rgb = torch.rand(2, 3, 5, 5)
    back = yuv_to_rgb(rgb_to_yuv(rgb))
    assert 1e-7 < (back - rgb).abs().max() < 2e-5  # the two matrices are not exact inverses (errata)


def test_video_fdu_works_frame_by_frame_in_minus_one_one():
    base, sharp = _pair(t=4, h=16, w=18, seed=7)
    config = PSSRConfig(fdu_alpha=0.6)
    video = video_fdu(base.permute(1, 0, 2, 3)[None] * 2 - 1, sharp.permute(1, 0, 2, 3)[None] * 2 - 1, config)
    frames = frequency_domain_update(base, sharp, alpha=0.6)
    torch.testing.assert_close(video[0].permute(1, 0, 2, 3), frames * 2 - 1, rtol=0, atol=1e-6)
