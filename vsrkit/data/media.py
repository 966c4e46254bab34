"""Random access to training media: a clip of ``count`` frames from ``start`` without decoding the
whole file (PyAV seek to the keyframe before ``start``, then decode forward), frames folders,
single images, and a lossless MKV writer for test sets.

:mod:`vsrkit.io` streams whole inputs for inference; training needs short random clips in
dataloader workers, hence this seek-based reader. Pixels go through :mod:`vsrkit.io`'s own
conversions (colour tags honoured, images read by :func:`vsrkit.io.read_image`), and the file
lists are its lists. Frames are ``(T, H, W, 3)`` RGB, uint8 (uint16 for sources above 8 bits).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vsrkit.errors import VideoReadError
from vsrkit.io import images as io_images
from vsrkit.io.convert import bit_depth, frame_to_rgb
from vsrkit.io.kinds import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_image, is_video, list_images

__all__ = [
    "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "is_image", "is_video", "list_images", "read_image", "VideoProbe",
    "probe_video", "read_video_clip", "read_frames_clip", "write_lossless_mkv",
]


def read_image(path: Path) -> np.ndarray:
    """An image as ``(H, W, 3)`` RGB: uint8, or uint16 for images above 8 bits (alpha dropped).

    Raises:
        VideoReadError: the file is missing or not a readable image.
    """
    return io_images.read_image(path)


@dataclass(frozen=True)
class VideoProbe:
    """Container facts of a video, without decoding.

    Attributes:
        num_frames: Frame count from the header (or duration x rate); may exceed the frames a
            decoder yields (old_animation_1.mp4 says 79, decodes 71). Readers handle shortfalls.
        height: Frame height.
        width: Frame width.
        rate: Average frame rate (frames per second).
    """

    num_frames: int
    height: int
    width: int
    rate: Fraction


def probe_video(path: Path) -> VideoProbe:
    """Read a video's header.

    Raises:
        VideoReadError: missing file, no video stream, or not a media file.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path} has no video stream.")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            count = int(stream.frames or 0)
            if count <= 0 and stream.duration is not None and stream.time_base is not None:
                count = int(round(float(stream.duration * stream.time_base * rate)))
            if count <= 0 and container.duration:
                count = int(round(container.duration / av.time_base * float(rate)))
            if count <= 0:  # no usable header: count by decoding (rare, small files)
                count = sum(1 for _ in container.decode(stream))
            return VideoProbe(count, stream.codec_context.height, stream.codec_context.width, Fraction(rate))
    except av.FFmpegError as err:
        raise VideoReadError(f"cannot open video {path}: {err}") from None


def read_video_clip(path: Path, start: int, count: int) -> np.ndarray:
    """Decode ``count`` frames from frame index ``start`` (fewer if the video ends first).

    Seeks to the keyframe at or before ``start / rate`` and decodes forward, dropping frames
    earlier than the target time; ``start = 0`` decodes from the first frame. Only the decoded
    span is held in memory. The index maps to time through the average rate, so on files whose
    timestamps are irregular (old_animation_1.mp4) ``start`` is approximate; the result is still
    consecutive frames and the same for the same arguments.

    Args:
        path: Video file.
        start: Index of the first frame (at the stream's average rate).
        count: Frames wanted.

    Returns:
        ``(n, H, W, 3)`` RGB with ``n <= count`` (``n = 0`` if ``start`` is past the end): uint8,
        or uint16 for videos above 8 bits.
    """
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            target = None
            if start > 0:
                rate = stream.average_rate or stream.guessed_rate or Fraction(25)
                tb = stream.time_base
                origin = stream.start_time or 0
                target = origin + int(round(Fraction(start) / Fraction(rate) / tb))
                tolerance = int(Fraction(1, 2) / Fraction(rate) / tb)
                container.seek(target, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if target is not None and frame.pts is not None and frame.pts < target - tolerance:
                    continue
                frames.append(frame_to_rgb(frame, high_bit_depth=bit_depth(frame.format) > 8))
                if len(frames) >= count:
                    break
    except av.FFmpegError as err:
        raise VideoReadError(f"cannot decode video {path}: {err}") from None
    if not frames:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    return np.stack(frames)


def read_frames_clip(files: list[Path], start: int, count: int) -> np.ndarray:
    """``count`` images of a frames folder from index ``start`` as ``(n, H, W, 3)`` uint8."""
    chosen = files[start:start + count]
    if not chosen:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    frames = [read_image(p) for p in chosen]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise VideoReadError(f"frames in {chosen[0].parent} differ in size: {sorted(shapes)}.")
    return np.stack(frames)


def write_lossless_mkv(path: Path, frames: np.ndarray, rate: int = 25) -> None:
    """Write ``(T, H, W, 3)`` uint8 (or uint16) RGB frames as a bit-exact FFV1 MKV, atomically
    (:class:`vsrkit.io.VideoWriter`: a temporary file published under ``path``; an existing
    ``path`` is replaced, as test-set tools rebuild their outputs).

    Args:
        path: Output ``.mkv`` file.
        frames: The frames.
        rate: Frame rate written in the container.
    """
    from vsrkit.io import VideoWriter

    with VideoWriter(path, width=frames.shape[2], height=frames.shape[1], fps=rate, codec="ffv1",
                     overwrite=True) as writer:
        writer.write(np.ascontiguousarray(frames))
