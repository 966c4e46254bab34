"""Input checks and layout changes shared by the degradation classes (functions, no base class)."""

from __future__ import annotations

import torch

from vsrkit.data.degradations.ops import quantize
from vsrkit.errors import UserError


def frames_in(hq: torch.Tensor, scale: int, name: str) -> torch.Tensor:
    """Check an HQ clip and return it as frames.

    Args:
        hq: ``(C, T, H, W)`` float in [0, 1], ``H`` and ``W`` divisible by ``scale``.
        scale: Downscaling factor.
        name: Degradation name for messages.

    Returns:
        ``(T, C, H, W)`` float32 view/copy of ``hq``.
    """
    if not isinstance(hq, torch.Tensor) or hq.dim() != 4:
        shape = tuple(hq.shape) if isinstance(hq, torch.Tensor) else type(hq).__name__
        raise UserError(f"degradation `{name}` takes an HQ clip (C, T, H, W). Got {shape}.")
    if not hq.is_floating_point():
        raise UserError(f"degradation `{name}` takes float frames in [0, 1]. Got dtype {hq.dtype}.")
    h, w = hq.shape[-2:]
    if h % scale or w % scale:
        raise UserError(f"degradation `{name}`: HQ size {h}x{w} must be divisible by scale {scale} "
                        f"(crop it to a multiple of {scale} first).")
    return hq.float().transpose(0, 1)


def frames_out(frames: torch.Tensor, do_quantize: bool) -> torch.Tensor:
    """``(T, C, h, w)`` -> ``(C, T, h, w)`` in [0, 1] (rounded to 8-bit levels if asked)."""
    frames = quantize(frames) if do_quantize else frames.clamp(0.0, 1.0)
    return frames.transpose(0, 1).contiguous()


def check_scale(scale: int, name: str) -> int:
    if int(scale) != scale or scale < 1:
        raise UserError(f"degradation `{name}`: `scale` must be an integer >= 1. Got {scale}.")
    return int(scale)
