"""File-level inference: read an input, stream it through a method, write the output atomically.

Used by ``vsrkit infer`` and ``vsrkit bench``. The output keeps the input's frame count, exact
frame rate and timestamps, and audio (see :mod:`vsrkit.io`).
"""

from __future__ import annotations

import bisect
import logging
import re
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import torch

from vsrkit.engine.inference import WindowRunner, model_to_frames
from vsrkit.engine.progress import InferProgress
from vsrkit.engine.streaming import is_streaming, upscale_frames
from vsrkit.engine.settings import IOConfig
from vsrkit.errors import UserError, VideoReadError

logger = logging.getLogger(__name__)


@dataclass
class FileStats:
    """What one input cost.

    Args:
        input: Source path.
        output: Written path.
        frames: Frames written.
        seconds: Wall time from the first frame read to the last frame written.
        peak_gpu_bytes: Peak CUDA memory allocated during the file (0 on CPU).
        notes: What the summary must say besides the counts (a truncated input ...).
    """

    input: str
    output: str
    frames: int
    seconds: float
    peak_gpu_bytes: int
    notes: list[str] = field(default_factory=list)

    @property
    def seconds_per_frame(self) -> float:
        return self.seconds / max(self.frames, 1)


_SECONDS = re.compile(r"^(\d+(?:\.\d+)?)s$")
_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


def parse_position(value, key: str) -> tuple[str, int | Fraction] | None:
    """``start`` / ``end`` as the user gave it: ``("frame", index)`` or ``("time", seconds)``.

    A frame index is an integer (``120``); a time has a unit or a clock: ``4.5s``, ``1:02.5``,
    ``00:01:02.5``. None stays None.

    Raises:
        UserError: Anything else (a bare decimal is ambiguous: frames or seconds?).
    """
    if value is None:
        return None
    text = str(value).strip()
    if isinstance(value, int) and not isinstance(value, bool) or text.isdigit():
        if int(text) < 0:
            raise UserError(f"`{key}` must be >= 0. Got {value}.")
        return "frame", int(text)
    seconds = _SECONDS.match(text)
    if seconds:
        return "time", Fraction(seconds.group(1))
    clock = _CLOCK.match(text)
    if clock:
        hours, minutes, secs = clock.groups()
        return "time", Fraction(int(hours or 0) * 3600 + int(minutes) * 60) + Fraction(secs)
    raise UserError(f"`{key}` must be a frame index (120) or a time (4.5s, 1:02.5, 00:01:02.5). Got {value!r}.")


@dataclass(frozen=True)
class FrameRange:
    """Frames ``[start, stop)`` of a source that a run processes.

    Args:
        start: Index of the first frame (decoding order).
        stop: Index after the last frame.
        total: Frames the source has.
    """

    start: int
    stop: int
    total: int

    @property
    def count(self) -> int:
        return self.stop - self.start

    @property
    def is_whole(self) -> bool:
        return self.start == 0 and self.stop == self.total


def frame_range(source, start=None, end=None, max_frames: int | None = None) -> FrameRange:
    """The frames of ``source`` a run processes: the one place where a requested range becomes indices.

    Args:
        source: A :class:`vsrkit.io.FrameSource` (its frame count and timestamps are used).
        start: First frame: an index, or a time (``4.5s``, ``1:02.5``) meaning the first frame
            shown at or after it (times count from the first frame). None: frame 0.
        end: Where to stop, exclusive, in the same forms; past the end means the end. None: the end.
        max_frames: At most this many frames from ``start``.

    Raises:
        UserError: A malformed position, a start at or past the end, or an end not after the start.
    """
    info = source.info
    total = info.num_frames
    times: list[Fraction] | None = None

    def index(value, key: str) -> int:
        nonlocal times
        kind, position = parse_position(value, key)
        if kind == "frame":
            return int(position)
        if times is None:
            pts = source.frame_pts() or [0]
            if info.time_base is None:
                raise UserError(f"`{key}={value}` is a time but {info.path} has no timestamps (an image); "
                                f"give a frame index.")
            times = [(p - pts[0]) * info.time_base for p in pts]
        return bisect.bisect_left(times, position)

    first = index(start, "start") if start is not None else 0
    stop = min(index(end, "end"), total) if end is not None else total
    if max_frames is not None:
        stop = min(stop, first + max_frames)
    if first >= total:
        raise UserError(f"`start={start}` is at or past the end of {info.path}, which has {total} frames.")
    if stop <= first:
        raise UserError(f"`end={end}` must come after `start={start}` (frames {first} to {stop} of {info.path}).")
    return FrameRange(first, stop, total)


