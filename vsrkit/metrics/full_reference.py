"""Weight-free full-reference image metrics, scored per frame: PSNR and SSIM.

Both follow pyiqa (chaofengc/IQA-PyTorch ``pyiqa/archs/psnr_arch.py``, ``ssim_arch.py``) and
reproduce its ``ResultsCalibra`` numbers; the Y-channel option of PSNR follows BasicSR
(``basicsr/metrics/psnr_ssim.py``). Inputs are frames ``(T, C, H, W)`` float in [0, 1]; outputs
are ``(T,)`` float64 scores, one per frame.

Identical frames: PSNR is *capped*, not infinite. pyiqa and BasicSR's torch version
(``calculate_psnr_pt``) add ``eps = 1e-8`` to the MSE on the [0, 1] scale, so a perfect frame
scores ``10 * log10(1e8) = 80 dB`` and per-video means stay finite (BasicSR's numpy
``calculate_psnr`` returns ``inf`` instead). vsrkit clamps the MSE at 1e-8 rather than adding
it: the same 80 dB cap, and the exact PSNR below it. On pyiqa's ResultsCalibra pairs this gives
21.1136, 20.9872, 27.0139, 23.3003, 21.6187 dB to within 1e-4 dB (the float32 [0, 1] input moves
the last digit by < 1e-5 dB), where pyiqa's ``+ eps`` prints 27.0139, 23.3002, 21.6186.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vsrkit.metrics.config import PSNRConfig, PSNRYConfig, SSIMCConfig, SSIMConfig
from vsrkit.metrics.tensors import check_frames, crop_edges, resolve_device, rgb_to_y

# pyiqa psnr_arch.py `eps=1e-8` and BasicSR calculate_psnr_pt `mse + 1e-8` cap PSNR at 80 dB.
# We clamp instead of adding, so scores below the cap are the exact PSNR (pyiqa's `+ eps` lowers a
# 27 dB score by 2e-5 dB and a 60 dB one by 0.04 dB) and identical frames still score 80 dB.
PSNR_MSE_FLOOR = 1e-8
PSNR_CAP_DB = 10.0 * float(np.log10(1.0 / PSNR_MSE_FLOOR))  # 80 dB: the score of identical frames


def psnr(pred: torch.Tensor, gt: torch.Tensor, test_y_channel: bool = False, color_space: str = "ycbcr",
         crop_border: int = 0) -> torch.Tensor:
    """Per-frame PSNR in dB, ``10 log10(1 / max(MSE, 1e-8))`` on the [0, 1] scale.

    Args:
        pred: ``(T, C, H, W)`` float frames in [0, 1].
        gt: ``(T, C, H, W)`` float frames in [0, 1].
        test_y_channel: Score luma only (RGB input).
        color_space: Luma definition, see :func:`vsrkit.metrics.tensors.rgb_to_y`.
        crop_border: Pixels dropped at each edge first.

    Returns:
        ``(T,)`` float64, at most 80 dB.
    """
    x = crop_edges(pred, crop_border).double()
    y = crop_edges(gt, crop_border).double()
    if test_y_channel and x.shape[1] == 3:
        x, y = rgb_to_y(x, color_space), rgb_to_y(y, color_space)
    mse = ((x - y) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse.clamp_min(PSNR_MSE_FLOOR))


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    # pyiqa filters with MATLAB fspecial('gaussian', 11, 1.5) (pyiqa/matlab_utils `fspecial`), the
    # outer product of this kernel with itself (no tap falls under fspecial's eps threshold), so
    # two 1-D passes give the same 2-D 'valid' filter, 5x faster in float64. pyiqa rounds its
    # window to float32; scores differ from pyiqa's by < 1e-6.
    m = (size - 1.0) / 2.0
    g = np.exp(-(np.arange(-m, m + 1) ** 2) / (2.0 * sigma * sigma))
    return torch.from_numpy(g / g.sum())


def _to_8bit_scale(x: torch.Tensor, test_y_channel: bool, color_space: str) -> torch.Tensor:
    # pyiqa func_util.preprocess_rgb with data_range=255: luma (or RGB) scaled to [0, 255] and
    # rounded to integer levels, "to make the input image same as MATLAB" (computed in float32).
    x = x.float()
    if test_y_channel and x.shape[1] == 3:
        x = rgb_to_y(x, color_space)
    return (x * 255.0).round().double()


def ssim(pred: torch.Tensor, gt: torch.Tensor, test_y_channel: bool = True, color_space: str = "yiq",
         crop_border: int = 0, downsample: bool = False) -> torch.Tensor:
    """Per-frame SSIM as pyiqa's ``ssim`` computes it.

    Gaussian window 11x11, sigma 1.5, 'valid' filtering, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2
    on 8-bit-rounded values, contrast-structure term clipped at 0 (pyiqa's ReLU), mean over the
    map and the channels.

    Args:
        pred: ``(T, C, H, W)`` float frames in [0, 1].
        gt: ``(T, C, H, W)`` float frames in [0, 1].
        test_y_channel: Score luma only (RGB input).
        color_space: Luma definition, ``"yiq"`` (pyiqa) or ``"ycbcr"`` (BasicSR).
        crop_border: Pixels dropped at each edge first.
        downsample: Average-pool by ``round(min(H, W) / 256)`` first (MATLAB ``ssim.m``).

    Returns:
        ``(T,)`` float64 in [0, 1].
    """
    x = _to_8bit_scale(crop_edges(pred, crop_border), test_y_channel, color_space)
    y = _to_8bit_scale(crop_edges(gt, crop_border), test_y_channel, color_space)
    channels = x.shape[1]
    g = _gaussian_1d().to(x.device)
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    f = max(1, round(min(x.shape[-2:]) / 256))
    if downsample and f > 1:
        x, y = F.avg_pool2d(x, kernel_size=f), F.avg_pool2d(y, kernel_size=f)
    if min(x.shape[-2:]) < 11:
        raise ValueError(f"ssim needs frames of at least 11x11 pixels after cropping. Got {tuple(x.shape[-2:])}.")

    # One separable 'valid' Gaussian pass over the five maps stacked as channels.
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    n = maps.shape[1]
    maps = F.conv2d(maps, g.view(1, 1, -1, 1).expand(n, 1, -1, 1), groups=n)
    maps = F.conv2d(maps, g.view(1, 1, 1, -1).expand(n, 1, 1, -1), groups=n)
    mu1, mu2, ex2, ey2, exy = maps.split(channels, dim=1)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = ex2 - mu1_sq
    sigma2_sq = ey2 - mu2_sq
    sigma12 = exy - mu1_mu2
    cs_map = F.relu((2 * sigma12 + c2) / (sigma1_sq + sigma2_sq + c2))
    ssim_map = ((2 * mu1_mu2 + c1) / (mu1_sq + mu2_sq + c1)) * cs_map
    return ssim_map.mean(dim=(1, 2, 3))


class PSNRMetric:
    """PSNR per frame, dB (``psnr``: RGB by default, pyiqa ``psnr``). Identical frames score 80 dB.

    Args:
        config: :class:`~vsrkit.metrics.config.PSNRConfig`.
    """

    higher_is_better = True
    needs_gt = True
    temporal = False
    name = "psnr"

    def __init__(self, config: PSNRConfig | None = None):
        self.config = config if config is not None else PSNRConfig()
        self.device = resolve_device(self.config.device)
        self.info = {"channels": f"y ({self.config.color_space})" if self.config.test_y_channel else "rgb"}

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor | None = None) -> torch.Tensor:
        """Score ``pred`` against ``gt``, both ``(T, C, H, W)`` float in [0, 1]; returns ``(T,)`` float64 dB."""
        check_frames(pred, gt, self.name, self.needs_gt)
        c = self.config
        return psnr(pred.to(self.device), gt.to(self.device), c.test_y_channel, c.color_space, c.crop_border).cpu()


class PSNRYMetric(PSNRMetric):
    """PSNR per frame on luma (``psnry``; BasicSR ``rgb2ycbcr`` Y unless ``color_space="yiq"``)."""

    name = "psnry"

    def __init__(self, config: PSNRYConfig | None = None):
        super().__init__(config if config is not None else PSNRYConfig())


class SSIMMetric:
    """SSIM per frame (``ssim``: luma, as pyiqa ``ssim``).

    Args:
        config: :class:`~vsrkit.metrics.config.SSIMConfig`.
    """

    higher_is_better = True
    needs_gt = True
    temporal = False
    name = "ssim"

    def __init__(self, config: SSIMConfig | None = None):
        self.config = config if config is not None else SSIMConfig()
        self.device = resolve_device(self.config.device)
        self.info = {"channels": f"y ({self.config.color_space})" if self.config.test_y_channel else "rgb"}

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor | None = None) -> torch.Tensor:
        """Score ``pred`` against ``gt``, both ``(T, C, H, W)`` float in [0, 1]; returns ``(T,)`` float64."""
        check_frames(pred, gt, self.name, self.needs_gt)
        c = self.config
        return ssim(pred.to(self.device), gt.to(self.device), c.test_y_channel, c.color_space, c.crop_border,
                    c.downsample).cpu()


class SSIMCMetric(SSIMMetric):
    """SSIM per frame on the three RGB channels (``ssimc``, pyiqa ``ssimc``)."""

    name = "ssimc"

    def __init__(self, config: SSIMCConfig | None = None):
        super().__init__(config if config is not None else SSIMCConfig())
