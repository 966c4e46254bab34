"""Datasets and degradations.

- Evaluation: :func:`eval_clips` lists ``EvalClip(name, lq, gt)`` of a paired preset (no torch).
- Training: :func:`build_train_dataset` builds a dataset whose items are
  ``{"hq": (C, T, H, W), "lq": (C, T, H/s, W/s)}`` float32 in [-1, 1] plus ``prompt``,
  ``is_image`` and ``index``, deterministic in ``(seed, epoch, index)``.
- Degradations: :func:`build_degradation` -> ``degrade(hq, generator, is_image=False)`` on
  ``(C, T, H, W)`` frames in [0, 1].

Importing this package is cheap: the torch-based modules load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "EvalClip": "vsrkit.data.eval_sets",
    "eval_clips": "vsrkit.data.eval_sets",
    "paired_clips": "vsrkit.data.eval_sets",
    "PairedDataConfig": "vsrkit.data.config",
    "HQDataConfig": "vsrkit.data.config",
    "MotionConfig": "vsrkit.data.config",
    "build_train_dataset": "vsrkit.data.build",
    "build_degradation": "vsrkit.data.degradations",
    "ImageVideoBatchSampler": "vsrkit.data.sampler",
    "PairedVideoDataset": "vsrkit.data.paired",
    "HQDataset": "vsrkit.data.hq",
    "item_generator": "vsrkit.data.draws",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vsrkit.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))


__all__ = sorted(_LAZY)
