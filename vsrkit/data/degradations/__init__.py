"""Degradations: HQ clip -> LQ clip, seeded, torch ops (JPEG via OpenCV, codecs via PyAV on CPU).

Interface of every registered degradation (``DEGRADATIONS``)::

    degrade = build_degradation(cfg, scale=4)      # cfg: the preset's config dataclass
    lq = degrade(hq, generator, is_image=False)

- ``hq``: ``(C, T, H, W)`` float in **[0, 1]**, ``H`` and ``W`` divisible by ``scale``, any device.
- ``generator``: a CPU ``torch.Generator``; the output is a function of ``(hq, generator state)``.
- ``lq``: ``(C, T, H // scale, W // scale)`` float32 in [0, 1] on ``hq``'s device.

Presets: ``realbasicvsr`` (DOVE/SparkVSR), ``realesrgan_video`` (PS-SR), ``bd`` (Vid4 BD), ``bicubic`` (MATLAB).
"""

from __future__ import annotations

from typing import Any

from vsrkit.errors import UserError


def build_degradation(cfg: Any, *, scale: int) -> Any:
    """Build the degradation a config describes.

    Args:
        cfg: A degradation config dataclass with a ``name`` field naming its ``DEGRADATIONS``
            entry (every built-in config has one), e.g. ``RealBasicVSRConfig()``.
        scale: HQ size / LQ size.

    Returns:
        A callable ``(hq, generator, *, is_image=False) -> lq`` (see the module docstring).
    """
    from vsrkit.builtins import register_builtins
    from vsrkit.registry import DEGRADATIONS

    register_builtins()
    name = getattr(cfg, "name", None)
    if name is None:
        raise UserError(f"degradation config {type(cfg).__name__} has no `name` field naming its registry entry.")
    if name not in DEGRADATIONS:
        raise UserError(DEGRADATIONS.unknown_message(name))
    return DEGRADATIONS.get(name)(cfg, scale=scale)


__all__ = ["build_degradation"]
