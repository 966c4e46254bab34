"""InfVSR: causal one-step streaming video super-resolution of unbounded length on Wan2.1-T2V-1.3B.

Only the config is imported here; the method class (torch, diffusers) loads through the
registry (``vsrkit.methods.infvsr.method:InfVSRMethod``).
"""

from vsrkit.methods.infvsr.config import InfVSRConfig

__all__ = ["InfVSRConfig"]
