"""File-level inference: read an input, stream it through a method, write the output atomically.

Used by ``vsrkit infer`` and ``vsrkit bench``. The output keeps the input's frame count, exact
frame rate and timestamps, and audio (see :mod:`vsrkit.io`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import torch

from vsrkit.engine.inference import WindowRunner, model_to_frames, upscale_stream
from vsrkit.engine.progress import InferProgress
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


def parse_fps(text: str) -> Fraction:
    try:
        fps = Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        raise UserError(f"`io.frames_fps` must be a number or a fraction like 24000/1001. Got {text}.") from None
    if fps <= 0:
        raise UserError(f"`io.frames_fps` must be > 0. Got {text}.")
    return fps


def open_writer(dst: Path, info, scale: int, io_cfg: IOConfig, overwrite: bool, src: Path, capped: bool = False,
                names: list[str] | None = None):
    """The writer for ``dst``: a video file, an image, or a frames folder (no suffix) whose files are
    called ``names`` (the input frames' names) when given."""
    from vsrkit.io import FramesWriter, VideoWriter, is_video

    width, height = info.width * scale, info.height * scale
    if is_video(dst):
        fps = info.fps if info.fps is not None else parse_fps(io_cfg.frames_fps)
        return VideoWriter(
            dst, width=width, height=height, fps=fps,
            time_base=info.time_base if info.kind == "video" else None,
            codec=io_cfg.codec, crf=io_cfg.crf, pix_fmt=io_cfg.pix_fmt,
            audio_from=src if (io_cfg.audio and info.has_audio) else None, trim_audio=capped, overwrite=overwrite,
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


def keyframes_from_config(node, scale: int, gt_path: str | Path | None = None):
    """``(source, num_frames) -> {frame index: (3, H*s, W*s) tensor}`` for ``upscale_file``.

    Args:
        node: The ``keyframes`` config node (:class:`vsrkit.engine.keyframes.KeyframesConfig`).
        scale: Upscaling factor.
        gt_path: Ground truth of the clip (``bench``), used by ``source=gt`` when
            ``keyframes.gt`` is empty.
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

    def make(source, num_frames: int) -> dict:
        from vsrkit.io import open_source

        info = source.info

        def lq_frame(index: int) -> torch.Tensor:
            # Keyframes are few: decoding up to each one again keeps memory flat.
            for chunk in open_source(info.path).chunks(16, max_frames=index + 1):
                if chunk.start + len(chunk.frames) > index:
                    return frames_to_model(chunk.frames[index - chunk.start][None])[0, :, 0]
            raise UserError(f"`{info.path}` has no frame {index}.")

        out_hw = (info.height * scale, info.width * scale)
        return prepare_keyframes(config, input_path=str(info.path), num_frames=num_frames, lq_frame=lq_frame,
                                 out_hw=out_hw, scale=scale)

    return make


def upscale_file(runner: WindowRunner, src: Path, dst: Path, *, io_cfg: IOConfig, overwrite: bool,
                 max_frames: int | None, decode_chunk: int, keyframes_for=None, progress: bool = True) -> FileStats:
    """Upscale one input file or frames folder into ``dst``.

    Args:
        runner: The window runner (method, spec, device).
        src: Video file, frames folder or image.
        dst: Output path (kind chosen by its suffix).
        io_cfg: Output settings.
        overwrite: Replace an existing ``dst``.
        max_frames: Stop after this many input frames.
        decode_chunk: Frames decoded at a time.
        keyframes_for: Optional callable ``(source, num_frames) -> {frame index: (3, H*s, W*s) tensor}``
            for methods whose spec uses keyframes.
        progress: Show progress (a bar on a terminal, else a log line every 10 s): window, tile, the
            method's stage, fps and ETA.
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
    num_frames = info.num_frames if max_frames is None else min(info.num_frames, max_frames)
    keyframes = keyframes_for(source, num_frames) if keyframes_for is not None else None
    scale = runner.spec.scale
    runner.progress = InferProgress(num_frames, f"{src.name} -> {dst.name}", enabled=progress)
    device = runner.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    written = 0
    try:
        with open_writer(dst, info, scale, io_cfg, overwrite, src, capped=num_frames < info.num_frames,
                         names=source.frame_names()) as writer:
            chunks = source.chunks(decode_chunk, max_frames=num_frames)
            for frames, pts in upscale_stream(runner, chunks, num_frames, keyframes):
                writer.write(model_to_frames(frames, info.dtype), pts=None if pts and pts[0] is None else pts)
                written += frames.shape[1]
    finally:
        runner.progress.close()
        runner.progress = None
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    logger.debug("%s: %d frames in %.2f s (%.3f s/frame) -> %s", src, written, seconds, seconds / max(written, 1), dst)
    return FileStats(str(src), str(dst), written, seconds, int(peak), notes)


def validation_hook(config, scale: int):
    """``validate(method, step) -> {metric: mean}`` for :func:`vsrkit.engine.train.run_training`.

    Upscales the first ``config.max_frames`` frames of ``config.lq`` with the method being trained
    (the engine's windows and padding, no file written) and scores them against ``config.gt``.
    """
    import numpy as np

    from vsrkit.engine.inference import WindowRunner, model_to_frames, upscale_stream
    from vsrkit.io import open_source
    from vsrkit.metrics.aggregate import build_metrics, evaluate_pair

    metrics = build_metrics(config.metrics)
    lq_source, gt_source = open_source(config.lq), open_source(config.gt)
    num_frames = min(lq_source.info.num_frames, config.max_frames)

    def validate(method, step: int) -> dict:
        device = next((p.device for p in method.trainable_parameters()), torch.device("cpu"))
        runner = WindowRunner(method, method.window_spec(), device)
        chunks = lq_source.chunks(16, max_frames=num_frames)
        pred = (model_to_frames(out, np.uint8) for out, _ in upscale_stream(runner, chunks, num_frames))
        gt = (c.frames for c in gt_source.chunks(16, max_frames=num_frames))
        scores = evaluate_pair(pred, gt, metrics, name=f"step {step}")
        return {k: float(v) for k, v in scores.mean.items()}

    return validate
