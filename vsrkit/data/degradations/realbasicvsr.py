"""The second-order RealBasicVSR video degradation, as DOVE and SparkVSR train with it.

Sequence (``zhengchen1999/DOVE:finetune/datasets/real_sr_dataset.py`` ``degrade``, sparkvsr.md §8.3):

1. blur -> resize -> noise -> JPEG -> video codec;
2. blur (p 0.8) -> resize -> noise -> JPEG -> in random order {video codec} and
   {resize to the LR size + sinc blur (p 0.8)}.

Blur kernels, noise levels and codec settings are drawn once per clip (the reference's ``*_step``
values are 0), JPEG quality walks by +-3 per frame. Images skip both codecs and end with
{resize + sinc} (DOVE's ``degradation_image_video.yaml`` stage 3).
"""

from __future__ import annotations

import torch

from vsrkit.data import draws
from vsrkit.data.degradations import ops
from vsrkit.data.degradations.common import check_scale, frames_in, frames_out
from vsrkit.data.degradations.config import RealBasicVSRConfig


class RealBasicVSRDegradation:
    """Callable degradation: ``lq = RealBasicVSRDegradation(cfg, scale)(hq, generator)``.

    Args:
        config: Stage parameters (defaults: DOVE's ``degradation.yaml``).
        scale: HQ size / LQ size.
    """

    def __init__(self, config: RealBasicVSRConfig | None = None, scale: int = 4):
        self.config = config if config is not None else RealBasicVSRConfig()
        self.scale = check_scale(scale, "realbasicvsr")

    def __call__(self, hq: torch.Tensor, generator: torch.Generator, *, is_image: bool = False) -> torch.Tensor:
        """Degrade one clip.

        Args:
            hq: ``(C, T, H, W)`` float in [0, 1], ``H`` and ``W`` divisible by ``scale``, any device.
            generator: CPU ``torch.Generator``; every random choice comes from it.
            is_image: Use the image branch (no video codec).

        Returns:
            ``(C, T, H // scale, W // scale)`` float32 in [0, 1] on ``hq``'s device (8-bit levels
            when ``config.quantize``).
        """
        cfg = self.config
        x = frames_in(hq, self.scale, "realbasicvsr")
        target = (x.shape[-2] // self.scale, x.shape[-1] // self.scale)

        x = ops.random_blur(x, cfg.blur1, generator)
        x = ops.random_resize(x, cfg.resize1, generator)
        x = ops.random_noise(x, cfg.noise1, generator)
        x = ops.random_jpeg(x, cfg.jpeg1, generator)
        if not is_image:
            x = ops.random_codec(x, cfg.codec1, generator)

        x = ops.random_blur(x, cfg.blur2, generator)
        x = ops.random_resize(x, cfg.resize2, generator)
        x = ops.random_noise(x, cfg.noise2, generator)
        x = ops.random_jpeg(x, cfg.jpeg2, generator)

        def resize_and_sinc(frames: torch.Tensor) -> torch.Tensor:
            interpolation = draws.choice(generator, list(cfg.final_interpolations), list(cfg.final_interpolation_prob))
            return ops.random_blur(ops.resize(frames, target, interpolation), cfg.final_sinc, generator)

        def codec(frames: torch.Tensor) -> torch.Tensor:
            return ops.random_codec(frames, cfg.codec2, generator)

        steps = [resize_and_sinc] if is_image else [codec, resize_and_sinc]
        if len(steps) > 1 and cfg.shuffle_final:
            steps = [steps[i] for i in draws.permutation(generator, len(steps))]
        for step in steps:
            x = step(x)
        return frames_out(x, cfg.quantize)
