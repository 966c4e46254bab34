"""Options of the dataset presets (``conf/data/<name>.yaml``). No torch import here.

Two kinds of dataset:

- :class:`PairedDataConfig`: GT/LQ pairs on disk, for evaluation (``vsrkit bench``/``eval``) and
  for training on pairs. Layouts ``<root>/{GT,LQ}/<clip>/<frames>``,
  ``<root>/{GT-Video,LQ-Video}/<clip>.mkv``, or one clip ``<root>/<gt_dir>/*.png`` +
  ``<root>/<lq_dir>/*.png`` (Vid4).
- :class:`HQDataConfig`: HQ videos and/or images only, degraded on the fly for training (images
  become pseudo-videos with random affine motion, :class:`MotionConfig`).

Relative roots are resolved against the working directory when the config is built (the CLI runs
Hydra with ``hydra.job.chdir=false``), so every path a dataset sees is absolute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from vsrkit.errors import UserError

PAIRED_LAYOUTS = ["auto", "frames", "video", "single"]
IMAGE_MODES = ["pseudo_video", "single_frame"]


def _check_crop(crop_size) -> None:
    if crop_size and (len(crop_size) != 2 or min(crop_size) < 1):
        raise UserError(f"`data.crop_size` must be [H, W] with positive sizes, or empty. Got {list(crop_size)}.")


def _resolve(path: str) -> str:
    return str(Path(path).expanduser().resolve()) if path else path


@dataclass
class PairedDataConfig:
    """GT/LQ pairs on disk.

    Args:
        name: The preset's registry name (``udm10``, ``vid4-calendar`` ...); keep it.
        root: Dataset folder (see ``layout``).
        layout: ``auto`` (``<lq_dir>/`` if present, else ``<lq_video_dir>/``), ``frames``
            (``<root>/<gt_dir>/<clip>/`` and ``<root>/<lq_dir>/<clip>/`` folders of images),
            ``video`` (``<root>/<gt_video_dir>/<clip>.mkv`` and ``<root>/<lq_video_dir>/<clip>.mkv``)
            or ``single`` (one clip: ``<root>/<gt_dir>/*.png`` and ``<root>/<lq_dir>/*.png``).
        gt_dir: GT frames folder name.
        lq_dir: LQ frames folder name.
        gt_video_dir: GT videos folder name.
        lq_video_dir: LQ videos folder name.
        clips: Use only these clips (names without extension); empty: all.
        metadata: CSV/JSON/JSONL file with a prompt per clip (keys ``clip`` or ``video``/``path``,
            and ``prompt``); relative to ``root`` unless absolute.
        prompt: Prompt of clips the metadata does not name.
        repeat: Training only: times each clip appears per epoch.
        crop_size: Training only: HR crop ``[H, W]`` that replaces the method's; empty: the method's.
    """

    name: str = "paired"
    root: str = ""
    layout: str = "auto"
    gt_dir: str = "GT"
    lq_dir: str = "LQ"
    gt_video_dir: str = "GT-Video"
    lq_video_dir: str = "LQ-Video"
    clips: List[str] = field(default_factory=list)
    metadata: str = ""
    prompt: str = ""
    repeat: int = 1
    crop_size: List[int] = field(default_factory=list)

    def __post_init__(self):
        _check_crop(self.crop_size)
        if self.layout not in PAIRED_LAYOUTS:
            raise UserError(f"`data.layout` must be one of {PAIRED_LAYOUTS}. Got {self.layout}.")
        if self.repeat < 1:
            raise UserError(f"`data.repeat` must be >= 1. Got {self.repeat}.")
        self.root = _resolve(self.root)
        if self.metadata and self.root and not Path(self.metadata).is_absolute():
            self.metadata = str(Path(self.root, self.metadata))
        self.metadata = _resolve(self.metadata)


@dataclass
class MotionConfig:
    """Random affine camera motion that turns one image into a pseudo-video.

    Each clip draws a constant velocity: a translation per frame, a rotation per frame and a zoom
    per frame, each uniform in +-max, and frame ``t`` shows the image through the window moved
    ``t`` times that. The defaults span static to fast hand-held motion as measured with OpenCV
    Farneback flow on the real clips in ``../shared/data/real`` (median flow per frame relative to
    the frame width: Vid4 calendar 0.10%, DOVE 003 pan 0.36%, DOVE 002 hand-held 0.76%, its 90th
    percentile 0.93%): a translation of up to 1% of the image's shorter side per axis per frame
    covers that range; 0.5 degree and 1% zoom per frame move the corners of a 320x640 crop by at most
    3-4 px per frame, the order of the real motions above at that size.

    Args:
        max_translation: Largest translation per frame along each axis, as a fraction of the
            image's shorter side.
        max_rotation: Largest rotation per frame, degrees.
        max_zoom: Largest relative zoom per frame (0.01 = 1% per frame, in or out).
    """

    max_translation: float = 0.01
    max_rotation: float = 0.5
    max_zoom: float = 0.01

    def __post_init__(self):
        for key in ("max_translation", "max_rotation", "max_zoom"):
            if getattr(self, key) < 0:
                raise UserError(f"`data.motion.{key}` must be >= 0. Got {getattr(self, key)}.")


@dataclass
class HQDataConfig:
    """HQ videos and/or images, degraded on the fly (with ``degradation=<preset>``).

    Args:
        name: The preset's registry name (``hq``, ``demo``); keep it.
        root: Folder searched recursively for videos (or the base of relative paths in
            ``metadata``); empty: no videos.
        metadata: CSV/JSON/JSONL listing the videos (key ``video``/``path``/``file``) and a
            ``prompt`` each; relative to ``root`` unless absolute. Empty: every video under ``root``.
        image_root: Folder searched recursively for images (or the base of ``image_metadata``).
        image_metadata: Like ``metadata`` for the images (key ``image``/``path``/``file``).
        image_ratio: Fraction of batches made of images when both videos and images are given
            (SparkVSR stage 2: 0.5, DOVE: 0.8); a batch is all images or all videos
            (use the dataset's ``batch_sampler``).
        image_mode: ``pseudo_video`` (the image moves through ``num_frames`` frames) or
            ``single_frame`` (a 1-frame clip, as DOVE/SparkVSR image batches).
        motion: Pseudo-video motion ranges.
        prompt: Prompt of items the metadata does not give one.
        exclude: Glob patterns (on the path relative to its root) of files to skip.
        extra_frames: Frames read beyond ``num_frames`` and degraded with the clip, of which a
            random ``num_frames`` window is kept (DOVE reads F+10), so the codec's first
            (intra-coded) frame is not always in the clip.
        context: The degradation runs on a crop this many times the HR crop (rounded up to a
            multiple of 4 x scale, DOVE: ceil(1.5 H / 16) * 16 at x4), then the HR/LR pair is cut
            from it, so blur and resampling borders stay outside the pair.
        repeat: Times each file appears per epoch (PS-SR uses 10).
        crop_size: HR crop ``[H, W]`` that replaces the method's; empty: the method's.
    """

    name: str = "hq"
    root: str = ""
    metadata: str = ""
    image_root: str = ""
    image_metadata: str = ""
    image_ratio: float = 0.0
    image_mode: str = "pseudo_video"
    motion: MotionConfig = field(default_factory=MotionConfig)
    prompt: str = ""
    exclude: List[str] = field(default_factory=list)
    extra_frames: int = 10
    context: float = 1.5
    repeat: int = 1
    crop_size: List[int] = field(default_factory=list)

    def __post_init__(self):
        _check_crop(self.crop_size)
        if isinstance(self.motion, dict):
            self.motion = MotionConfig(**self.motion)
        if self.image_mode not in IMAGE_MODES:
            raise UserError(f"`data.image_mode` must be one of {IMAGE_MODES}. Got {self.image_mode}.")
        if not 0.0 <= self.image_ratio <= 1.0:
            raise UserError(f"`data.image_ratio` must be in [0, 1]. Got {self.image_ratio}.")
        if self.extra_frames < 0:
            raise UserError(f"`data.extra_frames` must be >= 0. Got {self.extra_frames}.")
        if self.context < 1.0:
            raise UserError(f"`data.context` must be >= 1. Got {self.context}.")
        if self.repeat < 1:
            raise UserError(f"`data.repeat` must be >= 1. Got {self.repeat}.")
        self.root = _resolve(self.root)
        self.image_root = _resolve(self.image_root)
        if self.metadata and self.root and not Path(self.metadata).is_absolute():
            self.metadata = str(Path(self.root, self.metadata))
        self.metadata = _resolve(self.metadata)
        if self.image_metadata and self.image_root and not Path(self.image_metadata).is_absolute():
            self.image_metadata = str(Path(self.image_root, self.image_metadata))
        self.image_metadata = _resolve(self.image_metadata)


__all__ = ["PairedDataConfig", "HQDataConfig", "MotionConfig", "PAIRED_LAYOUTS", "IMAGE_MODES"]