def parse_fps(text: str) -> Fraction:
    try:
        fps = Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        raise UserError(f"`io.frames_fps` must be a number or a fraction like 24000/1001. Got {text}.") from None
    if fps <= 0:
        raise UserError(f"`io.frames_fps` must be > 0. Got {text}.")
    return fps


def open_writer(dst: Path, info, scale: int, io_cfg: IOConfig, overwrite: bool, src: Path, capped: bool = False,
                names: list[str] | None = None, audio_start: Fraction | None = None,
                audio_origin: Fraction = Fraction(0)):
    """The writer for ``dst``: a video file, an image, or a frames folder (no suffix) whose files are
    called ``names`` (the input frames' names) when given. Frames are ``scale`` times the input, or
    ``io.output_size`` (:mod:`vsrkit.engine.geometry`, the displayed size: a video keeps the
    input's display matrix). ``audio_start`` / ``audio_origin``: see
    :class:`vsrkit.io.VideoWriter` (a segment's audio)."""
    from vsrkit.engine.geometry import output_hw
    from vsrkit.io import FramesWriter, VideoWriter, is_video

    height, width = output_hw(io_cfg, (info.height * scale, info.width * scale), info.display_matrix)
    if is_video(dst):
        fps = info.fps if info.fps is not None else parse_fps(io_cfg.frames_fps)
        return VideoWriter(
            dst, width=width, height=height, fps=fps,
            time_base=info.time_base if info.kind == "video" else None,
            codec=io_cfg.codec, crf=io_cfg.crf, pix_fmt=io_cfg.pix_fmt,
            audio_from=src if (io_cfg.audio and info.has_audio) else None, trim_audio=capped, overwrite=overwrite,
            audio_start=audio_start, audio_origin=audio_origin,
            colour=info.colour, display_matrix=info.display_matrix,
        )
    if dst.suffix:
        return _ImageWriter(dst, overwrite)
    return FramesWriter(dst, overwrite=overwrite, names=names)


class _ImageWriter:
    """Writes the single frame of an image input (same atomic rules as the other writers)."""

    def __init__(self, path: Path, overwrite: bool):
        self.path, self.overwrite, self.frames = path, overwrite, []

    def __enter__(self):
        return self

    def write(self, frames, pts=None) -> None:
        self.frames.extend(list(frames))

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            from vsrkit.io import write_image

            if len(self.frames) != 1:
                raise UserError(f"output `{self.path}` is an image but the input has {len(self.frames)} frames; "
                                f"give a video file or a folder as output.")
            write_image(self.path, self.frames[0], overwrite=self.overwrite)


def keyframes_from_config(node, scale: int, gt_path: str | Path | None = None, device: torch.device | str = "cpu",
                          cache: dict | None = None, padded_length=None):
    """``(source, num_frames, first) -> {frame index: (3, H*s, W*s) tensor}`` for ``upscale_file``
    (indices count from ``first``, the first frame the run processes).

    Args:
        node: The ``keyframes`` config node (:class:`vsrkit.engine.keyframes.KeyframesConfig`).
        scale: Upscaling factor.
        gt_path: Ground truth of the clip (``bench``), used by ``source=gt`` when
            ``keyframes.gt`` is empty.
        device: ``engine.device``: where keyframes are made (a ``source=method`` model runs there).
        cache: Per-run store for loaded keyframe models; pass one dict for every clip of a run
            (default: a new one, shared by the clips this function's result is used for).
        padded_length: ``frames -> frames padded to the method's rule`` (``WindowSpec.padded_length``),
            the clip length ``keyframes.length=padded`` selects on; ``None``: no padding.
    """
    import dataclasses

    from vsrkit.engine.build import to_dataclass
    from vsrkit.engine.inference import frames_to_model
    from vsrkit.engine.keyframes import prepare_keyframes

    config = to_dataclass(node, "keyframes")
    if config.selector == "manual" and config.source != "none":
        # Catch bad indices before any weights load (the clip length is checked per clip later).
        from vsrkit.engine.keyframes import check_indices

        check_indices(config.indices, 2**31, config.min_gap, key="keyframes.indices")
    if gt_path is not None and not config.gt:
        config = dataclasses.replace(config, gt=str(gt_path))
    cache = {} if cache is None else cache

    def make(source, num_frames: int, first: int = 0) -> dict:
        """Keyframes of the clip's frames ``[first, first + num_frames)``, indexed from ``first``."""
        from vsrkit.io import open_source

        info = source.info
        if first and (config.selector == "iframes" or config.source == "gt"):
            raise UserError(f"`keyframes.selector={config.selector}` / `keyframes.source={config.source}` index the "
                            f"whole input, so they do not combine with `start`; use keyframes.selector=manual "
                            f"with indices counted from `start`.")

        def lq_frame(index: int) -> torch.Tensor:
            # Keyframes are few: decoding up to each one again keeps memory flat.
            wanted = first + index
            for chunk in open_source(info.path).chunks(16, max_frames=wanted + 1):
                if chunk.start + len(chunk.frames) > wanted:
                    return frames_to_model(chunk.frames[wanted - chunk.start][None])[0, :, 0]
            raise UserError(f"`{info.path}` has no frame {wanted}.")

        out_hw = (info.height * scale, info.width * scale)
        padded = padded_length(num_frames) if padded_length is not None else num_frames
        return prepare_keyframes(config, input_path=str(info.path), num_frames=num_frames, lq_frame=lq_frame,
                                 out_hw=out_hw, scale=scale, device=device, cache=cache, padded_frames=padded)

    return make


