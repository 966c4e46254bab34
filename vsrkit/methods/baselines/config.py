"""Configs of the interpolation baselines."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BicubicConfig:
    """Bicubic interpolation, PIL/MATLAB convention (Keys kernel with a = -0.5).

    Args:
        a: Keys cubic parameter. -0.5 matches PIL and MATLAB ``imresize``; PyTorch's
            ``F.interpolate(mode="bicubic")`` uses -0.75.
        window: Frames per window handed over by the engine (memory bound only: frames are
            independent).
    """

    a: float = -0.5
    window: int = 16

    def __post_init__(self):
        if not -1.0 <= self.a <= 0.0:
            raise ValueError(f"`a` must be in [-1, 0]. Got {self.a}.")
        if self.window < 1:
            raise ValueError(f"`window` must be >= 1. Got {self.window}.")


@dataclass
class LanczosConfig:
    """Lanczos interpolation (PIL convention).

    Args:
        lobes: Kernel lobes; 3 is PIL's ``LANCZOS``.
        window: Frames per window handed over by the engine.
    """

    lobes: int = 3
    window: int = 16

    def __post_init__(self):
        if self.lobes < 1:
            raise ValueError(f"`lobes` must be >= 1. Got {self.lobes}.")
        if self.window < 1:
            raise ValueError(f"`window` must be >= 1. Got {self.window}.")
