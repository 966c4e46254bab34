"""Helpers of the backbone tests (importable as `backbone_helpers`: the folder has no __init__)."""

from __future__ import annotations

import torch

from vsrkit.backbones import BackboneConfig

TINY = {
    "cogvideox": "cogvideox1.5-5b-i2v-tiny",
    "wan": "wan2.1-t2v-1.3b-tiny",
    "ltx": "ltx-video-2b-tiny",
}


def tiny_config(family: str, **kwargs) -> BackboneConfig:
    """fp32 config of the tiny preset of ``family`` (extra fields as keyword arguments)."""
    return BackboneConfig(preset=TINY[family], family=family, **{"dtype": "fp32", **kwargs})


def clip(frames: int, height: int, width: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A smooth synthetic clip ``(B, 3, T, H, W)`` in [-1, 1] (moving sinusoids, deterministic)."""
    t = torch.arange(frames, dtype=torch.float32).view(1, 1, -1, 1, 1)
    y = torch.arange(height, dtype=torch.float32).view(1, 1, 1, -1, 1)
    x = torch.arange(width, dtype=torch.float32).view(1, 1, 1, 1, -1)
    c = torch.arange(3, dtype=torch.float32).view(1, -1, 1, 1, 1)
    b = torch.arange(batch, dtype=torch.float32).view(-1, 1, 1, 1, 1)
    return torch.sin(0.21 * x + 0.17 * y + 0.5 * t + 1.3 * c + 0.7 * b + seed)
