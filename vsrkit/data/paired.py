"""Training on GT/LQ pairs from disk (frames folders or lossless videos), no degradation.

An item is ``num_frames`` consecutive frames from a random start, cropped at a random LR window
and the aligned HR window. Every random choice comes from ``(seed, epoch, index)``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from vsrkit.data import clips as clip_utils
from vsrkit.data import draws
from vsrkit.data.config import PairedDataConfig
from vsrkit.data.eval_sets import EvalClip, paired_clips
from vsrkit.data.media import list_images, probe_video, read_frames_clip, read_video_clip
from vsrkit.data.metadata import load_metadata
from vsrkit.data.sampler import ImageVideoBatchSampler
from vsrkit.errors import UserError

logger = logging.getLogger(__name__)


class _Source:
    """One side (GT or LQ) of a clip: a frames folder or a video file."""

    def __init__(self, path: Path):
        self.path = path
        self.files = list_images(path) if path.is_dir() else None
        self.num_frames = len(self.files) if self.files is not None else probe_video(path).num_frames

    def read(self, start: int, count: int) -> np.ndarray:
        if self.files is not None:
            return read_frames_clip(self.files, start, count)
        return read_video_clip(self.path, start, count)


class PairedVideoDataset(Dataset):
    """GT/LQ pairs for training (``data=udm10`` etc. with ``data.root`` set, or ``data=paired``).

    Items are dicts: ``hq (C, T, H, W)`` and ``lq (C, T, H/scale, W/scale)`` float32 in [-1, 1],
    ``prompt`` (str), ``is_image`` (False) and ``index`` (int).

    Args:
        config: The paired dataset config (GT required).
        degradation_config: Unused (pairs are already degraded); accepted for the common builder.
        num_frames: Frames per item; must obey ``frame_multiple * k + frame_offset``.
        hr_size: HR crop ``(H, W)``, multiples of ``scale``.
        scale: GT size / LQ size of the dataset.
        frame_multiple: Backbone frame rule multiple (4 for ``4k+1``).
        frame_offset: Backbone frame rule offset (1 for ``4k+1``).
        seed: Base seed of every random choice.
    """

    def __init__(self, config: PairedDataConfig, degradation_config: Any = None, *, num_frames: int,
                 hr_size: tuple[int, int], scale: int, frame_multiple: int = 1, frame_offset: int = 0,
                 seed: int = 0):
        self.config = config
        self.spec = clip_utils.make_spec(num_frames=num_frames, hr_size=hr_size, scale=scale,
                                         frame_multiple=frame_multiple, frame_offset=frame_offset, seed=seed)
        self.clips: list[EvalClip] = paired_clips(config, require_gt=True)
        prompts: dict[str, str] = {}
        if config.metadata:
            for row in load_metadata(config.metadata):
                if row.prompt is not None:
                    prompts[Path(row.path).stem] = row.prompt
        self.prompts = [prompts.get(c.name, config.prompt) for c in self.clips]
        self._sources: dict[int, tuple[_Source, _Source]] = {}
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.clips) * self.config.repeat

    def set_epoch(self, epoch: int) -> None:
        """Epoch mixed into the seed of items requested by plain integer index."""
        self.epoch = int(epoch)

    def batch_sampler(self, batch_size: int, *, num_replicas: int = 1, rank: int = 0,
                      shuffle: bool = True) -> ImageVideoBatchSampler:
        """A resumable batch sampler over this dataset (all batches are video batches)."""
        return ImageVideoBatchSampler(len(self), 0, batch_size, 0.0, num_replicas=num_replicas, rank=rank,
                                      seed=self.spec.seed, shuffle=shuffle)

    def _pair(self, i: int) -> tuple[_Source, _Source]:
        if i not in self._sources:
            clip = self.clips[i]
            self._sources[i] = (_Source(clip.gt), _Source(clip.lq))
        return self._sources[i]

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """Item ``key`` (an index, or ``(epoch, index)`` to set the epoch explicitly)."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items.")
        spec = self.spec
        g = draws.item_generator(spec.seed, epoch, index)
        i = index % len(self.clips)
        clip = self.clips[i]
        gt_src, lq_src = self._pair(i)
        n = min(gt_src.num_frames, lq_src.num_frames)
        start = draws.randint(g, 0, max(n - spec.num_frames, 0))
        gt = gt_src.read(start, spec.num_frames)
        lq = lq_src.read(start, spec.num_frames)
        m = min(len(gt), len(lq))
        if m == 0:
            raise UserError(f"clip `{clip.name}` yielded no frames from index {start} ({clip.gt}, {clip.lq}).")
        gt = clip_utils.pad_frames(gt[:m], spec.num_frames, clip.gt)
        lq = clip_utils.pad_frames(lq[:m], spec.num_frames, clip.lq)
        s = spec.scale
        if gt.shape[1] != lq.shape[1] * s or gt.shape[2] != lq.shape[2] * s:
            raise UserError(f"clip `{clip.name}`: GT {gt.shape[2]}x{gt.shape[1]} is not {s}x LQ "
                            f"{lq.shape[2]}x{lq.shape[1]} (scale={s}).")
        lh, lw = spec.lr_size
        if lq.shape[1] < lh or lq.shape[2] < lw:
            raise UserError(f"clip `{clip.name}`: LQ {lq.shape[2]}x{lq.shape[1]} is smaller than the LR crop "
                            f"{lw}x{lh}; lower the HR crop size.")
        # Crop before converting to float: full HD frames would cost ~100 MB per 33-frame clip.
        top, left = clip_utils.random_crop_box(g, lq.shape[1:3], (lh, lw))
        lq = lq[:, top:top + lh, left:left + lw]
        gt = gt[:, top * s:(top + lh) * s, left * s:(left + lw) * s]
        return {"hq": clip_utils.model_range(clip_utils.to_tensor(gt)),
                "lq": clip_utils.model_range(clip_utils.to_tensor(lq)),
                "prompt": self.prompts[i], "is_image": False, "index": int(index)}

    def __repr__(self) -> str:
        return f"PairedVideoDataset({self.config.name}, clips={len(self.clips)}, spec={self.spec})"


__all__ = ["PairedVideoDataset"]
