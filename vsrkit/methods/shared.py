"""Small pieces several methods share (methods import no other method): frame resizing and
per-sample seeds."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upsample_frames(video: torch.Tensor, size: tuple, mode: str = "bilinear") -> torch.Tensor:
    """Resize every frame of ``(B, C, T, h, w)`` to ``size`` (the releases' ``F.interpolate`` on the
    frames with ``align_corners=False``; SparkVSR's default is bilinear)."""
    b, c, t, h, w = video.shape
    if (h, w) == tuple(size):
        return video
    flat = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    flat = F.interpolate(flat, size=tuple(size), mode=mode, **kwargs)
    return flat.reshape(b, t, c, *size).permute(0, 2, 1, 3, 4)


def sample_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (step, sample index ...), identical on every platform
    (FNV-1a-style mixing, so training draws do not depend on Python's hash randomisation)."""
    value = 0x243F6A8885A308D3
    for part in parts:
        value = (value ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0x100000001B3 % (1 << 64)
    return value & ((1 << 63) - 1)
