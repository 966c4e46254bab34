"""Classic interpolation baselines (no weights): ``bicubic`` and ``lanczos``."""

from vsrkit.methods.baselines.config import BicubicConfig, LanczosConfig

__all__ = ["BicubicConfig", "LanczosConfig"]
