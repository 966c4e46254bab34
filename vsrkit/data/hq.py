"""Training on HQ media only: LQ made on the fly by a degradation preset.

Videos: read ``num_frames + extra_frames`` consecutive frames from a random start (seek + decode
only those), cut a random context crop ``context`` times the HR crop, degrade the whole stack, then
cut an aligned HR/LR pair and a random run of ``num_frames`` frames (DOVE's recipe, sparkvsr.md
§8.3). Images: the same on a pseudo-video (:mod:`vsrkit.data.pseudo_video`) or a 1-frame clip.
Every random choice comes from ``(seed, epoch, index)``.
"""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from vsrkit.data import clips as clip_utils
from vsrkit.data import draws
from vsrkit.data.config import HQDataConfig
from vsrkit.data.degradations import build_degradation
from vsrkit.data.media import VideoProbe, is_image, is_video, probe_video, read_image, read_video_clip
from vsrkit.data.metadata import load_metadata, resolve_rows
from vsrkit.data.pseudo_video import render
from vsrkit.data.sampler import ImageVideoBatchSampler
from vsrkit.errors import UserError, VideoReadError

logger = logging.getLogger(__name__)


def discover(root: str, metadata: str, exclude: list[str], keep: Callable[[Path], bool], what: str,
             root_key: str) -> list[tuple[Path, str | None]]:
    """Files of one kind: the rows of ``metadata``, or every matching file under ``root``.

    Args:
        root: Folder searched recursively (and the base of relative metadata paths).
        metadata: Metadata file, or empty.
        exclude: Glob patterns matched against the path relative to ``root`` and the file name.
        keep: Which files count (by extension).
        what: ``"videos"`` or ``"images"`` for messages.
        root_key: The config key of ``root`` for messages (``data.root``).

    Returns:
        ``(absolute path, prompt or None)`` in a stable order.
    """
    if root and not Path(root).is_dir():
        raise UserError(f"`{root_key}` = {root} does not exist or is not a folder; pass {root_key}=<folder of {what}>.")
    if metadata:
        base = Path(root) if root else Path(metadata).parent
        return resolve_rows(load_metadata(metadata), base, metadata)
    if not root:
        return []
    found = []
    for path in sorted(Path(root).rglob("*")):
        if not path.is_file() or not keep(path):
            continue
        rel = path.relative_to(root).as_posix()
        if any(fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(path.name, pat) for pat in exclude):
            continue
        found.append((path.resolve(), None))
    if not found:
        raise UserError(f"no {what} found under `{root_key}` = {root} (searched recursively).")
    return found


