"""PS-SR's Real-ESRGAN video degradation (``HiDream-ai/PS-SR:Wan_SR/degradation/realesrgan_video.py``).

Every random choice is drawn per frame (kernels, noise level and type of gray noise, JPEG
quality). Sequence of the released ``degrade_process`` (pssr.md §5.1): blur -> Gaussian noise
(clipped) -> JPEG -> blur -> resize to the LR size (random interpolation) -> Gaussian noise ->
sinc blur (p 0.8) -> JPEG -> round to 8 bits. The release then resizes back to the HQ size with a
random interpolation; here the LR size is returned and the method upsamples (as every preset).
JPEG uses OpenCV at the rounded quality instead of BasicSR's ``DiffJPEG`` (float quality).
"""

from __future__ import annotations

import torch

from vsrkit.data import draws
from vsrkit.data.degradations import ops
from vsrkit.data.degradations.common import check_scale, frames_in, frames_out
from vsrkit.data.degradations.config import PSSRDegradationConfig


class PSSRDegradation:
    """Callable degradation: ``lq = PSSRDegradation(cfg, scale)(hq, generator)``.

    Args:
        config: Stage parameters (defaults: PS-SR's ``params_realesrgan.yml`` as the code uses it).
        scale: HQ size / LQ size (PS-SR trains x4).
    """

    def __init__(self, config: PSSRDegradationConfig | None = None, scale: int = 4):
        self.config = config if config is not None else PSSRDegradationConfig()
        self.scale = check_scale(scale, "realesrgan_video")

    def __call__(self, hq: torch.Tensor, generator: torch.Generator, *, is_image: bool = False) -> torch.Tensor:
        """Degrade one clip.

        Args:
            hq: ``(C, T, H, W)`` float in [0, 1], ``H`` and ``W`` divisible by ``scale``, any device.
            generator: CPU ``torch.Generator``; every random choice comes from it.
            is_image: Accepted for interface parity; the PS-SR pipeline treats images as 1-frame
                videos (it has no video codec).

        Returns:
            ``(C, T, H // scale, W // scale)`` float32 in [0, 1] on ``hq``'s device.
        """
        cfg = self.config
        x = frames_in(hq, self.scale, "realesrgan_video")
        target = (x.shape[-2] // self.scale, x.shape[-1] // self.scale)

        x = ops.random_blur(x, cfg.blur1, generator)
        x = ops.random_noise(x, cfg.noise1, generator)
        x = ops.random_jpeg(x, cfg.jpeg1, generator)

        x = ops.random_blur(x, cfg.blur2, generator)
        interpolation = draws.choice(generator, list(cfg.interpolations), list(cfg.interpolation_prob))
        x = ops.resize(x, target, interpolation)
        x = ops.random_noise(x, cfg.noise2, generator)
        x = ops.random_blur(x, cfg.final_sinc, generator)
        x = ops.random_jpeg(x, cfg.jpeg2, generator)
        return frames_out(x, cfg.quantize)
