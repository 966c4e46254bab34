"""PSNR / SSIM against pyiqa's ResultsCalibra oracle, BasicSR conventions and the Vid4 calendar floor."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from vsrkit.errors import UserError
from vsrkit.metrics.config import PSNRConfig, PSNRYConfig, SSIMConfig
from vsrkit.metrics.full_reference import PSNR_CAP_DB, PSNRMetric, PSNRYMetric, SSIMCMetric, SSIMMetric, psnr, ssim

IMAGES = ["I03", "I04", "I06", "I08", "I19"]
# The PSNR of the five TID2013 pairs (exact MSE; pyiqa's `psnr(ours)` row agrees to 1e-4 dB).
PSNR_ORACLE = [21.1136, 20.9872, 27.0139, 23.3003, 21.6187]


def _load(path) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1], the way vsrkit's aggregator converts 8-bit frames."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float() / 255.0


def _csv_rows(path) -> dict[str, list[float]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0][1:]
    assert header == [f"{n}.bmp" for n in IMAGES]
    return {r[0]: [float(x) for x in r[1:]] for r in rows[1:]}


@pytest.fixture(scope="module")
def calibra(real_data):
    root = real_data / "chaofengc_IQA-PyTorch_ResultsCalibra"
    dist = torch.cat([_load(root / "dist_dir" / f"{n}.bmp") for n in IMAGES])
    ref = torch.cat([_load(root / "ref_dir" / f"{n}.bmp") for n in IMAGES])
    return dist, ref, _csv_rows(root / "calibration_summary.csv"), _csv_rows(root / "results_official.csv")


def test_psnr_reproduces_results_calibra(calibra):
    dist, ref, summary, _ = calibra
    scores = PSNRMetric()(dist, ref)
    assert scores.shape == (5,)
    np.testing.assert_allclose(scores.numpy(), PSNR_ORACLE, atol=1e-4)
    # pyiqa's own row (it adds eps to the MSE) and the official row agree within their rounding.
    np.testing.assert_allclose(scores.numpy(), summary["psnr(ours)"], atol=2e-4)
    np.testing.assert_allclose(scores.numpy(), summary["psnr"], atol=6e-3)


def test_ssim_reproduces_pyiqa_within_calibration_tolerance(calibra):
    dist, ref, summary, official = calibra
    scores = SSIMMetric()(dist, ref).numpy()
    # pyiqa's own values are reproduced to their printed precision ...
    np.testing.assert_allclose(scores, summary["ssim(ours)"], atol=6e-5)
    # ... and differ from the official MATLAB numbers by no more than pyiqa's do (0.0004).
    pyiqa_gap = np.abs(np.array(summary["ssim(ours)"]) - np.array(official["ssim"])).max()
    assert pyiqa_gap == pytest.approx(0.0004, abs=1e-9)
    assert np.abs(scores - np.array(official["ssim"])).max() <= pyiqa_gap + 6e-5


def test_ssim_options_change_the_score(calibra):
    dist, ref, _, _ = calibra
    d, r = dist[:1], ref[:1]  # I03
    y = ssim(d, r).item()
    assert SSIMCMetric()(d, r).item() == pytest.approx(0.6740, abs=1e-4)  # RGB channels
    assert ssim(d, r, color_space="ycbcr").item() == pytest.approx(0.7341, abs=1e-4)
    assert ssim(d, r, downsample=True).item() == pytest.approx(0.6435, abs=1e-4)
    assert ssim(d, r, crop_border=8).item() != pytest.approx(y, abs=1e-4)


def test_psnr_identical_frames_are_capped_at_80_db():
    x = torch.rand(2, 3, 16, 16)
    scores = PSNRMetric()(x, x.clone())
    assert PSNR_CAP_DB == pytest.approx(80.0)
    assert torch.equal(scores, torch.full((2,), 80.0, dtype=torch.float64))
    assert torch.isfinite(PSNRYMetric()(x, x)).all()


def test_psnr_known_value_and_per_frame_layout():
    gt = torch.zeros(3, 3, 8, 8)
    pred = gt.clone()
    pred[1] += 0.1  # MSE 0.01 -> 20 dB
    pred[2] += 0.01  # MSE 1e-4 -> 40 dB
    scores = psnr(pred, gt)
    np.testing.assert_allclose(scores.numpy(), [80.0, 20.0, 40.0], atol=1e-9)


def test_psnr_y_channel_and_crop_border_change_the_value():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(1, 3, 32, 32, generator=g)
    pred = (gt + 0.05 * torch.randn(1, 3, 32, 32, generator=g)).clamp(0, 1)
    pred[..., :4, :] = 1.0 - gt[..., :4, :]  # a bad border
    rgb = psnr(pred, gt).item()
    y = psnr(pred, gt, test_y_channel=True).item()
    cropped = psnr(pred, gt, crop_border=4).item()
    assert y != pytest.approx(rgb, abs=0.1)
    assert cropped > rgb + 3.0
    # BasicSR's Y (219/255 of the full-range swing) vs pyiqa's YIQ Y: exactly 20 log10(255/219) dB apart
    # when the errors are on luma only.
    grey_gt = gt.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    grey_pred = (grey_gt + 0.02).clamp(0, 1)
    gap = psnr(grey_pred, grey_gt, True, "ycbcr") - psnr(grey_pred, grey_gt, True, "yiq")
    assert gap.item() == pytest.approx(20 * np.log10(255 / 219), abs=2e-3)


def test_psnry_config_defaults_to_luma_and_config_checks():
    assert PSNRYConfig().test_y_channel is True
    assert PSNRConfig().test_y_channel is False
    assert SSIMConfig().test_y_channel is True
    with pytest.raises(UserError, match=r"`color_space` must be one of \['ycbcr', 'yiq'\]. Got 'rgb'"):
        PSNRConfig(color_space="rgb")
    with pytest.raises(UserError, match="`crop_border` must be >= 0"):
        SSIMConfig(crop_border=-1)


def test_full_reference_metrics_need_gt_and_matching_shapes():
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(UserError, match="metric `psnr` is full-reference"):
        PSNRMetric()(x)
    with pytest.raises(ValueError, match="`gt` must have the shape"):
        SSIMMetric()(x, torch.rand(2, 3, 16, 8))
    with pytest.raises(ValueError, match=r"\(T, C, H, W\)"):
        PSNRMetric()(x[0], x[0])


def test_vid4_calendar_bicubic_floor(real_data):
    """SOURCES.md: PIL bicubic x4 of LR_BDx4 vs GT over 20 frames = 17.19 dB RGB / 19.01 dB Y crop 8.

    Both the mean of per-frame PSNR (17.1905) and the PSNR of the pooled MSE (17.1899) round to
    17.19, so the figure does not tell the conventions apart; vsrkit reports the per-frame mean.
    """
    root = real_data / "yhjo09_VSR-DUF_Vid4" / "calendar"
    preds, gts = [], []
    for i in range(1, 21):
        lr = Image.open(root / "LR_BDx4" / f"{i:03d}.png").convert("RGB")
        preds.append(np.array(lr.resize((lr.width * 4, lr.height * 4), Image.BICUBIC)))
        gts.append(np.array(Image.open(root / "GT" / f"{i:03d}.png").convert("RGB")))
    pred = torch.from_numpy(np.stack(preds)).permute(0, 3, 1, 2).float() / 255
    gt = torch.from_numpy(np.stack(gts)).permute(0, 3, 1, 2).float() / 255
    assert pred.shape == (20, 3, 576, 720)
    per_frame = PSNRMetric()(pred, gt)
    assert per_frame.shape == (20,)
    assert per_frame.mean().item() == pytest.approx(17.1905, abs=1e-3)
    pooled = 10 * torch.log10(1 / ((pred.double() - gt.double()) ** 2).mean())
    assert pooled.item() == pytest.approx(17.1899, abs=1e-3)
    y8 = PSNRYMetric(PSNRYConfig(crop_border=8))(pred, gt).mean().item()
    assert round(y8, 2) == 19.01
    # The "Y BT.601" of that figure is BasicSR's studio-range Y: pyiqa's YIQ luma gives 17.69.
    assert PSNRYMetric(PSNRYConfig(crop_border=8, color_space="yiq"))(pred, gt).mean().item() == pytest.approx(
        17.6896, abs=1e-3)
