"""Keyframes for keyframe-conditioned methods (SparkVSR): which frames, and where their HR images come from.

The engine calls :func:`prepare_keyframes` once per clip when the method's
``WindowSpec.uses_keyframes`` is true, then hands each window its share (re-indexed to the
window, cropped to the tile) as ``WindowContext.keyframes``. Methods never call anything here.

Two registries hold the parts (built-ins registered in :mod:`vsrkit.builtins`):

- ``KEYFRAME_SELECTORS``: ``fn(config, *, num_frames, input_path) -> list[int]`` picks frame
  indices: ``first_middle_last`` (default, the release's ``_select_indices``), ``manual``,
  ``iframes`` (codec I-frames), ``random``.
- ``KEYFRAME_SOURCES``: ``fn(config, indices, request) -> {index: (C, H, W) tensor}`` makes the
  HR images: ``none`` (no keyframes; the release's default ``--ref_mode no_ref``), ``images``
  (user files), ``lr`` (the upsampled LR frame), ``gt`` (ground-truth frames, for evaluation),
  ``method`` (any registered vsrkit method on the single LR frame), ``command`` (an external
  program, the way the release runs PiSA-SR in its own environment).

Why indices are multiples of 4 and at least 4 apart: SparkVSR writes keyframe ``k`` into latent
slot ``k // 4`` (the VAE compresses time 4x), so two keyframes closer than 4 frames could share
a slot and the later one would overwrite the earlier (report §6). The automatic selectors snap
to multiples of 4 (where ``k // 4`` also matches the VAE's causal frame mapping, §3) and windows
start at multiples of 4 (``WindowSpec.stride_multiple``), so window-local slots stay aligned.
"""

from __future__ import annotations

import logging
import random
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from vsrkit.errors import UserError

logger = logging.getLogger(__name__)

SELECTORS = ["first_middle_last", "manual", "iframes", "random"]
SOURCES = ["none", "images", "lr", "gt", "method", "command"]
RESIZE_MODES = ["bicubic", "bilinear", "area", "nearest"]
LENGTHS = ["padded", "real"]


@dataclass
class KeyframesConfig:
    """Which frames become keyframes and how their HR images are made (the ``keyframes`` node).

    Args:
        selector: Registered selector name: ``first_middle_last`` (default; [0, F//2, F-1]
            snapped down to multiples of ``align``), ``manual`` (``indices``), ``iframes``
            (codec I-frames of the input video), ``random`` (``count`` frames, ``seed``).
        length: The clip length ``F`` the selector works on. ``padded`` (default, the release:
            ``_select_indices`` runs on the clip padded to the method's frame rule, 8k+1 for
            SparkVSR, so 50 frames -> 57 -> [0, 28, 56]); a position in the padding shows the last
            real frame, and sources make its image from that frame. ``real``: the real frame count
            (50 -> [0, 25, 49] snapped to [0, 24, 48], vsrkit's earlier rule).
        source: Registered source name: ``none`` (no keyframes; default, as the release's
            ``--ref_mode no_ref``), ``images``, ``lr``, ``gt``, ``method``, ``command``.
        indices: ``manual``: 0-based frame indices of the input (deduplicated and sorted; any
            two at least ``min_gap`` apart). Kept as given, not snapped.
        count: ``random``: number of keyframes.
        seed: ``random``: seed of the draw.
        align: Automatic selectors snap indices down to multiples of this (4: one latent frame).
        min_gap: Smallest allowed distance between two keyframes (4, release and training rule).
        images: ``images``: image files, or one folder of images (natural order), paired in order
            with the selected indices (counts must match). Taken upright (EXIF) and turned the way
            the input video stores its frames (a phone clip's rotation; :mod:`vsrkit.io.orientation`).
        gt: ``gt``: ground-truth video file, folder of frames or image, at the output size; taken
            as displayed and turned like ``images``.
        method: ``method``: registered method name run on the single LR frame (image mode).
        method_options: ``method``: overrides of that method's config fields.
        method_backbone: ``method``: ``BackboneConfig`` fields for a method that needs a backbone
            (e.g. ``{preset: cogvideox1.5-5b-i2v, family: cogvideox, path: /models/x}``); empty
            for methods without one.
        command: ``command``: command template; ``{input}`` (LR frame PNG), ``{output}``
            (expected output PNG) or ``{output_dir}`` (folder the program writes one image
            into), ``{scale}`` and ``{index}`` are substituted. Run without a shell.
        command_cwd: ``command``: working directory (empty: the current one).
        command_timeout_s: ``command``: seconds before a run is stopped and reported.
        resize: Interpolation used to fit a keyframe image to the output size after the
            centre-crop to its aspect (release: bicubic).
        lr_mode: ``lr``: interpolation of the LR frame (release fallback: bilinear).
    """

    selector: str = "first_middle_last"
    length: str = "padded"
    source: str = "none"
    indices: List[int] = field(default_factory=list)
    count: int = 3
    seed: int = 0
    align: int = 4
    min_gap: int = 4
    images: List[str] = field(default_factory=list)
    gt: str = ""
    method: str = ""
    method_options: Dict[str, Any] = field(default_factory=dict)
    method_backbone: Dict[str, Any] = field(default_factory=dict)
    command: str = ""
    command_cwd: str = ""
    command_timeout_s: float = 600.0
    resize: str = "bicubic"
    lr_mode: str = "bilinear"

    def __post_init__(self):
        # Selector and source names are checked against the registries in prepare_keyframes
        # (plugins may add names); the built-in options are checked here.
        if self.count < 1:
            raise UserError(f"`keyframes.count` must be >= 1. Got {self.count}.")
        if self.align < 1:
            raise UserError(f"`keyframes.align` must be >= 1. Got {self.align}.")
        if self.min_gap < 1:
            raise UserError(f"`keyframes.min_gap` must be >= 1. Got {self.min_gap}.")
        if self.length not in LENGTHS:
            raise UserError(f"`keyframes.length` must be one of {LENGTHS}. Got {self.length!r}.")
        for name in ("resize", "lr_mode"):
            if getattr(self, name) not in RESIZE_MODES:
                raise UserError(f"`keyframes.{name}` must be one of {RESIZE_MODES}. Got {getattr(self, name)!r}.")
        if self.command_timeout_s <= 0:
            raise UserError(f"`keyframes.command_timeout_s` must be > 0. Got {self.command_timeout_s}.")
        # OmegaConf hands over ListConfig/DictConfig; keep plain containers.
        self.indices = [int(i) for i in self.indices]
        self.images = [str(p) for p in self.images]
        self.method_options = dict(self.method_options)
        self.method_backbone = dict(self.method_backbone)


