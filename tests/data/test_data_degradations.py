"""Degradation presets on real frames: output size, seeding, strength; and their building blocks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from datahelpers import load_rgb, psnr

from vsrkit.data.degradations import build_degradation, ops
from vsrkit.data.degradations.classic import bd_kernel
from vsrkit.data.degradations.config import (
    BDConfig,
    BicubicDegradationConfig,
    BlurConfig,
    PSSRDegradationConfig,
    RealBasicVSRConfig,
)
from vsrkit.data.degradations.kernels import gaussian_kernel, generalized_gaussian_kernel, random_kernel, sinc_kernel
from vsrkit.errors import UserError

CONFIGS = {
    "realbasicvsr": RealBasicVSRConfig,
    "realesrgan_video": PSSRDegradationConfig,
    "bd": BDConfig,
    "bicubic": BicubicDegradationConfig,
}
RANDOM = {"realbasicvsr", "realesrgan_video"}


@pytest.fixture(scope="module")
def clip(real_data) -> torch.Tensor:
    """3 real frames of Vid4 calendar, a 128x96 crop: (C, T, H, W) in [0, 1]."""
    gt = real_data / "yhjo09_VSR-DUF_Vid4" / "calendar" / "GT"
    frames = [load_rgb(gt / f"{i:03d}.png")[:, 200:296, 300:428] for i in (1, 2, 3)]
    return torch.stack(frames, dim=1)


def degrade(name: str, hq: torch.Tensor, seed: int, scale: int = 4) -> torch.Tensor:
    return build_degradation(CONFIGS[name](), scale=scale)(hq, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_preset_size_range_and_quantization(name, clip):
    lq = degrade(name, clip, seed=0)
    assert tuple(lq.shape) == (3, 3, 24, 32)
    assert lq.dtype == torch.float32
    assert float(lq.min()) >= 0.0 and float(lq.max()) <= 1.0
    # 8-bit levels, like a stored LR video.
    assert torch.equal(lq * 255, torch.round(lq * 255))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_preset_reproducible_and_seeded(name, clip):
    a, b, c = degrade(name, clip, 1), degrade(name, clip, 1), degrade(name, clip, 2)
    assert torch.equal(a, b)
    if name in RANDOM:
        assert not torch.equal(a, c)
    else:
        assert torch.equal(a, c)


@pytest.mark.parametrize("name,bound", [("realbasicvsr", 24.0), ("realesrgan_video", 24.0), ("bd", 26.0), ("bicubic", 26.0)])
def test_preset_measurably_degrades(name, bound, clip):
    # Bicubic x4 re-upsampling of the LR, compared with the source: far below a clean copy.
    for seed in (0, 1, 2):
        lq = degrade(name, clip, seed)
        up = F.interpolate(lq.transpose(0, 1), scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
        value = psnr(up, clip.transpose(0, 1))
        assert 8.0 < value < bound, (name, seed, value)


def test_bd_reproduces_vid4_lr(calendar):
    gt = load_rgb(calendar / "GT" / "001.png")
    lr = load_rgb(calendar / "LR_BDx4" / "001.png")
    out = build_degradation(BDConfig(), scale=4)(gt[:, None], None)[:, 0]
    assert tuple(out.shape) == tuple(lr.shape) == (3, 144, 180)
    assert psnr(out, lr) > 50.0
    # Reflected borders are a different convention and miss the 50 dB mark at the frame edges.
    reflect = build_degradation(BDConfig(padding="reflect"), scale=4)(gt[:, None], None)[:, 0]
    assert psnr(reflect, lr) < psnr(out, lr)


def test_bd_kernel_matches_duf_gkern():
    # VSR-DUF gkern(13, 1.6): Gaussian samples at -6..6, normalised; separable and symmetric.
    k = bd_kernel(13, 1.6).double()
    assert tuple(k.shape) == (13, 13)
    assert abs(float(k.sum()) - 1.0) < 1e-6
    g = torch.exp(-torch.arange(-6, 7, dtype=torch.float64) ** 2 / (2 * 1.6**2))
    assert torch.allclose(k, torch.outer(g, g) / torch.outer(g, g).sum(), atol=1e-7)


def test_matlab_bicubic_index_convention():
    # Cubic weights reproduce a linear ramp: output i (1-based) sits at input 4i - 1.5 for x1/4.
    ramp = torch.arange(1, 65, dtype=torch.float64).repeat(64, 1)  # value = 1-based column index
    out = ops.matlab_imresize(ramp, 0.25)
    assert tuple(out.shape) == (16, 16)
    expected = 4 * torch.arange(1, 17, dtype=torch.float64) - 1.5
    assert torch.allclose(out[8, 3:-3], expected[3:-3], atol=1e-9)


def test_matlab_bicubic_antialias():
    # Stripes of period 3 are above the x1/4 Nyquist limit: antialiasing flattens them to their
    # mean 1/3, plain cubic sampling aliases them into a strong period-3 pattern.
    stripes = (torch.arange(96) % 3 == 0).double().repeat(32, 1)
    smooth = ops.matlab_imresize(stripes, 0.25, antialias=True)[4, 2:-2]
    aliased = ops.matlab_imresize(stripes, 0.25, antialias=False)[4, 2:-2]
    assert float((smooth - 1 / 3).abs().max()) < 0.01
    assert float(aliased.max() - aliased.min()) > 0.5


def test_kernels():
    assert torch.allclose(generalized_gaussian_kernel(21, 2.0, 2.0, 0.0, 1.0), gaussian_kernel(21, 2.0), atol=1e-6)
    aniso = gaussian_kernel(21, 3.0, 0.5, 0.0)
    assert float(aniso[10].sum()) > float(aniso[:, 10].sum())  # wide along x, narrow along y
    sinc = sinc_kernel(21, math.pi / 3)
    assert abs(float(sinc.sum()) - 1.0) < 1e-6 and float(sinc.min()) < 0  # ringing lobes
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        k = random_kernel(BlurConfig(), g)
        assert k.shape[0] == k.shape[1] and k.shape[0] in range(7, 22, 2)
        assert abs(float(k.sum()) - 1.0) < 1e-5


def test_poisson_scale_conventions():
    # RealBasicVSR computes Poisson noise on 0-255 values: sqrt(255)-times weaker than Real-ESRGAN.
    x = torch.full((4, 3, 32, 32), 0.5)
    g = torch.Generator().manual_seed(0)
    weak = ops.poisson_noise(x, [1.0] * 4, [False] * 4, g, on_255_scale=True) - x
    strong = ops.poisson_noise(x, [1.0] * 4, [False] * 4, g, on_255_scale=False) - x
    ratio = float(strong.std() / weak.std())
    assert 12.0 < ratio < 20.0, ratio


def test_video_codec_round_trip_odd_size():
    frames = torch.rand(5, 3, 21, 35)
    out = ops.compress_video(frames, "libx264", 20000)
    assert tuple(out.shape) == (5, 3, 21, 35)
    assert 5.0 < psnr(out, frames) < 40.0  # lossy, but the same picture
    mpeg4 = ops.compress_video(frames, "mpeg4", 20000)
    assert tuple(mpeg4.shape) == (5, 3, 21, 35)


def test_jpeg_quality_orders_distortion(clip):
    frames = clip.transpose(0, 1)
    low = psnr(ops.jpeg(frames, [10, 10, 10]), frames)
    high = psnr(ops.jpeg(frames, [95, 95, 95]), frames)
    assert low < high < 60.0


def test_bad_inputs_are_user_errors(clip):
    bd = build_degradation(BDConfig(), scale=4)
    with pytest.raises(UserError, match="divisible by scale 4"):
        bd(clip[..., :95, :], None)
    with pytest.raises(UserError, match=r"\(C, T, H, W\)"):
        bd(clip[:, 0], None)
    with pytest.raises(UserError, match="offset"):
        build_degradation(BDConfig(offset=4), scale=4)
    with pytest.raises(UserError, match="degradation.blur1.prob"):
        RealBasicVSRConfig(blur1=BlurConfig(prob=1.5))
    with pytest.raises(UserError, match="Unknown degradation"):
        build_degradation(BDConfig(name="bdd"), scale=4)


def test_image_branch_skips_codec(clip):
    # Same seed: the image branch draws no codec, so its result differs from the video branch.
    deg = build_degradation(RealBasicVSRConfig(), scale=4)
    video = deg(clip[:, :1], torch.Generator().manual_seed(5))
    image = deg(clip[:, :1], torch.Generator().manual_seed(5), is_image=True)
    assert tuple(image.shape) == (3, 1, 24, 32)
    assert not torch.equal(video, image)


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_video_codec_is_deterministic(codec):
    # Regression: libx264 read uninitialised memory and gave different bytes from run to run.
    for size in ((24, 32), (32, 32), (30, 46)):
        frames = torch.rand(3, 3, *size, generator=torch.Generator().manual_seed(0))
        outputs = {ops.compress_video(frames.clone(), codec, 10000).numpy().tobytes() for _ in range(12)}
        assert len(outputs) == 1, size
