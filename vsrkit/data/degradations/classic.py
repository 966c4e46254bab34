"""Deterministic classic degradations: ``bd`` (Gaussian blur + subsampling) and ``bicubic``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vsrkit.data.degradations import ops
from vsrkit.data.degradations.common import check_scale, frames_in, frames_out
from vsrkit.data.degradations.config import BDConfig, BicubicDegradationConfig
from vsrkit.errors import UserError


def bd_kernel(kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian ``(k, k)`` kernel sampled at integer offsets and normalised to sum 1.

    Equal to VSR-DUF's ``gkern(13, 1.6)`` (``scipy.ndimage.gaussian_filter`` of a unit pulse,
    whose radius 6 = ``int(4 * 1.6 + 0.5)`` fits the 13 taps exactly).
    """
    r = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).float()


class BDDegradation:
    """Gaussian blur then keep every ``scale``-th pixel from ``offset`` (the Vid4 ``BD`` LR).

    Args:
        config: Kernel, border and offset (defaults reproduce Vid4 ``LR_BDx4`` at 51 dB).
        scale: HQ size / LQ size.
    """

    def __init__(self, config: BDConfig | None = None, scale: int = 4):
        self.config = config if config is not None else BDConfig()
        self.scale = check_scale(scale, "bd")
        if self.config.offset >= self.scale:
            raise UserError(f"`degradation.offset` must be in [0, {self.scale}) for scale {self.scale}. "
                            f"Got {self.config.offset}.")
        self.kernel = bd_kernel(self.config.kernel_size, self.config.sigma)

    def __call__(self, hq: torch.Tensor, generator: torch.Generator | None = None, *,
                 is_image: bool = False) -> torch.Tensor:
        """Degrade one clip (deterministic: ``generator`` and ``is_image`` are unused).

        Args:
            hq: ``(C, T, H, W)`` float in [0, 1], ``H`` and ``W`` divisible by ``scale``.
            generator: Unused (interface parity).
            is_image: Unused (interface parity).

        Returns:
            ``(C, T, H // scale, W // scale)`` float32 in [0, 1].
        """
        x = frames_in(hq, self.scale, "bd")
        k = self.config.kernel_size
        pad = k // 2
        c = x.shape[1]
        mode = self.config.padding
        if mode == "reflect" and (pad >= x.shape[-1] or pad >= x.shape[-2]):
            mode = "replicate"  # reflection needs the pad smaller than the frame
        padded = F.pad(x, (pad, pad, pad, pad), mode=mode)
        weight = self.kernel.to(device=x.device, dtype=x.dtype).expand(c, 1, k, k)
        o = self.config.offset
        blurred = F.conv2d(padded[..., o:, o:], weight, stride=self.scale, groups=c)
        h, w = x.shape[-2] // self.scale, x.shape[-1] // self.scale
        return frames_out(blurred[..., :h, :w], self.config.quantize)


class BicubicDegradation:
    """MATLAB ``imresize(x, 1/scale)`` bicubic (antialiased), like BasicSR's ``imresize``.

    Args:
        config: Antialias and quantization switches.
        scale: HQ size / LQ size.
    """

    def __init__(self, config: BicubicDegradationConfig | None = None, scale: int = 4):
        self.config = config if config is not None else BicubicDegradationConfig()
        self.scale = check_scale(scale, "bicubic")

    def __call__(self, hq: torch.Tensor, generator: torch.Generator | None = None, *,
                 is_image: bool = False) -> torch.Tensor:
        """Degrade one clip (deterministic: ``generator`` and ``is_image`` are unused).

        Args:
            hq: ``(C, T, H, W)`` float in [0, 1], ``H`` and ``W`` divisible by ``scale``.
            generator: Unused (interface parity).
            is_image: Unused (interface parity).

        Returns:
            ``(C, T, H // scale, W // scale)`` float32 in [0, 1].
        """
        x = frames_in(hq, self.scale, "bicubic")
        out = ops.matlab_imresize(x, 1.0 / self.scale, antialias=self.config.antialias)
        h, w = x.shape[-2] // self.scale, x.shape[-1] // self.scale
        assert tuple(out.shape[-2:]) == (h, w), (tuple(out.shape), h, w)
        return frames_out(out, self.config.quantize)
