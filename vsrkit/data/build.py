"""``build_train_dataset``: the training engine's one entry point into ``vsrkit.data``."""

from __future__ import annotations

import logging
from typing import Any

from vsrkit.errors import UserError

logger = logging.getLogger(__name__)


def build_train_dataset(data_cfg: Any, degradation_cfg: Any = None, *, num_frames: int,
                        hr_size: tuple[int, int], scale: int, frame_multiple: int = 1,
                        frame_offset: int = 0, seed: int = 0) -> Any:
    """Build the training dataset a data preset describes.

    The dataset class is the ``DATASETS`` entry named by ``data_cfg.name``; it is called as
    ``cls(data_cfg, degradation_cfg, num_frames=..., hr_size=..., scale=..., frame_multiple=...,
    frame_offset=..., seed=...)`` (plugins follow the same signature).

    Items are dicts: ``hq (C, T, H, W)`` and ``lq (C, T, H/scale, W/scale)`` float32 in [-1, 1]
    (LQ not upsampled), ``prompt`` str, ``is_image`` bool, ``index`` int. An item depends only on
    ``(seed, epoch, index)``: call ``dataset.set_epoch(epoch)`` before each epoch's iterator, or
    index with ``(epoch, index)`` tuples. ``dataset.batch_sampler(batch_size, num_replicas=,
    rank=, shuffle=)`` gives resumable batches that are all images or all videos
    (``set_position(epoch, start_batch)``).

    Args:
        data_cfg: Data config dataclass (``PairedDataConfig``, ``HQDataConfig`` or a plugin's).
        degradation_cfg: Degradation config dataclass; required by HQ-only datasets, ignored by
            paired ones.
        num_frames: Frames per clip, obeying the backbone rule ``frame_multiple * k + frame_offset``.
        hr_size: HR crop ``(H, W)``, multiples of ``scale``; a non-empty ``data_cfg.crop_size``
            (the ``demo`` preset's 64x64) replaces it.
        scale: HR size / LR size.
        frame_multiple: Frame rule multiple (4 for ``4k+1``, 8 for ``8k+1``, 1 for any).
        frame_offset: Frame rule offset (1 for ``4k+1``).
        seed: Base seed of every random choice.

    Raises:
        UserError: unknown dataset name, bad sizes or frame count, missing data folders.
    """
    from vsrkit.builtins import register_builtins
    from vsrkit.registry import DATASETS

    register_builtins()
    name = getattr(data_cfg, "name", None)
    if name is None or name not in DATASETS:
        raise UserError(DATASETS.unknown_message(str(name)))
    cls = DATASETS.get(name)
    crop = list(getattr(data_cfg, "crop_size", None) or [])
    if crop and tuple(crop) != tuple(hr_size):
        logger.info("dataset `%s`: HR crop %s from data.crop_size (the method asked for %s).",
                    name, crop, list(hr_size))
        hr_size = (int(crop[0]), int(crop[1]))
    return cls(data_cfg, degradation_cfg, num_frames=num_frames, hr_size=tuple(hr_size), scale=scale,
               frame_multiple=frame_multiple, frame_offset=frame_offset, seed=seed)
