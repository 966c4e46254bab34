"""Streaming readers for a video file, a folder of frames, or a single image.

``open_source(path)`` checks the input at once (it decodes the first frame) and returns a
:class:`FrameSource`. ``FrameSource.chunks(size)`` then streams ``(T, H, W, 3)`` RGB arrays
in constant memory: a generator over ``container.decode`` that holds one chunk at a time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vsrkit.errors import UserError, VideoReadError
from vsrkit.io.convert import ColourTags, bit_depth, frame_to_rgb
from vsrkit.io.images import is_image, is_video, list_images, probe_image, read_image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What a source holds.

    Attributes:
        path: The file or folder that was opened.
        kind: ``"video"``, ``"frames"`` (a folder of images) or ``"image"``.
        width: Frame width in pixels.
        height: Frame height in pixels.
        num_frames: Frames the decoder actually yields (for videos counted by decoding, never
            the container header, which can be wrong: old_animation_1.mp4 says 79, yields 71).
        fps: Average frame rate of a video, exact (``Fraction(1199, 50)``); for a frames folder
            the rate given to :func:`open_source` (None if none was given); None for an image.
        time_base: Unit of :attr:`Chunk.pts` (a video stream's time base; ``1 / fps`` for a
            frames folder with a rate); None when there are no timestamps.
        pix_fmt: Pixel format of the decoded frames (``yuv420p``, ``yuvj420p``, ``rgb24`` ...).
        bit_depth: Bits per sample; above 8 the frames come as uint16.
        has_audio: Whether a video has at least one audio stream.
        declared_frames: Frames the container declares (its index or header; None when it does
            not say): may differ from ``num_frames`` legitimately (edit lists, a wrong header).
        truncated: Why decoding stopped before the end of the stream (a packet cut short by the
            end of the file, the file ending before the packets its index lists, a decode
            error), in one line with both counts; None when decoding reached the end.
        colour: The video's colour description (matrix, primaries, transfer, range), which
            writers carry to the output; None for frames and images.
        display_matrix: The video's display matrix (9 ints, FFmpeg's ``AV_PKT_DATA_DISPLAYMATRIX``
            layout: rotation and flips a player applies), carried to video outputs; None if absent.
    """

    path: Path
    kind: str
    width: int
    height: int
    num_frames: int
    fps: Fraction | None
    time_base: Fraction | None
    pix_fmt: str
    bit_depth: int
    has_audio: bool
    declared_frames: int | None = None
    truncated: str | None = None
    colour: ColourTags | None = None
    display_matrix: tuple[int, ...] | None = None

    @property
    def dtype(self) -> np.dtype:
        """``uint16`` for sources above 8 bits, else ``uint8``: the dtype of the chunks."""
        return np.dtype(np.uint16 if self.bit_depth > 8 else np.uint8)


@dataclass
class Chunk:
    """A run of consecutive frames.

    Attributes:
        frames: ``(T, H, W, 3)`` RGB, uint8 in [0, 255] (uint16 in [0, 65535] for sources
            above 8 bits).
        pts: Source timestamp of each frame in units of ``VideoInfo.time_base`` (frame index
            for a frames folder), strictly increasing (missing or repeated ones are numbered
            at the stream rate); None for an image.
        start: Index of the first frame in decoding order (0-based, over the whole source).
    """

    frames: np.ndarray
    pts: list[int] | None
    start: int

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class _Probe:
    """What the first decoded frame tells (no counting)."""

    width: int
    height: int
    fps: Fraction | None
    time_base: Fraction | None
    pix_fmt: str
    bit_depth: int
    has_audio: bool
    colour: ColourTags | None = None
    display_matrix: tuple[int, ...] | None = None


