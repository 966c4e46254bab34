"""TurboVSR: LTX-Video upscaler with factorized conditioning and a non-uniform shortcut model.

Only the config is imported here; the method class (torch, diffusers) loads through the
registry (``vsrkit.methods.turbovsr.method:TurboVSRMethod``).
"""

from vsrkit.methods.turbovsr.config import TurboVSRConfig

__all__ = ["TurboVSRConfig"]
