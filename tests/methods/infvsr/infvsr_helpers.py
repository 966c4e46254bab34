"""Helpers of the InfVSR tests (importable as `infvsr_helpers`: the folder has no __init__)."""

from __future__ import annotations

import torch

from vsrkit.backbones import BackboneConfig
from vsrkit.methods.infvsr.config import InfVSRConfig


def tiny_backbone(**kwargs) -> BackboneConfig:
    return BackboneConfig(preset="wan2.1-t2v-1.3b-tiny", family="wan", dtype="fp32", **kwargs)


def make_method(scale: int = 4, **config):
    from vsrkit.methods.infvsr.method import InfVSRMethod

    return InfVSRMethod(InfVSRConfig(**config), tiny_backbone(), scale)


def smooth_clip(frames: int, height: int, width: int, seed: float = 0.0) -> torch.Tensor:
    """``(1, 3, T, H, W)`` in [-1, 1]: slowly moving sinusoids (no scene cut)."""
    t = torch.arange(frames, dtype=torch.float32).view(1, 1, -1, 1, 1)
    y = torch.arange(height, dtype=torch.float32).view(1, 1, 1, -1, 1)
    x = torch.arange(width, dtype=torch.float32).view(1, 1, 1, 1, -1)
    c = torch.arange(3, dtype=torch.float32).view(1, -1, 1, 1, 1)
    return 0.8 * torch.sin(0.4 * x + 0.3 * y + 0.05 * t + 1.3 * c + seed)