class FrameSource:
    """A video, frames folder or image opened for streaming. Build it with :func:`open_source`.

    ``width``, ``height``, ``fps``, ``time_base``, ``dtype`` and ``has_audio`` are read from the
    header and cost nothing; ``info`` adds the frame count, which for a video means decoding
    it once (cached). ``chunks()`` never needs the count.
    """

    def __init__(self, path: Path, kind: str, probe: _Probe, frame_files: list[Path] | None = None):
        self.path = path
        self.kind = kind
        self._probe = probe
        self._frame_files = frame_files
        self._info: VideoInfo | None = None
        self._pts: list[int] | None = None

    def __repr__(self) -> str:
        return f"FrameSource({str(self.path)!r}, kind={self.kind!r})"

    # Header facts, known without counting frames (``info`` has them too).
    @property
    def width(self) -> int:
        """Frame width in pixels."""
        return self._probe.width

    @property
    def height(self) -> int:
        """Frame height in pixels."""
        return self._probe.height

    @property
    def fps(self) -> Fraction | None:
        """Frame rate, as :attr:`VideoInfo.fps`."""
        return self._probe.fps

    @property
    def time_base(self) -> Fraction | None:
        """Unit of the chunks' pts, as :attr:`VideoInfo.time_base`."""
        return self._probe.time_base

    @property
    def dtype(self) -> np.dtype:
        """dtype of the chunks' frames: uint16 for sources above 8 bits, else uint8."""
        return np.dtype(np.uint16 if self._probe.bit_depth > 8 else np.uint8)

    @property
    def display_matrix(self) -> tuple[int, ...] | None:
        """A video's display matrix (:mod:`vsrkit.io.orientation`), without counting its frames."""
        return self._probe.display_matrix

    @property
    def has_audio(self) -> bool:
        """Whether a video has an audio stream."""
        return self._probe.has_audio

    @property
    def info(self) -> VideoInfo:
        """Full description. For a video the first access decodes it once to count frames (cached)."""
        if self._info is None:
            report = DecodeReport()
            if self.kind == "video":
                self._pts = self._decode_pts(report)
                count = len(self._pts)
            elif self.kind == "frames":
                count = len(self._frame_files)
            else:
                count = 1
            p = self._probe
            self._info = VideoInfo(
                path=self.path, kind=self.kind, width=p.width, height=p.height, num_frames=count,
                fps=p.fps, time_base=p.time_base, pix_fmt=p.pix_fmt, bit_depth=p.bit_depth,
                has_audio=p.has_audio, declared_frames=report.declared_frames, truncated=report.truncation(),
                colour=p.colour, display_matrix=p.display_matrix,
            )
            if self._info.truncated is None and report.declared_exact and report.declared_frames \
                    and report.declared_frames != count:
                logger.info("%s: the container declares %d frames and %d decode, without a decoding error "
                            "(a header count or an edit list, not truncation)", self.path, report.declared_frames,
                            count)
        return self._info

    def frame_names(self) -> list[str] | None:
        """File names of a frames folder's frames in reading order (None for a video or an image)."""
        return [file.name for file in self._frame_files] if self.kind == "frames" else None

    def frame_pts(self) -> list[int] | None:
        """Timestamp of every frame in ``info.time_base`` units (decodes a video once, cached).

        Returns:
            One int per frame in decoding order: the decoded pts for a video, the frame index for
            a frames folder; None for an image.
        """
        if self.kind == "image":
            return None
        if self.kind == "frames":
            return list(range(len(self._frame_files)))
        if self._pts is None:
            self.info  # noqa: B018 -- counting fills the pts cache
        return list(self._pts)

    def chunks(self, size: int, max_frames: int | None = None, first: int = 0) -> Iterator[Chunk]:
        """Stream the frames in chunks of ``size`` (the last one may be shorter).

        Nothing is decoded before the first chunk is asked for, and only one chunk is held.

        Args:
            size: Frames per chunk, >= 1.
            max_frames: Stop after this many frames (None: all).
            first: Index of the first frame to yield; earlier frames are decoded (a video's
                timestamps need them) but not converted or returned. ``Chunk.start`` counts from
                the source's first frame.

        Yields:
            :class:`Chunk` with ``frames`` ``(T, H, W, 3)`` RGB, uint8 in [0, 255] (uint16 in
            [0, 65535] when ``info.bit_depth > 8``).

        Raises:
            VideoReadError: Decoding failed part way (the message names the frame).
        """
        if size < 1:
            raise ValueError(f"`size` must be >= 1. Got {size}.")
        if max_frames is not None and max_frames < 0:
            raise ValueError(f"`max_frames` must be >= 0 or None. Got {max_frames}.")
        if first < 0:
            raise ValueError(f"`first` must be >= 0. Got {first}.")
        if max_frames == 0:
            return
        frames: list[np.ndarray] = []
        stamps: list[int | None] = []
        start = first
        source = self._iter_frames(first)
        try:
            for array, pts in source:
                frames.append(array)
                stamps.append(pts)
                if len(frames) == size:
                    yield self._chunk(frames, stamps, start)
                    start += len(frames)
                    frames, stamps = [], []
                if max_frames is not None and start - first + len(frames) >= max_frames:
                    break
            if frames:
                yield self._chunk(frames, stamps, start)
        finally:
            source.close()  # closes the container now, also when the caller stops early

    def read(self, max_frames: int | None = None) -> np.ndarray:
        """All frames at once, for short clips, tests and metrics (long videos: use :meth:`chunks`).

        Args:
            max_frames: Stop after this many frames (None: all).

        Returns:
            ``(T, H, W, 3)`` RGB, uint8 in [0, 255] (uint16 in [0, 65535] above 8 bits).
        """
        parts = [chunk.frames for chunk in self.chunks(64, max_frames=max_frames)]
        if not parts:
            return np.zeros((0, self.height, self.width, 3), self.dtype)
        return np.concatenate(parts, axis=0)

    def _chunk(self, frames: list[np.ndarray], stamps: list[int | None], start: int) -> Chunk:
        pts = None if self.kind == "image" else [int(s) for s in stamps]
        return Chunk(frames=np.stack(frames, axis=0), pts=pts, start=start)

    def _iter_frames(self, first: int = 0) -> Iterator[tuple[np.ndarray, int | None]]:
        high = self._probe.bit_depth > 8
        if self.kind == "image":
            if first == 0:
                yield read_image(self.path, high_bit_depth=high), None
            return
        if self.kind == "frames":
            for index, file in enumerate(self._frame_files[first:], start=first):
                array = read_image(file, high_bit_depth=high)
                if array.shape[:2] != (self.height, self.width):
                    raise VideoReadError(
                        f"Frame {file} is {array.shape[1]}x{array.shape[0]}; every frame in "
                        f"{self.path} must be {self.width}x{self.height} like the first."
                    )
                yield array, index
            return
        stamps = _Timestamps(self._probe, self.path)
        for index, frame in enumerate(decode_frames(self.path)):
            self._check_size(frame, index)
            pts = stamps.next(frame.pts)
            if index >= first:
                yield frame_to_rgb(frame, high_bit_depth=high), pts

    def _check_size(self, frame: av.VideoFrame, index: int) -> None:
        if (frame.width, frame.height) != (self.width, self.height):
            raise VideoReadError(
                f"Video {self.path} changes resolution at frame {index}: {frame.width}x{frame.height} after "
                f"{self.width}x{self.height}; vsrkit upscales one size per clip. Split the video where the size "
                f"changes (or scale it to one size) and run each part."
            )

    def _decode_pts(self, report: DecodeReport) -> list[int]:
        stamps = _Timestamps(self._probe, self.path)
        pts = []
        for index, frame in enumerate(decode_frames(self.path, report)):
            self._check_size(frame, index)
            pts.append(stamps.next(frame.pts))
        return pts