@dataclass
class KeyframeRequest:
    """What a keyframe source knows about the clip.

    A source may be asked for positions in the clip's temporal padding (``index >= num_frames``,
    chosen on the padded length, ``keyframes.length=padded``): the engine repeats the last real
    frame there, so such a keyframe is made from frame ``num_frames - 1`` (``lq_frame`` already
    returns it; the release reads ``min(index, F - 1)`` too).

    Args:
        input_path: The input (video file, frames folder or image); ``None`` for tensors.
        num_frames: Real frames in the clip (padding excluded).
        lq_frame: ``lq_frame(i) -> (C, h, w)`` float32 in [-1, 1]: input frame ``min(i, num_frames - 1)``,
            padded the way the engine pads it for the method (``h * scale, w * scale == out_hw``).
        content_hw: Output size of the real content, ``(H, W)`` (input size times scale).
        out_hw: Padded output size ``(H, W)`` the method works at (>= ``content_hw``).
        scale: Upscaling factor.
        device: Where keyframe tensors are returned (and ``method`` sources run).
        cache: Per-run store where a source keeps what it loaded (``method``: the loaded
            model), so a run with many clips loads it once; ``None`` keeps nothing.
    """

    input_path: Optional[str]
    num_frames: int
    lq_frame: Callable[[int], torch.Tensor]
    content_hw: tuple
    out_hw: tuple
    scale: int
    device: Any = "cpu"
    cache: Optional[dict] = None


# --------------------------------------------------------------------------------------------
# Index rules
# --------------------------------------------------------------------------------------------


