"""SparkVSR: keyframe-conditioned one-step video super-resolution on CogVideoX1.5-5B-I2V.

Only the config is imported here; the method class (torch, diffusers) loads through the
registry (``vsrkit.methods.sparkvsr.method:SparkVSRMethod``).
"""

from vsrkit.methods.sparkvsr.config import SparkVSRConfig

__all__ = ["SparkVSRConfig"]
