"""Helpers shared by the training datasets: argument checks, crops aligned between LR and HR,
frame padding and the model's value range. Functions only (no dataset base class)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vsrkit.data import draws
from vsrkit.errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipSpec:
    """What one training item holds.

    Attributes:
        num_frames: Frames per clip ``T``.
        hr_size: HR crop ``(H, W)``.
        scale: HR size / LR size.
        seed: Base seed of every random choice.
    """

    num_frames: int
    hr_size: tuple[int, int]
    scale: int
    seed: int

    @property
    def lr_size(self) -> tuple[int, int]:
        return self.hr_size[0] // self.scale, self.hr_size[1] // self.scale


def frame_rule_ok(n: int, frame_multiple: int, frame_offset: int) -> bool:
    """Whether ``n`` frames obey the rule ``n = frame_multiple * k + frame_offset``, ``k >= 0``."""
    return n >= frame_offset and (n - frame_offset) % frame_multiple == 0


def make_spec(*, num_frames: int, hr_size, scale: int, frame_multiple: int, frame_offset: int,
              seed: int) -> ClipSpec:
    """Check the engine's arguments and bundle them.

    Raises:
        UserError: a frame count breaking the backbone's frame rule, or an HR size that is not
            a positive multiple of ``scale``.
    """
    if frame_multiple < 1 or frame_offset < 0:
        raise UserError(f"frame rule must be multiple >= 1 and offset >= 0. Got {frame_multiple}k+{frame_offset}.")
    if num_frames < 1 or not frame_rule_ok(num_frames, frame_multiple, frame_offset):
        raise UserError(f"`num_frames` must be {frame_multiple}k+{frame_offset} (k >= 0) for this backbone. "
                        f"Got {num_frames}.")
    if int(scale) != scale or scale < 1:
        raise UserError(f"`scale` must be an integer >= 1. Got {scale}.")
    hr = tuple(int(v) for v in hr_size)
    if len(hr) != 2 or min(hr) < scale or hr[0] % scale or hr[1] % scale:
        raise UserError(f"HR crop size must be (H, W), each a positive multiple of scale {scale}. "
                        f"Got {tuple(hr_size)}.")
    return ClipSpec(int(num_frames), (hr[0], hr[1]), int(scale), int(seed))


def pad_frames(frames: np.ndarray, count: int, source: object) -> np.ndarray:
    """Repeat the last frame up to ``count`` frames (DOVE pads short videos so), with a warning."""
    if len(frames) >= count:
        return frames
    logger.warning("%s has %d frames, fewer than the %d a clip needs: repeating its last frame.",
                   source, len(frames), count)
    return np.concatenate([frames, np.repeat(frames[-1:], count - len(frames), axis=0)], axis=0)


def cover_resize(frames: torch.Tensor, min_size: tuple[int, int], source: object) -> torch.Tensor:
    """Upscale ``(C, T, H, W)`` frames (bicubic, aspect kept) so both sides reach ``min_size``."""
    h, w = frames.shape[-2:]
    if h >= min_size[0] and w >= min_size[1]:
        return frames
    factor = max(min_size[0] / h, min_size[1] / w)
    size = (max(math.ceil(h * factor), min_size[0]), max(math.ceil(w * factor), min_size[1]))
    logger.warning("%s is %dx%d, smaller than the %dx%d crop: upscaling it to %dx%d.",
                   source, h, w, min_size[0], min_size[1], size[0], size[1])
    out = F.interpolate(frames.transpose(0, 1), size=size, mode="bicubic", align_corners=False)
    return out.clamp(0.0, 1.0).transpose(0, 1)


def context_size(hr: int, available: int, factor: float, scale: int) -> int:
    """Side of the crop the degradation runs on: ``factor * hr`` rounded up to a multiple of
    ``4 * scale`` (DOVE: ceil(1.5 H / 16) * 16 at x4), at most ``available`` (rounded down to a
    multiple of ``scale``), at least ``hr``."""
    multiple = 4 * scale
    want = math.ceil(hr * factor / multiple) * multiple
    return max(hr, min(want, (available // scale) * scale))


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 (or uint16, from sources above 8 bits) -> ``(3, T, H, W)`` float32 in [0, 1]."""
    peak = 65535.0 if frames.dtype == np.uint16 else 255.0
    return torch.from_numpy(np.ascontiguousarray(frames).astype(np.float32)).permute(3, 0, 1, 2) / peak


def random_crop_box(generator: torch.Generator, size: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of a ``crop`` window inside ``size``, uniform."""
    return (draws.randint(generator, 0, size[0] - crop[0]), draws.randint(generator, 0, size[1] - crop[1]))


def paired_crop(hq: torch.Tensor, lq: torch.Tensor, spec: ClipSpec, generator: torch.Generator,
                num_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut an aligned HR/LR pair: a random LR window and the HR window ``scale`` times it, and a
    random run of ``num_frames`` frames (``spec.num_frames`` by default).

    Args:
        hq: ``(C, T', H', W')`` with ``H' = scale * h'`` and ``W' = scale * w'``.
        lq: ``(C, T', h', w')``.
        spec: Crop sizes and scale.
        generator: Source of the window positions.
        num_frames: Frames to keep.

    Returns:
        ``hq (C, T, H, W)`` and ``lq (C, T, H / scale, W / scale)``.
    """
    t = spec.num_frames if num_frames is None else num_frames
    s = spec.scale
    lh, lw = spec.lr_size
    top, left = random_crop_box(generator, tuple(lq.shape[-2:]), (lh, lw))
    start = draws.randint(generator, 0, lq.shape[1] - t)
    lq = lq[:, start:start + t, top:top + lh, left:left + lw]
    hq = hq[:, start:start + t, top * s:(top + lh) * s, left * s:(left + lw) * s]
    return hq, lq


def model_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1] float32, contiguous."""
    return (x * 2.0 - 1.0).float().contiguous()
