"""Interpolation baselines as vsrkit methods.

Resampling is separable: each axis is a matrix product with weights computed as PIL's
``precompute_coeffs`` does (kernel stretched by the scale when downscaling, taps outside the
image dropped and the rest renormalised), so results match PIL to within its 8-bit rounding of
the intermediate pass.
MATLAB's ``imresize`` (symmetric borders) lives in
:func:`vsrkit.data.degradations.ops.matlab_resize_matrix`, where degradations need it; the baseline
keeps PIL's border rule because published baseline numbers (Vid4 calendar 17.19 dB) use PIL.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from vsrkit.methods.baselines.config import BicubicConfig, LanczosConfig
from vsrkit.methods.protocol import WindowContext, WindowSpec


def cubic_kernel(x: torch.Tensor, a: float) -> torch.Tensor:
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def lanczos_kernel(x: torch.Tensor, lobes: int) -> torch.Tensor:
    inside = x.abs() < lobes
    return torch.where(inside, torch.sinc(x) * torch.sinc(x / lobes), torch.zeros_like(x))


@lru_cache(maxsize=32)
def resize_matrix(size_in: int, size_out: int, kernel: str, param: float) -> torch.Tensor:
    """``(size_out, size_in)`` float64 matrix that resamples one axis.

    Args:
        size_in: Input length.
        size_out: Output length.
        kernel: ``"cubic"`` or ``"lanczos"``.
        param: Cubic ``a`` or Lanczos lobes.
    """
    radius = 2.0 if kernel == "cubic" else float(param)
    scale = size_in / size_out
    filterscale = max(scale, 1.0)
    support = radius * filterscale
    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    for i in range(size_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), size_in)
        taps = torch.arange(lo, hi, dtype=torch.float64)
        x = (taps - center + 0.5) / filterscale
        w = cubic_kernel(x, param) if kernel == "cubic" else lanczos_kernel(x, int(param))
        total = w.sum()
        if total != 0:
            w = w / total
        matrix[i, lo:hi] = w
    return matrix


def resize_frames(video: torch.Tensor, out_h: int, out_w: int, kernel: str, param: float) -> torch.Tensor:
    """Resize ``(B, C, T, H, W)`` frames to ``(B, C, T, out_h, out_w)`` (same dtype)."""
    h, w = video.shape[-2:]
    rows = resize_matrix(h, out_h, kernel, param).to(video.device, torch.float32)
    cols = resize_matrix(w, out_w, kernel, param).to(video.device, torch.float32)
    out = torch.matmul(video.float(), cols.T)  # resample W
    out = torch.matmul(rows, out)  # resample H
    return out.to(video.dtype)


class InterpolationMethod:
    """Bicubic or Lanczos upscaling, chosen by the config type (registered as both names)."""

    def __init__(self, config: BicubicConfig | LanczosConfig, backbone=None, scale: int = 4):
        if backbone is not None:
            raise ValueError("interpolation baselines take no backbone (use backbone=none).")
        self.config = config
        self.scale = scale
        if isinstance(config, BicubicConfig):
            self.kernel, self.param = "cubic", float(config.a)
        else:
            self.kernel, self.param = "lanczos", float(config.lobes)

    def window_spec(self) -> WindowSpec:
        return WindowSpec(scale=self.scale, window=self.config.window)

    def load(self, device: torch.device, dtype: torch.dtype) -> None:
        """Interpolation has no weights; nothing is built."""

    @torch.no_grad()
    def upscale(self, lq: torch.Tensor, context: WindowContext) -> torch.Tensor:
        """``lq (B, C, T, H, W)`` float32 in [-1, 1] -> ``(B, C, T, H*scale, W*scale)`` float32."""
        h, w = lq.shape[-2:]
        # Cubic and Lanczos kernels overshoot at edges; clip as PIL does when it stores 8 bits.
        return resize_frames(lq, h * self.scale, w * self.scale, self.kernel, self.param).clamp_(-1.0, 1.0)
