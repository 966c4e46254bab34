"""Real-ESRGAN (animevideov3, x4plus, x4plus-anime): per-frame GAN super-resolution with trained weights.

Only the config is imported here; the method class (torch) loads through the registry
(``vsrkit.methods.realesrgan.method:RealESRGANMethod``).
"""

from vsrkit.methods.realesrgan.config import RealESRGANConfig

__all__ = ["RealESRGANConfig"]