class HQDataset(Dataset):
    """HQ videos and/or images with LQ made on the fly (``data=demo``, ``data=hq``).

    Items are dicts: ``hq (C, T, H, W)`` and ``lq (C, T, H/scale, W/scale)`` float32 in [-1, 1],
    ``prompt`` (str), ``is_image`` (True for items made from an image) and ``index`` (int).
    ``T`` is ``num_frames``, or 1 for images with ``image_mode=single_frame``.
    Indices ``[0, num_videos)`` are videos, the rest images (see :meth:`batch_sampler`).

    Args:
        config: Where the media are and how to cut them.
        degradation_config: A degradation preset config (``degradation=<name>``).
        num_frames: Frames per item; must obey ``frame_multiple * k + frame_offset``.
        hr_size: HR crop ``(H, W)``, multiples of ``scale``.
        scale: HR size / LR size.
        frame_multiple: Backbone frame rule multiple (4 for ``4k+1``).
        frame_offset: Backbone frame rule offset (1 for ``4k+1``).
        seed: Base seed of every random choice.
    """

    def __init__(self, config: HQDataConfig, degradation_config: Any, *, num_frames: int,
                 hr_size: tuple[int, int], scale: int, frame_multiple: int = 1, frame_offset: int = 0,
                 seed: int = 0):
        self.config = config
        self.spec = clip_utils.make_spec(num_frames=num_frames, hr_size=hr_size, scale=scale,
                                         frame_multiple=frame_multiple, frame_offset=frame_offset, seed=seed)
        if degradation_config is None:
            raise UserError(f"dataset `{config.name}` makes LQ on the fly and needs a degradation "
                            f"(degradation=realbasicvsr|realesrgan_video|bd|bicubic).")
        if not config.root and not config.metadata and not config.image_root and not config.image_metadata:
            raise UserError(f"dataset `{config.name}` needs `data.root` (videos) or `data.image_root` (images).")
        self.videos = discover(config.root, config.metadata, list(config.exclude), is_video, "videos", "data.root")
        self.images = discover(config.image_root, config.image_metadata, list(config.exclude), is_image,
                               "images", "data.image_root")
        if self.videos and not self.images and config.image_ratio > 0:
            raise UserError(f"`data.image_ratio` = {config.image_ratio} needs images: set data.image_root=<folder>.")
        if config.image_mode == "single_frame" and self.images and not clip_utils.frame_rule_ok(
                1, frame_multiple, frame_offset):
            raise UserError(f"`data.image_mode=single_frame` makes 1-frame clips, which the frame rule "
                            f"{frame_multiple}k+{frame_offset} forbids; use data.image_mode=pseudo_video.")
        self.degradation = build_degradation(degradation_config, scale=scale)
        self._probes: dict[Path, VideoProbe] = {}
        self.epoch = 0

    # ------------------------------------------------------------------ sizes and sampling

    @property
    def num_videos(self) -> int:
        """Video items per epoch (videos x repeat)."""
        return len(self.videos) * self.config.repeat

    @property
    def num_images(self) -> int:
        """Image items per epoch (images x repeat)."""
        return len(self.images) * self.config.repeat

    def __len__(self) -> int:
        return self.num_videos + self.num_images

    def set_epoch(self, epoch: int) -> None:
        """Epoch mixed into the seed of items requested by plain integer index."""
        self.epoch = int(epoch)

    def batch_sampler(self, batch_size: int, *, num_replicas: int = 1, rank: int = 0,
                      shuffle: bool = True) -> ImageVideoBatchSampler:
        """Resumable batches that are all images or all videos, images with ``image_ratio``."""
        return ImageVideoBatchSampler(self.num_videos, self.num_images, batch_size, self.config.image_ratio,
                                      num_replicas=num_replicas, rank=rank, seed=self.spec.seed, shuffle=shuffle)

    # ------------------------------------------------------------------ items

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """Item ``key`` (an index, or ``(epoch, index)`` to set the epoch explicitly)."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items.")
        g = draws.item_generator(self.spec.seed, epoch, index)
        if index < self.num_videos:
            path, prompt = self.videos[index % len(self.videos)]
            hq, lq = self._video_item(path, g)
            is_img = False
        else:
            path, prompt = self.images[(index - self.num_videos) % len(self.images)]
            hq, lq = self._image_item(path, g)
            is_img = True
        return {"hq": clip_utils.model_range(hq), "lq": clip_utils.model_range(lq),
                "prompt": self.config.prompt if prompt is None else prompt, "is_image": is_img,
                "index": int(index)}

    def _probe(self, path: Path) -> VideoProbe:
        # Header facts only: caching them cannot change any item.
        if path not in self._probes:
            self._probes[path] = probe_video(path)
        return self._probes[path]

    def _read_video(self, path: Path, generator: torch.Generator) -> np.ndarray:
        t = self.spec.num_frames
        want = t + self.config.extra_frames
        total = self._probe(path).num_frames
        u = draws.uniform(generator, 0.0, 1.0)

        def window(n_frames: int) -> tuple[int, int]:
            length = min(want, max(n_frames, t))
            return int(u * (max(n_frames - length, 0) + 1)), length

        start, length = window(total)
        frames = read_video_clip(path, start, length)
        if len(frames) < length and start > 0:
            # The header promised more frames than the decoder gives: redo the draw with the
            # count just learned (a function of the file only, so items stay deterministic).
            start, length = window(start + len(frames))
            frames = read_video_clip(path, start, length)
        if len(frames) == 0:
            raise VideoReadError(f"{path} yielded no frames.")
        return clip_utils.pad_frames(frames, t, path)

    def _context(self, frames: np.ndarray, generator: torch.Generator, source: Path) -> torch.Tensor:
        """Random context crop of ``(T, H, W, 3)`` uint8 frames as ``(C, T, h, w)`` float in [0, 1]."""
        hr_h, hr_w = self.spec.hr_size
        h, w = frames.shape[1:3]
        if h < hr_h or w < hr_w:  # rare: a source smaller than the crop is upscaled to cover it
            tensor = clip_utils.cover_resize(clip_utils.to_tensor(frames), (hr_h, hr_w), source)
            h, w = tensor.shape[-2:]
        else:
            tensor = None
        ch = clip_utils.context_size(hr_h, h, self.config.context, self.spec.scale)
        cw = clip_utils.context_size(hr_w, w, self.config.context, self.spec.scale)
        top, left = clip_utils.random_crop_box(generator, (h, w), (ch, cw))
        if tensor is not None:
            return tensor[..., top:top + ch, left:left + cw].contiguous()
        # Crop before converting to float (a 1080p clip is ~1 GB as float).
        return clip_utils.to_tensor(frames[:, top:top + ch, left:left + cw])

    def _video_item(self, path: Path, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        context = self._context(self._read_video(path, generator), generator, path)
        lq = self.degradation(context, generator, is_image=False)
        return clip_utils.paired_crop(context, lq, self.spec, generator)

    def _image_item(self, path: Path, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        image = clip_utils.to_tensor(read_image(path)[None])  # (3, 1, H, W)
        hr_h, hr_w = self.spec.hr_size
        image = clip_utils.cover_resize(image, (hr_h, hr_w), path)[:, 0]
        h, w = image.shape[-2:]
        size = (clip_utils.context_size(hr_h, h, self.config.context, self.spec.scale),
                clip_utils.context_size(hr_w, w, self.config.context, self.spec.scale))
        if self.config.image_mode == "single_frame":
            context = render(image, 1, size, self.config.motion, generator)
            lq = self.degradation(context, generator, is_image=True)
            return clip_utils.paired_crop(context, lq, self.spec, generator, num_frames=1)
        # Pseudo-videos are degraded as videos (codec included): they stand in for video clips.
        length = self.spec.num_frames + self.config.extra_frames
        context = render(image, length, size, self.config.motion, generator)
        lq = self.degradation(context, generator, is_image=False)
        return clip_utils.paired_crop(context, lq, self.spec, generator)

    def __repr__(self) -> str:
        return (f"HQDataset({self.config.name}, videos={len(self.videos)}, images={len(self.images)}, "
                f"spec={self.spec})")
