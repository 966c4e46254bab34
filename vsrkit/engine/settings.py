"""Settings of the inference engine and of output writing (the `engine` and `io` config nodes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class EngineConfig:
    """How `vsrkit infer` runs a method over a clip.

    Args:
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        window: Frames per temporal window; ``None`` keeps the method's default. Longer windows
            cost memory, shorter ones more overlap work.
        overlap: Frames shared by consecutive windows and blended; ``None`` keeps the method's.
        tile: Spatial tile edge in input pixels; ``None`` keeps the method's, ``0`` disables tiling.
        tile_overlap: Input pixels shared by neighbouring tiles; ``None`` keeps the method's.
        blend: ``linear`` cross-fades overlaps (no seams) over the middle half of each overlap, the
            outer quarters going wholly to the window or tile whose edge is further away (edges saw
            padding); ``cut`` keeps each window's or tile's centre and hard-cuts at the middle of
            the overlap, as the SparkVSR release does. Either way the weights are normalised over
            all windows covering a frame, so any overlap (also above half the window) is exact.
        decode_chunk: Frames decoded at a time (memory bound of the reader).
        seed: Seed of the generator handed to the method (posterior sampling, random keyframes).
    """

    device: str = "auto"
    window: Optional[int] = None
    overlap: Optional[int] = None
    tile: Optional[int] = None
    tile_overlap: Optional[int] = None
    blend: str = "linear"
    decode_chunk: int = 16
    seed: int = 42

    def __post_init__(self):
        if self.blend not in ("linear", "cut"):
            raise ValueError(f"`engine.blend` must be one of ['linear', 'cut']. Got {self.blend}.")
        for name in ("window", "overlap", "tile", "tile_overlap"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"`engine.{name}` must be >= 0. Got {value}.")
        if self.decode_chunk < 1:
            raise ValueError(f"`engine.decode_chunk` must be >= 1. Got {self.decode_chunk}.")


@dataclass
class IOConfig:
    """How outputs are written.

    Args:
        codec: ``h264`` / ``h265`` (delivery, yuv420p; yuv444p for odd sizes) or ``ffv1``
            (bit-exact lossless RGB in .mkv, for metric inputs and caches).
        crf: Constant rate factor for h264/h265 (lower = better, bigger).
        pix_fmt: Override the encoder pixel format (e.g. ``yuv444p``); ``None`` picks per codec.
        audio: Copy the input's audio track into video outputs.
        frames_fps: Frame rate (a fraction like ``24000/1001`` or a number) used when a frames
            folder or image is written as a video.
        on_truncated: What to do with an input whose decoding stops early (a cut-off download)
            or skips packets the decoder refuses (a damaged file; decoding goes on after them, as
            FFmpeg's does, and their frames are missing): ``keep`` upscales the frames that decode
            and says so in the log and the summary; ``error`` stops with exit status 2 and writes
            nothing.
        output_size: Write frames of exactly this size, ``WIDTHxHEIGHT`` (``1280x720``), instead of
            ``scale`` times the input; the method's output is resized on the device, frame batch by
            frame batch (:mod:`vsrkit.engine.geometry`). The SparkVSR release's
            ``--output_resolution H W``. ``None``: ``scale`` times the input. An odd size needs a
            4:4:4 or RGB output (``io.pix_fmt=yuv444p`` or ``io.codec=ffv1``) for video files.
            It is the size a player shows: a phone's portrait clip, stored as landscape frames
            with a quarter-turn display matrix that the output keeps, takes ``1080x1920``.
        output_fit: How the output reaches ``output_size``: ``crop`` (the release's: scale to cover,
            centre-crop), ``pad`` (scale to fit, centre on black) or ``stretch`` (ignore the aspect).
        output_filter: Interpolation of that resize: ``bilinear`` (the release's ``--upscale_mode``
            default), ``bicubic``, ``area`` or ``nearest``; bilinear/bicubic antialias when shrinking.
    """

    codec: str = "h264"
    crf: int = 18
    pix_fmt: Optional[str] = None
    audio: bool = True
    frames_fps: str = "24"
    on_truncated: str = "keep"
    output_size: Optional[str] = None
    output_fit: str = "crop"
    output_filter: str = "bilinear"

    def __post_init__(self):
        from vsrkit.engine.geometry import FILTERS, FITS, parse_output_size

        parse_output_size(self.output_size)
        if self.output_fit not in FITS:
            raise ValueError(f"`io.output_fit` must be one of {FITS}. Got {self.output_fit}.")
        if self.output_filter not in FILTERS:
            raise ValueError(f"`io.output_filter` must be one of {FILTERS}. Got {self.output_filter}.")
        if self.on_truncated not in ("keep", "error"):
            raise ValueError(f"`io.on_truncated` must be one of ['keep', 'error']. Got {self.on_truncated}.")
        if self.codec not in ("h264", "h265", "ffv1"):
            raise ValueError(f"`io.codec` must be one of ['h264', 'h265', 'ffv1']. Got {self.codec}.")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"`io.crf` must be in [0, 51]. Got {self.crf}.")


@dataclass
class ValidationConfig:
    """Periodic validation of a training run (``train.validate_every`` sets how often).

    Args:
        lq: Low-quality validation clip (video file or frames folder); ``None`` disables validation.
        gt: Its ground truth (same frame count, ``scale`` times the size).
        metrics: Registered metric names scored on the upscaled clip (defaults of each metric).
        max_frames: Frames of the clip used (validation cost grows with it).
        keyframes: For methods that take keyframes (``WindowSpec.uses_keyframes``, e.g. SparkVSR):
            the keyframe selector (``vsrkit.engine.keyframes``) whose frames of ``gt`` condition
            the validation run, the same way ``keyframes.source=gt`` does at inference.
            ``first_middle_last`` (default: the release's ``_select_indices`` on the validated frames
            padded to the method's frame rule, the GT frames its trainers save for validation),
            ``manual`` (``keyframe_indices``), ``random``, or ``none`` (unconditioned; what the
            released trainers' validation loop runs, its index list being empty). Ignored for
            methods without keyframes.
        keyframe_indices: ``keyframes=manual``: 0-based frame indices of the validated frames
            (any two at least 4 apart).
    """

    lq: Optional[str] = None
    gt: Optional[str] = None
    metrics: List[str] = field(default_factory=lambda: ["psnr", "ssim"])
    max_frames: int = 9
    keyframes: str = "first_middle_last"
    keyframe_indices: List[int] = field(default_factory=list)

    def __post_init__(self):
        if (self.lq is None) != (self.gt is None):
            raise ValueError(f"`validation.lq` and `validation.gt` go together. Got lq={self.lq}, gt={self.gt}.")
        if self.max_frames < 1:
            raise ValueError(f"`validation.max_frames` must be >= 1. Got {self.max_frames}.")
        self.metrics = [str(m) for m in self.metrics]
        self.keyframe_indices = [int(i) for i in self.keyframe_indices]
        if self.keyframes == "manual" and not self.keyframe_indices:
            raise ValueError("`validation.keyframe_indices` must list frames for `validation.keyframes=manual`. Got [].")
        if self.keyframe_indices and self.keyframes != "manual":
            raise ValueError(f"`validation.keyframe_indices` is for `validation.keyframes=manual`; "
                             f"got validation.keyframes={self.keyframes}.")


def register_settings_schemas(store) -> None:
    """Store the engine's settings in Hydra's ConfigStore (``schema/engine``, ``schema/io``, ``schema/keyframes``, ``schema/train``)."""
    store.store(group="schema/engine", name="default", node=EngineConfig)
    store.store(group="schema/io", name="default", node=IOConfig)
    store.store(group="schema/validation", name="default", node=ValidationConfig)
    from vsrkit.engine.keyframes import KeyframesConfig

    store.store(group="schema/keyframes", name="default", node=KeyframesConfig)
    from vsrkit.engine.distributed_config import DistributedConfig

    store.store(group="schema/distributed", name="default", node=DistributedConfig)
    from vsrkit.engine.train_config import register_train_schema

    register_train_schema(store)