@dataclass
class OpenedInput:
    """One input opened for a run: the frames it processes, their keyframes, and how its output
    is written. Made by :func:`open_input`; :func:`upscale_file` and
    :func:`vsrkit.engine.distributed.upscale_file_split` run it.

    Args:
        path: The input.
        source: Its :class:`vsrkit.io.FrameSource`.
        span: The frames the run processes (``start`` / ``end`` / ``max_frames``).
        notes: What the summary line must say (a truncated input, a range).
        keyframes: ``{frame index counted from span.start: (3, H*s, W*s) tensor}`` or None.
        pts_offset: Subtracted from the source's timestamps (a range starts at the source's
            first timestamp).
        audio_start: See :class:`vsrkit.io.VideoWriter` (None: from the start).
        audio_origin: See :class:`vsrkit.io.VideoWriter`.
        names: The input frames' file names (a frames folder), else None.
    """

    path: Path
    source: object
    span: FrameRange
    notes: list[str]
    keyframes: dict | None
    pts_offset: int
    audio_start: Fraction | None
    audio_origin: Fraction
    names: list[str] | None

    @property
    def info(self):
        return self.source.info

    def chunks(self, size: int, first: int = 0, stop: int | None = None):
        """The source's chunks of frames ``[first, stop)`` of the span (indices counted from
        ``span.start``; None: to the span's end)."""
        stop = self.span.count if stop is None else stop
        return self.source.chunks(size, max_frames=stop - first, first=self.span.start + first)

    def output_pts(self, pts: list | None) -> list | None:
        """Timestamps for the writer: shifted to the output's clock, None when the source has none."""
        if not pts or pts[0] is None:
            return None
        return [p - self.pts_offset for p in pts]

    def output_geometry(self, scale: int, io_cfg: IOConfig):
        """What turns the method's frames (``scale`` times the input) into the written ones
        (``io.output_size``), or None when they are written as they are."""
        from vsrkit.engine.geometry import output_geometry

        return output_geometry(io_cfg, (self.info.height * scale, self.info.width * scale), self.info.display_matrix)

    def open_writer(self, dst: Path, scale: int, io_cfg: IOConfig, overwrite: bool):
        """The writer of ``dst`` (:func:`open_writer`) for this span: frame names, audio cut to match."""
        span = self.span
        return open_writer(dst, self.info, scale, io_cfg, overwrite, self.path, capped=not span.is_whole,
                           names=self.names[span.start:span.stop] if self.names else None,
                           audio_start=self.audio_start, audio_origin=self.audio_origin)