def snap_and_space(indices: list[int], align: int, min_gap: int) -> list[int]:
    """Snap indices down to multiples of ``align``, deduplicate, sort, and drop any index closer
    than ``min_gap`` to the previous kept one (the earliest wins)."""
    kept: list[int] = []
    for index in sorted({(int(i) // align) * align for i in indices}):
        if not kept or index - kept[-1] >= min_gap:
            kept.append(index)
    return kept


def check_indices(indices: list[int], num_frames: int, min_gap: int, key: str = "keyframes.indices") -> list[int]:
    """Deduplicate and sort ``indices``; raise a :class:`UserError` if one is out of range or two
    are closer than ``min_gap``."""
    ordered = sorted(set(int(i) for i in indices))
    for index in ordered:
        if not 0 <= index < num_frames:
            raise UserError(f"`{key}` must be frame indices in [0, {num_frames - 1}] (the clip has "
                            f"{num_frames} frames). Got {index}.")
    for a, b in zip(ordered, ordered[1:]):
        if b - a < min_gap:
            raise UserError(
                f"`{key}` must be at least {min_gap} frames apart (SparkVSR puts keyframe k in latent "
                f"slot k // 4, so closer keyframes would collide). Got {a} and {b} (gap {b - a})."
            )
    return ordered


# --------------------------------------------------------------------------------------------
# Selectors
# --------------------------------------------------------------------------------------------


def select_first_middle_last(config: KeyframesConfig, *, num_frames: int,
                             input_path: Optional[str] = None) -> list[int]:
    """First, middle and last frame: the release's ``_select_indices`` ([0, F//2, F-1], SV:
    finetune/utils/ref_utils.py), snapped down to multiples of ``align`` as the official ComfyUI
    port does (SVC reference.py ``auto_select_ref_indices``). For F = 8k+1 both agree; with
    ``keyframes.length=padded`` (default) ``F`` is the 8k+1 padded length, as the release calls it
    (``_select_indices(video.shape[2])`` after padding: 32 frames -> [0, 16, 32], 50 -> [0, 28, 56])."""
    if num_frames <= 0:
        return []
    return snap_and_space([0, num_frames // 2, num_frames - 1], config.align, config.min_gap)


def select_manual(config: KeyframesConfig, *, num_frames: int, input_path: Optional[str] = None) -> list[int]:
    """The user's ``indices``, deduplicated and sorted; gaps below ``min_gap`` are an error
    (release: "Reference frame interval must be > 3 (>= 4)")."""
    if not config.indices:
        raise UserError("`keyframes.indices` must list at least one frame for `keyframes.selector=manual`. Got [].")
    return check_indices(config.indices, num_frames, config.min_gap)


def select_iframes(config: KeyframesConfig, *, num_frames: int, input_path: Optional[str] = None) -> list[int]:
    """Codec I-frames of the input video (read with PyAV), snapped down to multiples of
    ``align`` and spaced by ``min_gap``; frame 0 when the input has none (or is not a video)."""
    from vsrkit.io.images import is_video

    if input_path is None or not is_video(input_path):
        logger.warning("keyframes.selector=iframes: input %s is not a video file; using frame 0.", input_path)
        return [0] if num_frames > 0 else []
    from vsrkit.io.keyframes import iframe_indices

    found = [i for i in iframe_indices(input_path) if 0 <= i < num_frames]
    if not found:
        logger.warning("keyframes.selector=iframes: %s has no I-frames; using frame 0.", input_path)
        return [0] if num_frames > 0 else []
    return snap_and_space(found, config.align, config.min_gap)


def select_random(config: KeyframesConfig, *, num_frames: int, input_path: Optional[str] = None) -> list[int]:
    """``count`` distinct multiples of ``align`` drawn with ``random.Random(seed)`` (spaced by
    ``min_gap``); fewer when the clip has too few candidates (logged)."""
    step = config.align * -(-config.min_gap // config.align)  # smallest multiple of align >= min_gap
    candidates = list(range(0, num_frames, step))
    count = config.count
    if count > len(candidates):
        logger.warning("keyframes.count=%d but a %d-frame clip has only %d candidates %s; using all of them.",
                       count, num_frames, len(candidates), candidates)
        count = len(candidates)
    return sorted(random.Random(config.seed).sample(candidates, count))


# --------------------------------------------------------------------------------------------
# Image fitting
# --------------------------------------------------------------------------------------------


def to_unit_range(frame: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8/uint16 RGB -> ``(3, H, W)`` float32 in [-1, 1]."""
    peak = 65535.0 if frame.dtype == np.uint16 else 255.0
    tensor = torch.from_numpy(np.ascontiguousarray(frame).astype(np.float32)).permute(2, 0, 1)
    return tensor / peak * 2.0 - 1.0


def to_uint8(frame: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` float in [-1, 1] -> ``(H, W, 3)`` uint8 RGB."""
    array = ((frame.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return array.permute(1, 2, 0).numpy()


def center_crop_to_aspect(image: torch.Tensor, target_h: int, target_w: int) -> torch.Tensor:
    """Centre-crop ``(C, H, W)`` to the aspect ratio of ``target_h x target_w`` (release
    ``center_crop_to_aspect_ratio``: no crop within 1e-3 of the target aspect)."""
    _, src_h, src_w = image.shape
    target_ar, src_ar = target_w / target_h, src_w / src_h
    if abs(target_ar - src_ar) < 1e-3:
        return image
    if src_ar > target_ar:
        new_w = int(src_h * target_ar)
        left = (src_w - new_w) // 2
        return image[:, :, left:left + new_w]
    new_h = int(src_w / target_ar)
    top = (src_h - new_h) // 2
    return image[:, top:top + new_h, :]


def resize_image(image: torch.Tensor, size: tuple, mode: str) -> torch.Tensor:
    """Resize ``(C, H, W)`` float to ``size``; antialiased when shrinking (bilinear/bicubic)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    kwargs: dict = {"mode": mode}
    if mode in ("bilinear", "bicubic"):
        kwargs["align_corners"] = False
        kwargs["antialias"] = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    return F.interpolate(image[None].float(), size=tuple(size), **kwargs)[0]


def fit_keyframe(image: torch.Tensor, content_hw: tuple, out_hw: tuple, mode: str = "bicubic") -> torch.Tensor:
    """Bring a keyframe image to the method's padded output size.

    Centre-crop to the content's aspect ratio, resize to ``content_hw`` (release: bicubic), clamp
    to [-1, 1], then pad right/bottom to ``out_hw`` with -1 (black), which is what the engine's
    zero padding of the LR frame becomes after upsampling.

    Args:
        image: ``(C, H, W)`` float in [-1, 1], any size.
        content_hw: ``(H, W)`` of the real output content.
        out_hw: ``(H, W)`` padded output size, >= ``content_hw``.
        mode: Interpolation mode.

    Returns:
        ``(C, *out_hw)`` float32 in [-1, 1].
    """
    ch, cw = content_hw
    image = center_crop_to_aspect(image.float(), ch, cw)
    image = resize_image(image, (ch, cw), mode).clamp(-1.0, 1.0)
    pad_h, pad_w = out_hw[0] - ch, out_hw[1] - cw
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"out_hw {out_hw} is smaller than content_hw {content_hw}.")
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), value=-1.0)
    return image.contiguous()


def _content_lr(request: KeyframeRequest, index: int) -> torch.Tensor:
    """The LR frame ``index`` without the engine's padding, ``(C, h, w)`` in [-1, 1]."""
    frame = request.lq_frame(index)
    h, w = request.content_hw[0] // request.scale, request.content_hw[1] // request.scale
    return frame[:, :h, :w].float()


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def source_none(config: KeyframesConfig, indices: list[int], request: KeyframeRequest) -> dict:
    """No keyframes: the keyframe latent channels stay zero (release ``--ref_mode no_ref``)."""
    return {}


def source_lr(config: KeyframesConfig, indices: list[int], request: KeyframeRequest) -> dict:
    """The padded LR frame upsampled to the output size (the release's fallback keyframe, the
    bilinearly upsampled input frame ``video[0, :, idx]``)."""
    out = {}
    for index in indices:
        frame = request.lq_frame(index).float()
        kwargs = {"align_corners": False} if config.lr_mode in ("bilinear", "bicubic") else {}
        up = F.interpolate(frame[None], size=tuple(request.out_hw), mode=config.lr_mode, **kwargs)[0]
        out[index] = up.clamp(-1.0, 1.0)
    return out


def _image_files(images: list[str]) -> list[Path]:
    from vsrkit.io.images import is_image, list_images

    if len(images) == 1 and Path(images[0]).is_dir():
        files = list_images(images[0])
        if not files:
            raise UserError(f"`keyframes.images` folder {images[0]} holds no images (.png, .jpg, ...).")
        return files
    files = [Path(p) for p in images]
    for path in files:
        if not path.exists():
            raise UserError(f"`keyframes.images` entry {path} does not exist; give existing image files or a folder.")
        if not path.is_file() or not is_image(path):
            raise UserError(f"`keyframes.images` entry {path} is not an image file (expected .png, .jpg, .bmp, .tif).")
    return files


def source_images(config: KeyframesConfig, indices: list[int], request: KeyframeRequest) -> dict:
    """User-supplied HR images, paired in order with the selected indices; each is centre-cropped
    to the output aspect and resized (release ``api`` mode / ComfyUI ``external_ref``)."""
    from vsrkit.io.images import read_image

    if not config.images:
        raise UserError("`keyframes.images` must name image files or a folder for `keyframes.source=images`. Got [].")
    files = _image_files(config.images)
    if len(files) != len(indices):
        raise UserError(
            f"`keyframes.images` has {len(files)} image(s) but the selector chose {len(indices)} keyframe(s) "
            f"{indices}; give one image per keyframe (e.g. keyframes.selector=manual keyframes.indices=[...])."
        )
    stored = _input_orientation(request)
    return {
        index: fit_keyframe(to_unit_range(stored(read_image(path))), request.content_hw, request.out_hw,
                            config.resize)
        for index, path in zip(indices, files)
    }


def _input_orientation(request: KeyframeRequest) -> Callable[[np.ndarray], np.ndarray]:
    """``f(image)``: an upright ``(H, W, 3)`` picture turned the way the input video stores its
    frames, which the keyframes must line up with (a phone's portrait clip is stored as landscape
    frames plus a rotation; :mod:`vsrkit.io.orientation`). The input is probed once per call."""
    from vsrkit.io.orientation import to_stored
    from vsrkit.io.reader import open_source

    matrix = None
    if request.input_path is not None:
        source = open_source(request.input_path)
        matrix = source.display_matrix if source.kind == "video" else None
    return lambda image: to_stored(image[None], matrix)[0]


def read_frames(path: str, indices: list[int]) -> dict:
    """Frames ``indices`` of a video file or a folder of frames (an image serves every index), as
    displayed: a video's display matrix is applied, images are upright (EXIF).

    Returns:
        ``{index: (H, W, 3) uint8/uint16 RGB}``.

    Raises:
        UserError: The path cannot be read, or it has fewer frames than an index needs.
    """
    from vsrkit.io.orientation import orient
    from vsrkit.io.reader import open_source

    source = open_source(path)
    if source.kind == "image":
        frame = source.read()[0]
        return {index: frame for index in indices}
    wanted = set(indices)
    out = {}
    for chunk in source.chunks(16, max_frames=max(indices) + 1):
        for offset, frame in enumerate(chunk.frames):
            if chunk.start + offset in wanted:
                out[chunk.start + offset] = orient(frame[None], source.display_matrix)[0].copy()
    missing = sorted(wanted - set(out))
    if missing:
        raise UserError(f"`keyframes.gt` {path} has fewer frames than keyframe(s) {missing} need.")
    return out


def source_gt(config: KeyframesConfig, indices: list[int], request: KeyframeRequest) -> dict:
    """Ground-truth frames (oracle keyframes for evaluation, release ``--ref_mode gt``); frames of
    another size are centre-cropped and resized, then padded like the LR."""
    if not config.gt:
        raise UserError("`keyframes.gt` must name the ground-truth video or frames folder for `keyframes.source=gt`.")
    last = request.num_frames - 1  # a position in the temporal padding shows the last frame
    frames = read_frames(config.gt, sorted({min(index, last) for index in indices}))
    stored = _input_orientation(request)
    return {
        index: fit_keyframe(to_unit_range(stored(frames[min(index, last)])), request.content_hw, request.out_hw,
                            config.resize)
        for index in indices
    }


def _keyframe_method(config: KeyframesConfig, request: KeyframeRequest):
    """The ``keyframes.method`` model, built and loaded on ``request.device``; kept in (and taken
    from) ``request.cache`` under its name, options, scale and device."""
    from vsrkit.registry import METHODS

    if not config.method:
        raise UserError("`keyframes.method` must name a registered method for `keyframes.source=method`.")
    if config.method not in METHODS:
        raise UserError(f"`keyframes.method`: {METHODS.unknown_message(config.method)}")
    device = torch.device(request.device)
    key = ("method", config.method, repr(sorted(config.method_options.items())),
           repr(sorted(config.method_backbone.items())), request.scale, str(device))
    if request.cache is not None and key in request.cache:
        return request.cache[key]
    config_cls = METHODS.get_config(config.method)
    try:
        method_config = config_cls(**config.method_options) if config_cls is not None else None
    except (TypeError, ValueError) as err:
        raise UserError(f"`keyframes.method_options` do not fit method `{config.method}`: {err}") from None
    backbone, dtype = None, torch.float32
    if config.method_backbone:
        from vsrkit.backbones import BackboneConfig
        from vsrkit.backbones.runtime import torch_dtype

        try:
            backbone = BackboneConfig(**config.method_backbone)
        except (TypeError, ValueError) as err:
            raise UserError(f"`keyframes.method_backbone` is not a valid backbone config: {err}") from None
        dtype = torch_dtype(backbone.dtype)
    try:
        method = METHODS.get(config.method)(method_config, backbone=backbone, scale=request.scale)
    except ValueError as err:
        raise UserError(f"`keyframes.method={config.method}`: {err} (set keyframes.method_backbone)") from None
    logger.info("keyframes: loading method %s on %s", config.method, device)
    method.load(device, dtype)
    if request.cache is not None:
        request.cache[key] = method
    return method


def source_method(config: KeyframesConfig, indices: list[int], request: KeyframeRequest) -> dict:
    """Run a registered vsrkit method on each single LR frame (image mode) at the clip's scale.

    The frame is padded to the method's own window rule (frames repeated, spatial padding as its
    ``WindowSpec`` says), upscaled, cropped back, then fitted like any other keyframe image. The
    method loads on ``request.device`` once per ``request.cache`` (once per run), not per clip.
    """
    from vsrkit.methods.protocol import WindowContext

    method = _keyframe_method(config, request)
    spec = method.window_spec()
    device = torch.device(request.device)
    out = {}
    for index in indices:
        lr = _content_lr(request, index).to(device)
        h, w = lr.shape[-2:]
        m = spec.spatial_multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            if spec.pad_mode == "constant":
                lr = F.pad(lr, (0, pad_w, 0, pad_h), value=-1.0)
            else:
                lr = F.pad(lr[None], (0, pad_w, 0, pad_h), mode=spec.pad_mode)[0]
        frames = spec.padded_length(1)
        clip = lr[None, :, None].expand(1, lr.shape[0], frames, *lr.shape[-2:]).contiguous()
        context = WindowContext(frame_start=index, num_valid=1, keyframes={},
                                generator=torch.Generator(device=device).manual_seed(index))
        with torch.no_grad():
            hr = method.upscale(clip, context)
        hr = hr[0, :, 0, : h * request.scale, : w * request.scale]
        out[index] = fit_keyframe(hr, request.content_hw, request.out_hw, config.resize)
    return out


def source_command(config: KeyframesConfig, indices: list[int], request: KeyframeRequest) -> dict:
    """Run an external program per keyframe, e.g. PiSA-SR in its own environment::

        keyframes.command="/envs/pisa/bin/python test_pisasr.py --input_image {input}
            --output_dir {output_dir} --upscale {scale}"

    The LR frame (padding removed) is written as ``{input}`` (PNG); the program must write
    ``{output}`` or exactly one image into ``{output_dir}``. A failing program or a missing
    output is an error (the release silently fell back to the LR frame).
    """
    from vsrkit.io.images import list_images, read_image, write_image

    if not config.command.strip():
        raise UserError("`keyframes.command` must be a command template for `keyframes.source=command`.")
    template = shlex.split(config.command)
    joined = " ".join(template)
    if "{input}" not in joined or ("{output}" not in joined and "{output_dir}" not in joined):
        raise UserError(f"`keyframes.command` must contain {{input}} and {{output}} or {{output_dir}}. "
                        f"Got {config.command!r}.")
    out = {}
    for index in indices:
        with tempfile.TemporaryDirectory(prefix="vsrkit-keyframe-") as tmp:
            tmp_path = Path(tmp)
            input_png = tmp_path / f"frame_{index:05d}.png"
            output_png = tmp_path / "out" / f"frame_{index:05d}.png"
            output_png.parent.mkdir()
            write_image(input_png, to_uint8(_content_lr(request, index)))
            values = {"input": str(input_png), "output": str(output_png), "output_dir": str(output_png.parent),
                      "scale": str(request.scale), "index": str(index)}
            try:
                argv = [token.format(**values) for token in template]
            except (KeyError, IndexError, ValueError) as err:
                raise UserError(f"`keyframes.command` has an unknown field {err}; use {{input}}, {{output}}, "
                                f"{{output_dir}}, {{scale}}, {{index}}.") from None
            logger.info("keyframe %d: running %s", index, " ".join(shlex.quote(a) for a in argv))
            try:
                result = subprocess.run(argv, cwd=config.command_cwd or None, capture_output=True, text=True,
                                        timeout=config.command_timeout_s)
            except FileNotFoundError:
                raise UserError(f"`keyframes.command`: program {argv[0]!r} not found.") from None
            except subprocess.TimeoutExpired:
                raise UserError(f"`keyframes.command` ran longer than keyframes.command_timeout_s="
                                f"{config.command_timeout_s} s for keyframe {index}.") from None
            if result.returncode != 0:
                tail = (result.stderr or result.stdout or "").strip().splitlines()[-1:] or ["(no output)"]
                raise UserError(f"`keyframes.command` failed for keyframe {index} "
                                f"(exit {result.returncode}): {tail[0]}")
            if output_png.is_file():
                produced = output_png
            else:
                written = list_images(output_png.parent)
                if len(written) != 1:
                    raise UserError(
                        f"`keyframes.command` wrote {len(written)} images for keyframe {index}; expected {{output}} "
                        f"({output_png.name}) or exactly one image in {{output_dir}}."
                    )
                produced = written[0]
            image = to_unit_range(read_image(produced))
        out[index] = fit_keyframe(image, request.content_hw, request.out_hw, config.resize)
    return out


# --------------------------------------------------------------------------------------------
# What the engine calls
# --------------------------------------------------------------------------------------------


def prepare_keyframes(
    config: KeyframesConfig,
    *,
    input_path: Optional[str],
    num_frames: int,
    lq_frame: Callable[[int], torch.Tensor],
    out_hw: tuple,
    scale: int,
    content_hw: Optional[tuple] = None,
    device: Any = "cpu",
    cache: Optional[dict] = None,
    padded_frames: Optional[int] = None,
) -> dict:
    """Select keyframes and make their HR images, once per clip.

    The engine calls this when ``method.window_spec().uses_keyframes`` is true, then gives each
    window the keyframes inside it, re-indexed to the window and cropped to the tile, as
    ``WindowContext.keyframes``.

    Args:
        config: The ``keyframes`` config node.
        input_path: The input path (video, frames folder or image); ``None`` for tensors.
        num_frames: Real frames in the clip (temporal padding excluded).
        lq_frame: ``lq_frame(i) -> (C, h, w)`` float32 in [-1, 1]: input frame ``i`` spatially
            padded as the engine pads it for the method, so ``(h * scale, w * scale) == out_hw``.
        out_hw: Padded output size ``(H, W)``.
        scale: Upscaling factor.
        content_hw: Output size of the real content (input size times scale); default ``out_hw``.
        device: Device of the returned tensors (and of ``method`` sources' runs).
        cache: Per-run store for what sources load (see :class:`KeyframeRequest`); pass the same
            dict for every clip of a run so a keyframe model loads once.
        padded_frames: The clip's length padded to the method's frame rule
            (``WindowSpec.padded_length(num_frames)``); the selector works on it when
            ``config.length == "padded"``. Default ``num_frames``.

    Returns:
        ``{global frame index: (C, *out_hw) float32 tensor in [-1, 1]}``; empty for
        ``source=none``. Indices are sorted, at least ``min_gap`` apart, in ``[0, num_frames)``,
        or in ``[0, padded_frames)`` with ``length=padded``.

    Raises:
        UserError: Unknown selector/source, bad indices, or a source that cannot deliver.
    """
    from vsrkit.builtins import register_builtins
    from vsrkit.registry import KEYFRAME_SELECTORS, KEYFRAME_SOURCES

    register_builtins()
    content_hw = tuple(content_hw or out_hw)
    out_hw = tuple(out_hw)
    for key, name, registry in (("selector", config.selector, KEYFRAME_SELECTORS),
                                ("source", config.source, KEYFRAME_SOURCES)):
        if name not in registry:
            raise UserError(f"`keyframes.{key}`: {registry.unknown_message(name)}")
    if config.source == "none":
        return {}
    select = KEYFRAME_SELECTORS.get(config.selector)
    span = max(num_frames, padded_frames or num_frames) if config.length == "padded" else num_frames
    try:
        indices = check_indices(select(config, num_frames=span, input_path=input_path), span,
                                config.min_gap, key=f"keyframes (selector {config.selector})")
    except UserError as err:
        if span == num_frames:
            raise
        raise UserError(f"{err} ({num_frames} real frames, {span} with the method's padding, which "
                        f"keyframes.length=padded selects on; keyframes.length=real uses the real frames)") from None
    logger.info("keyframes: selector %s chose %s; source %s", config.selector, indices, config.source)
    last = num_frames - 1
    request = KeyframeRequest(input_path=input_path, num_frames=num_frames,
                              lq_frame=lambda index: lq_frame(min(int(index), last)),
                              content_hw=content_hw, out_hw=out_hw, scale=scale, device=device, cache=cache)
    made = KEYFRAME_SOURCES.get(config.source)(config, indices, request)
    keyframes = {}
    for index in indices:
        if index not in made:
            raise UserError(f"keyframe source `{config.source}` made no image for frame {index}.")
        image = made[index]
        if image.ndim != 3 or tuple(image.shape[-2:]) != out_hw:
            raise ValueError(f"keyframe source `{config.source}` returned shape {tuple(image.shape)} for frame "
                             f"{index}; expected (C, {out_hw[0]}, {out_hw[1]}).")
        keyframes[index] = image.to(device=device, dtype=torch.float32).clamp(-1.0, 1.0)
    return keyframes


# --------------------------------------------------------------------------------------------
# Per window (what vsrkit.engine.inference.upscale_stream hands each window)
# --------------------------------------------------------------------------------------------


def keyframes_in_window(keyframes: dict, start: int, stop: int, num_frames: int, padded_stop: int) -> dict:
    """The clip's keyframes that belong to the window of real frames ``[start, stop)``.

    A keyframe at a position in the clip's temporal padding (``index >= num_frames``, chosen on
    the padded length) belongs to the last window (``stop == num_frames``): at its own index when
    that lies in the window's padding (``< padded_stop``; always so when window starts are
    multiples of 8 for an 8k+1 rule), else at the window's last padded frame, which shows the same
    last real frame.

    Args:
        keyframes: ``{global frame index: image}``.
        start: The window's first frame.
        stop: One past its last real frame.
        num_frames: Real frames in the clip.
        padded_stop: ``start`` plus the window's padded length.

    Returns:
        ``{global index: image}`` (the same image objects).
    """
    inside = {k: v for k, v in keyframes.items() if start <= k < stop}
    if stop >= num_frames:
        for index in sorted(k for k in keyframes if k >= num_frames):
            inside.setdefault(min(index, padded_stop - 1), keyframes[index])
    return inside


class KeyframeCarry:
    """Pseudo-keyframes carried from window to window (``WindowSpec.carry_keyframes``).

    SparkVSR conditions a window only through keyframes inside it, so with one keyframe at frame 0
    every later window would run blind (the release avoids windows: it runs the clip whole). After
    a window that had keyframes (real or carried), :meth:`remember` keeps its output at the next
    window's first frame, which lies in the overlap; :meth:`add` gives that frame to the next
    window as a keyframe at its local index 0 (latent slot 0, where the release's training always
    put a keyframe), unless a real keyframe already lies in that window's first ``slot_frames``
    frames. One frame is held at a time.

    Args:
        slot_frames: Frames that share a keyframe slot (``WindowSpec.stride_multiple``, 4).
    """

    def __init__(self, slot_frames: int):
        self.slot_frames = max(1, int(slot_frames))
        self.carried: tuple[int, torch.Tensor] | None = None
        self._warned = False

    def slot_free(self, window_keyframes, start: int) -> bool:
        """Whether a window starting at ``start`` with these keyframes (global indices) takes a
        carried frame: no real keyframe lies in its first ``slot_frames`` frames."""
        return not any(start <= k < start + self.slot_frames for k in window_keyframes)

    @staticmethod
    def keeps(window_keyframes, start: int, length: int, next_start: Optional[int]) -> bool:
        """Whether :meth:`remember` keeps a frame of the window ``[start, start + length)`` for the
        window starting at ``next_start``: the window had keyframes (``window_keyframes``: them, or
        a flag) and the two share a frame."""
        return next_start is not None and bool(window_keyframes) and 0 <= next_start - start < length

    def add(self, window_keyframes: dict, start: int) -> dict:
        """``window_keyframes`` (global indices) with the carried frame at ``start`` when its slot is free."""
        if self.carried is None:
            return window_keyframes
        index, image = self.carried
        if index != start or not self.slot_free(window_keyframes, start):
            return window_keyframes
        return {**window_keyframes, start: image}

    def remember(self, output: torch.Tensor, window_keyframes: dict, start: int, next_start: Optional[int]) -> None:
        """Keep ``output`` (``(C, L, H, W)``, the window starting at ``start``) at ``next_start``.

        Nothing is kept after the last window (``next_start is None``), after a window without
        keyframes, or when the windows share no frame (``next_start`` past the window's output).
        """
        self.carried = None
        if next_start is None or not window_keyframes:
            return
        offset = next_start - start
        if not self.keeps(window_keyframes, start, output.shape[1], next_start):
            if not self._warned:
                logger.warning("keyframe carry: consecutive windows share no frame (overlap 0), so no keyframe "
                               "content reaches the next window; set an overlap >= 1.")
                self._warned = True
            return
        self.carried = (next_start, output[:, offset].detach().clone())


def carried_windows(ranges: list, keyframes, num_frames: int, padded_length: Callable[[int], int],
                    slot_frames: int) -> list[bool]:
    """Which windows of a plan take a frame carried from the window before them.

    The same decisions :func:`vsrkit.engine.inference.upscale_stream` makes with a
    :class:`KeyframeCarry`, taken from the keyframe positions alone (no window is run): a window
    takes one when the window before it had keyframes (real or carried), the two share a frame,
    and no real keyframe lies in its first slot. A window that takes none depends on no earlier
    window's output: the carry chain breaks there, and a clip split over processes may start a
    segment there and stay exact.

    Args:
        ranges: The clip's window plan ``[(start, stop), ...]``.
        keyframes: The clip's keyframe indices (a dict's keys are used).
        num_frames: Frames in the clip.
        padded_length: ``frames -> frames`` padded to the method's rule (``WindowSpec.padded_length``).
        slot_frames: ``WindowSpec.stride_multiple`` (see :class:`KeyframeCarry`).

    Returns:
        One flag per window; all False without keyframes.
    """
    positions = dict.fromkeys(keyframes or ())
    rules = KeyframeCarry(slot_frames)
    flags: list[bool] = []
    carried_to: Optional[int] = None  # the window start a carried frame is held for
    for index, (start, stop) in enumerate(ranges):
        real = keyframes_in_window(positions, start, stop, num_frames, start + padded_length(stop - start))
        takes = carried_to == start and rules.slot_free(real, start)
        flags.append(takes)
        conditioned = bool(real) or takes
        next_start = ranges[index + 1][0] if index + 1 < len(ranges) else None
        carried_to = next_start if rules.keeps(conditioned, start, stop - start, next_start) else None
    return flags