class _Timestamps:
    """Makes decoded pts usable as output timestamps: present and strictly increasing.

    Raw streams (.h264, .y4m) carry no pts, and broken files repeat them; a missing or
    non-increasing pts is replaced by the previous one plus one frame at the stream's rate.
    """

    def __init__(self, probe: _Probe, path: Path):
        step = 1
        if probe.fps and probe.time_base:
            step = max(1, round(1 / (probe.fps * probe.time_base)))
        self._step, self._previous, self._path, self._repaired = step, None, path, 0

    def next(self, pts: int | None) -> int:
        if pts is None or (self._previous is not None and pts <= self._previous):
            pts = 0 if self._previous is None else self._previous + self._step
            self._repaired += 1
            if self._repaired == 1:
                logger.warning("%s: missing or repeated timestamps; numbering frames at the stream rate.", self._path)
        self._previous = int(pts)
        return self._previous


def _open_container(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except av.error.FFmpegError as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise VideoReadError(
            f"Video {path} is not a readable video ({reason}); it may be truncated or not a video."
        ) from None


@dataclass
class DecodeReport:
    """How far :func:`decode_frames` got (filled while it runs).

    Attributes:
        declared_frames: Frames the container declares for the stream: its frame count (MP4/MOV
            index), else its duration times the frame rate (Matroska, WebM); None: unknown.
        declared_exact: Whether ``declared_frames`` is a count rather than a duration estimate.
        packets: Video packets demuxed (damaged ones included).
        frames: Frames decoded.
        damaged: Packets the decoder refused. Decoding goes on after them, as FFmpeg's command
            line does, so one damaged packet costs its own frames, not the rest of the file.
        first_damage: Which packet was the first of those, and why (None: none was).
        problem: Why decoding stopped early (None: it reached the end of the stream).
    """

    declared_frames: int | None = None
    declared_exact: bool = True
    packets: int = 0
    frames: int = 0
    damaged: int = 0
    first_damage: str | None = None
    problem: str | None = None

    def declare(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> None:
        """Read what the container says about the stream's length."""
        if stream.frames:
            self.declared_frames, self.declared_exact = int(stream.frames), True
            return
        rate = stream.average_rate or stream.guessed_rate
        seconds = stream.duration * stream.time_base if stream.duration and stream.time_base else \
            (Fraction(container.duration, av.time_base) if container.duration else None)
        if rate and seconds:
            self.declared_frames, self.declared_exact = round(seconds * Fraction(rate)), False

    def truncation(self) -> str | None:
        """One line saying decoding stopped early or skipped damaged packets, with both frame
        counts; None when neither happened."""
        declared = self.declared_frames or None
        problem = self.problem
        if problem is None and declared is not None:
            if self.declared_exact and self.packets < declared:
                problem = f"the file ends after {self.packets} of the {declared} packets its index lists"
            elif not self.declared_exact and self.packets < 0.95 * declared - 2:
                # A duration is a rounded estimate (variable frame rates): only a clear shortfall counts.
                problem = f"the file ends {declared - self.packets} frames before the duration its header gives"
        counts = f"{self.frames} frames decoded, the container declares {declared}" if declared else \
            f"{self.frames} frames decoded"
        damage = None
        if self.damaged:
            packets = "1 packet" if self.damaged == 1 else f"{self.damaged} packets"
            damage = f"{packets} could not be decoded and decoding went on (the first reported at {self.first_damage})"
        if problem is not None:
            return f"truncated: decoding stopped early ({problem}){'; ' + damage if damage else ''}; {counts}"
        if damage is not None:
            return f"damaged: {damage}; {counts}"
        return None

    def refuse(self, error: av.error.FFmpegError) -> None:
        """Count a packet the decoder refused (:attr:`damaged`)."""
        if self.first_damage is None:
            self.first_damage = f"packet {self.packets}: {_reason(error)}"
        self.damaged += 1
        self.packets += 1


def decode_frames(path: str | os.PathLike, report: DecodeReport | None = None) -> Iterator[av.VideoFrame]:
    """Decoded frames of a video's first stream, lazily, with frame+slice threading.

    Decoding stops early, keeping every frame decoded so far (the decoder is flushed), at a
    packet that the end of the file cuts short or at a demuxing error. A packet the decoder
    refuses is skipped and decoding goes on, as FFmpeg's command line does (its frames are
    missing; the frames after it are what FFmpeg shows). ``report`` says what happened, so a
    caller can tell a truncated or damaged file from a complete one.

    Args:
        path: A video file.
        report: Filled with the declared frame count, packets and frames decoded, and why
            decoding stopped early (None: it did not).

    Yields:
        ``av.VideoFrame`` in decoding-output order (no colour conversion).

    Raises:
        VideoReadError: The file cannot be opened.
    """
    path = Path(path)
    report = report if report is not None else DecodeReport()
    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        report.declare(container, stream)
        # Default is SLICE only; AUTO adds frame threading (PyAV cookbook, "Threading").
        stream.thread_type = "AUTO"
        yield from _decode(container, stream, report)
    finally:
        container.close()


def _decode(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
            report: DecodeReport) -> Iterator[av.VideoFrame]:
    """:func:`decode_frames`'s loop on an open container."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets, None)
        except av.error.FFmpegError as err:
            report.problem = f"reading failed after packet {report.packets}: {_reason(err)}"
            break
        if packet is None or packet.dts is None and packet.size == 0:
            break  # end of the stream (PyAV ends with an empty flush packet; the flush is below)
        if packet.is_corrupt:
            # A partial read at the end of the file (or a packet the demuxer marks as damaged):
            # decoding it would give a broken frame, and frame threading drops frames after it.
            report.problem = f"packet {report.packets} is cut short"
            break
        try:
            frames = packet.decode()
        except av.error.FFmpegError as err:
            report.refuse(err)
            continue
        report.packets += 1
        for frame in frames:
            report.frames += 1
            yield frame
    try:
        for frame in stream.decode(None):  # frames the decoder still holds (reordering, threads)
            report.frames += 1
            yield frame
    except av.error.FFmpegError as err:
        report.problem = report.problem or f"flushing the decoder failed: {_reason(err)}"


def _reason(err: av.error.FFmpegError) -> str:
    return getattr(err, "strerror", None) or str(err)


def _display_matrix(frame: av.VideoFrame) -> tuple[int, ...] | None:
    for side_data in frame.side_data:
        if side_data.type.name == "DISPLAYMATRIX":
            return tuple(int(v) for v in np.frombuffer(bytes(side_data), dtype="<i4")[:9])
    return None


def _probe_video(path: Path) -> _Probe:
    container = _open_container(path)
    try:
        if not container.streams.video:
            raise VideoReadError(f"Video {path} is not a readable video: it has no video stream.")
        stream = container.streams.video[0]
        has_audio = bool(container.streams.audio)
        report = DecodeReport()
        # The same loop as reading, so a packet the decoder refuses is skipped here too.
        first = next(_decode(container, stream, report), None)
        if first is None:
            reason = report.problem or report.first_damage
            raise VideoReadError(f"Video {path} has no decodable video frames{f' ({reason})' if reason else ''}.")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return _Probe(
            width=first.width,
            height=first.height,
            fps=Fraction(rate) if rate else None,
            time_base=Fraction(stream.time_base) if stream.time_base else None,
            pix_fmt=first.format.name,
            bit_depth=bit_depth(first.format),
            has_audio=has_audio,
            colour=ColourTags.of(first),
            display_matrix=_display_matrix(first),
        )
    finally:
        container.close()


def open_source(path: str | os.PathLike, frames_fps: Fraction | int | None = None) -> FrameSource:
    """Open a video file, a folder of frames, or a single image for streaming.

    The input is checked at once: a missing path, a file that is not a video, a truncated
    file, a video with no decodable frame, an empty folder or an unreadable first image raise
    here, not in the middle of a run.

    Args:
        path: A video file (anything FFmpeg reads), a folder of PNG/JPEG/BMP/TIFF frames
            (natural order: ``2.png`` before ``10.png``), or one image.
        frames_fps: Frame rate to report for a frames folder (ignored for videos and images).

    Returns:
        A :class:`FrameSource`; its ``info.num_frames`` is counted by decoding on first use.

    Raises:
        VideoReadError: The path cannot be read as a video, frames folder or image.
    """
    path = Path(path)
    if not path.exists():
        raise VideoReadError(f"Input {path} does not exist.")
    if path.is_dir():
        files = list_images(path)
        if not files:
            if any(is_video(entry) for entry in path.iterdir()):
                raise VideoReadError(
                    f"Folder {path} holds videos, not frames; open each video on its own "
                    f"(vsrkit.io.list_inputs pairs them with outputs)."
                )
            raise VideoReadError(f"Folder {path} contains no frames or videos (expected .png/.jpg/.bmp/.tif images).")
        width, height, depth, pix_fmt = probe_image(files[0])
        if frames_fps is not None and Fraction(frames_fps) <= 0:
            raise UserError(f"`frames_fps` must be > 0. Got {frames_fps}.")
        fps = Fraction(frames_fps) if frames_fps is not None else None
        probe = _Probe(width, height, fps, 1 / fps if fps else None, pix_fmt, depth, False)
        return FrameSource(path, "frames", probe, frame_files=files)
    if is_image(path):
        width, height, depth, pix_fmt = probe_image(path)
        return FrameSource(path, "image", _Probe(width, height, None, None, pix_fmt, depth, False))
    return FrameSource(path, "video", _probe_video(path))