def open_input(src: Path, io_cfg: IOConfig, *, max_frames: int | None = None, start=None, end=None,
               keyframes_for=None) -> OpenedInput:
    """Open one input for a run: a truncated input is refused (``io.on_truncated=error``) or
    noted, the range is resolved and its keyframes are made. Everything here happens before the
    first frame is upscaled, and every process of a split run does the same.

    Args:
        src: Video file, frames folder or image.
        io_cfg: The ``io`` settings.
        max_frames: At most this many frames (counted from ``start``).
        start: First frame, an index or a time (see :func:`frame_range`).
        end: Frame or time to stop before.
        keyframes_for: See :func:`upscale_file`.

    Raises:
        VideoReadError: A truncated input with ``io.on_truncated=error``.
        UserError: A bad range.
    """
    from vsrkit.io import open_source

    source = open_source(src, frames_fps=parse_fps(io_cfg.frames_fps))
    info = source.info
    notes = []
    if info.truncated:
        if io_cfg.on_truncated == "error":
            raise VideoReadError(f"Input {src} is {info.truncated}. Nothing was written (io.on_truncated=error); "
                                 f"repair or re-download it, or set io.on_truncated=keep to upscale what decodes.")
        logger.warning("%s: %s; upscaling the %d frames that decode (io.on_truncated=error refuses such inputs)",
                       src, info.truncated, info.num_frames)
        notes.append(f"input {info.truncated}")
    span = frame_range(source, start, end, max_frames)
    if span.start or (start is not None or end is not None) and not span.is_whole:
        notes.append(f"frames {span.start}-{span.stop - 1} of {span.total}")
    keyframes = keyframes_for(source, span.count, span.start) if keyframes_for is not None else None
    # A segment keeps the source's clock origin: its first frame gets the source's first timestamp,
    # and the audio from the segment's start moves with it.
    all_pts = source.frame_pts() if span.start else None
    return OpenedInput(
        path=Path(src), source=source, span=span, notes=notes, keyframes=keyframes,
        pts_offset=all_pts[span.start] - all_pts[0] if all_pts else 0,
        audio_start=all_pts[span.start] * info.time_base if all_pts and info.time_base else None,
        audio_origin=all_pts[0] * info.time_base if all_pts and info.time_base else Fraction(0),
        names=source.frame_names(),
    )


def upscale_file(runner: WindowRunner, src: Path, dst: Path, *, io_cfg: IOConfig, overwrite: bool,
                 max_frames: int | None, decode_chunk: int, keyframes_for=None, progress: bool = True,
                 start=None, end=None) -> FileStats:
    """Upscale one input file or frames folder (or a range of its frames) into ``dst``.

    Args:
        runner: The window runner (method, spec, device).
        src: Video file, frames folder or image.
        dst: Output path (kind chosen by its suffix).
        io_cfg: Output settings.
        overwrite: Replace an existing ``dst``.
        max_frames: Stop after this many input frames (counted from ``start``).
        decode_chunk: Frames decoded at a time.
        keyframes_for: Optional callable ``(source, num_frames, first) -> {frame index: (3, H*s, W*s)
            tensor}`` for methods whose spec uses keyframes (indices count from ``first``).
        progress: Show progress (a bar on a terminal, else a log line every 10 s): window, tile, the
            method's stage, fps and ETA.
        start: First frame to process: an index or a time (see :func:`frame_range`); None: 0.
        end: Frame or time to stop before; None: the end. A segment's output starts at the
            source's first timestamp and its audio is cut to match.
    """
    from vsrkit.engine.overlap import BackgroundWriter, Prefetcher

    job = open_input(src, io_cfg, max_frames=max_frames, start=start, end=end, keyframes_for=keyframes_for)
    info, num_frames = job.info, job.span.count
    runner.progress = InferProgress(num_frames, f"{src.name} -> {dst.name}", enabled=progress)
    device = runner.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    written = 0
    streaming = is_streaming(runner.method)
    geometry = job.output_geometry(runner.spec.scale, io_cfg)
    try:
        # Decoding and encoding run in their own threads beside the method (vsrkit.engine.overlap).
        with job.open_writer(dst, runner.spec.scale, io_cfg, overwrite) as writer, BackgroundWriter(writer) as sink, \
                Prefetcher(job.chunks(decode_chunk)) as chunks:
            for frames, pts in upscale_frames(runner, chunks, num_frames, job.keyframes, overlap_stages=False,
                                              on_stage=runner.progress.stage):
                if geometry is not None:
                    frames = geometry(frames)
                sink.write(model_to_frames(frames, info.dtype), pts=job.output_pts(pts))
                written += frames.shape[1]
                if streaming:  # windowed runs report finished frames from upscale_stream
                    runner.progress.frames_finished(written)
    finally:
        runner.progress.close()
        runner.progress = None
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    logger.debug("%s: %d frames in %.2f s (%.3f s/frame) -> %s", src, written, seconds, seconds / max(written, 1), dst)
    return FileStats(str(src), str(dst), written, seconds, int(peak), job.notes)


def summary_line(stats: FileStats, notes: list[str] = ()) -> str:
    """The line ``vsrkit infer`` prints for one output: counts, time, the file's notes and ``notes``
    (a run's notes: random weights, the processes used)."""
    return (f"{stats.output}: {stats.frames} frames, {stats.seconds:.2f} s ({stats.seconds_per_frame * 1000:.1f} ms/frame)"
            + "".join(f"; {note}" for note in [*stats.notes, *notes]))


def validation_keyframes(config, scale: int, spec, lq_source, num_frames: int) -> dict | None:
    """The keyframes a validation run of a keyframe-conditioned method gets: ``config.gt``'s frames
    at the ``config.keyframes`` selector's indices, made by the same code as ``vsrkit infer``'s
    ``keyframes.source=gt`` (:func:`keyframes_from_config`), on the validated frames padded to the
    method's frame rule. None when the method takes no keyframes or ``validation.keyframes=none``.

    Args:
        config: The ``validation`` settings (:class:`vsrkit.engine.settings.ValidationConfig`).
        scale: Upscaling factor.
        spec: The method's :class:`~vsrkit.methods.protocol.WindowSpec`.
        lq_source: The opened ``config.lq``.
        num_frames: Frames validated (the first ``config.max_frames``).

    Returns:
        ``{frame index: (3, H*s, W*s) float32 tensor in [-1, 1] on the CPU}`` or None.

    Raises:
        UserError: An unknown selector, indices that do not fit the clip, an unreadable ``gt``.
    """
    if not spec.uses_keyframes or config.keyframes == "none":
        return None
    from omegaconf import OmegaConf

    from vsrkit.engine.keyframes import KeyframesConfig

    node = OmegaConf.structured(KeyframesConfig(selector=config.keyframes, source="gt", gt=str(config.gt),
                                                indices=list(config.keyframe_indices)))
    make = keyframes_from_config(node, scale, padded_length=spec.padded_length)
    try:
        return make(lq_source, num_frames, 0)
    except UserError as err:
        raise UserError(f"validation.keyframes={config.keyframes} on the {num_frames} validated frames of "
                        f"{config.lq}: {err}") from None


def validation_hook(config, scale: int, spec=None):
    """``validate(method, step) -> {metric: mean}`` for :func:`vsrkit.engine.train.run_training`.

    Upscales the first ``config.max_frames`` frames of ``config.lq`` with the method being trained
    (the engine's windows and padding, no file written) and scores them against ``config.gt``.
    When ``spec`` (the method's window spec) says the method takes keyframes, the run is
    conditioned on ``config.gt``'s frames at the ``config.keyframes`` indices
    (:func:`validation_keyframes`, made once, here, so a bad setting fails before training).
    """
    import numpy as np

    from vsrkit.engine.inference import WindowRunner, model_to_frames
    from vsrkit.io import open_source
    from vsrkit.metrics.aggregate import build_metrics, evaluate_pair

    metrics = build_metrics(config.metrics)
    lq_source, gt_source = open_source(config.lq), open_source(config.gt)
    num_frames = min(lq_source.info.num_frames, config.max_frames)
    keyframes = validation_keyframes(config, scale, spec, lq_source, num_frames) if spec is not None else None
    if keyframes:
        logger.info("validation: keyframes from %s at frames %s", config.gt, sorted(keyframes))

    def validate(method, step: int) -> dict:
        device = next((p.device for p in method.trainable_parameters()), torch.device("cpu"))
        runner = WindowRunner(method, method.window_spec(), device)
        chunks = lq_source.chunks(16, max_frames=num_frames)
        pred = (model_to_frames(out, np.uint8) for out, _ in upscale_frames(runner, chunks, num_frames, keyframes))
        gt = (c.frames for c in gt_source.chunks(16, max_frames=num_frames))
        scores = evaluate_pair(pred, gt, metrics, name=f"step {step}")
        return {k: float(v) for k, v in scores.mean.items()}

    return validate
