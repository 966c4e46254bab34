"""Atomic writers: a video file (H.264, H.265 or lossless FFV1, audio copied) or a frames folder.

Both write to a temporary name beside the target and publish it under the real name on success,
never replacing a file that appeared meanwhile unless ``overwrite`` (:mod:`vsrkit.io.publish`);
on an exception (also SIGINT/SIGTERM, which the command line turns into one) the temporary file
or folder is deleted, so a crash never leaves a half-written output under the real name.
"""

from __future__ import annotations

import logging
import os
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vsrkit.errors import UserError
from vsrkit.io.audio import AudioRemuxer
from vsrkit.io.convert import ColourTags, rgb_to_frame, stream_colour_tags, writer_matrix
from vsrkit.io.images import encode_image
from vsrkit.io.kinds import WRITABLE_IMAGE_EXTENSIONS, is_image, is_video, writable_image
from vsrkit.io.publish import partial_path, publish, remove_stale_partials

logger = logging.getLogger(__name__)

CODECS = ("h264", "h265", "ffv1")
_ENCODERS = {"h264": "libx264", "h265": "libx265", "ffv1": "ffv1"}
# Default pixel format per codec and input dtype. ffv1 "bgr0" is the bit-exact 8-bit RGB mode
# (FFmpeg 8's ffv1 rejects 8-bit gbrp; ecosystem.md section 3 round-trip table).
_DEFAULT_PIX_FMT = {
    ("h264", "uint8"): "yuv420p",
    ("h265", "uint8"): "yuv420p",
    ("ffv1", "uint8"): "bgr0",
    ("h264", "uint16"): "yuv420p10le",
    ("h265", "uint16"): "yuv420p10le",
    ("ffv1", "uint16"): "rgb48le",
}
# Chroma-subsampled formats need even sizes; odd sizes fall back to the 4:4:4 twin.
_FULL_CHROMA = {"yuv420p": "yuv444p", "yuv420p10le": "yuv444p10le"}
_FASTSTART_SUFFIXES = (".mp4", ".mov", ".m4v")


def _container_codecs(suffix: str) -> set[str] | None:
    """Codecs FFmpeg's muxer for ``suffix`` accepts (opened on an empty temporary file); None when
    the probe itself cannot be written (no usable temporary folder: the writer will tell)."""
    import tempfile

    try:
        folder = tempfile.mkdtemp(prefix="vsrkit-probe-")
    except OSError:
        return None
    try:
        try:
            container = av.open(os.path.join(folder, f"probe{suffix}"), mode="w")
        except OSError:
            return None
        except (av.error.FFmpegError, ValueError):
            return set()
        try:
            return set(container.supported_codecs)
        finally:
            container.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_output(path: str | os.PathLike, codec: str = "h264") -> None:
    """Refuse, before any work, an output vsrkit could only fail to write at the end.

    Args:
        path: The output: a video file, an image file, or a frames folder (no suffix).
        codec: The video codec it would get (``io.codec``).

    Raises:
        UserError: A video type whose container cannot hold ``codec``, an image type vsrkit cannot
            write, or a suffix that is neither.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not suffix:
        return
    if is_image(path):
        if not writable_image(path):
            raise UserError(f"Output {path}: vsrkit reads {suffix} images but cannot write them; use one of "
                            f"{list(WRITABLE_IMAGE_EXTENSIONS)}.")
        return
    if not is_video(path):
        raise UserError(f"Output {path}: {suffix} is neither a video nor an image type vsrkit writes; use .mp4 or "
                        f".mkv for videos, .png for images.")
    if codec not in CODECS:
        raise UserError(f"`codec` must be one of {list(CODECS)}. Got {codec!r}.")
    supported = _container_codecs(suffix)
    if supported is not None and codec not in supported and _ENCODERS[codec] not in supported:
        fits = [c for c in CODECS if c in supported or _ENCODERS[c] in supported]
        hint = f" (it holds {', '.join(fits)}: set io.codec)" if fits else ""
        raise UserError(f"Output {path}: a {suffix} file cannot hold {codec} video{hint}; use .mkv (any codec) or "
                        f".mp4 (h264, h265).")


class _AtomicWriter:
    """``with`` protocol of the writers below, which define ``open``, ``close`` (publish the output)
    and ``abort`` (remove the partial output): abort on an exception, close otherwise."""

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class VideoWriter(_AtomicWriter):
    """Write RGB frames to a video file, atomically, keeping exact timestamps and the audio.

    Use it as a context manager::

        with VideoWriter(out, width=w, height=h, fps=info.fps, time_base=info.time_base,
                         audio_from=info.path) as writer:
            for chunk in source.chunks(16):
                writer.write(upscale(chunk.frames), pts=chunk.pts)

    When the source's ``pts`` and ``time_base`` are passed, every output frame keeps its source
    timestamp and the stream keeps the source time base, so fractional rates (1199/50,
    24000/1001) and variable frame timing survive exactly.

    Args:
        path: Output file; the extension picks the container (.mp4, .mkv, .mov ...).
        width: Frame width of every written frame.
        height: Frame height of every written frame.
        fps: Frame rate (exact, e.g. ``Fraction(24000, 1001)``); used for the stream's rate and,
            when no pts are given, for the timestamps.
        time_base: Unit of the pts passed to :meth:`write` (the source's time base); default
            ``1 / fps``.
        codec: ``"h264"`` (delivery), ``"h265"``, or ``"ffv1"`` (lossless, put it in .mkv).
        crf: Constant rate factor for h264/h265 (0 = best, 51 = worst); ignored by ffv1.
        pix_fmt: Encoder pixel format; default ``yuv420p`` for h264/h265 (``yuv444p`` for odd
            sizes, with a warning), ``bgr0`` for ffv1; 10-bit / ``rgb48le`` for uint16 frames.
        audio_from: A file whose first audio stream is copied into the output (no re-encode).
        trim_audio: Drop audio past the end of the last written frame (set this when the
            frames were capped with ``max_frames``, so the audio does not run on).
        audio_start: For a segment of the source: the source time (seconds) of its first frame;
            earlier audio is dropped and the rest moved to the output's clock (see ``audio_origin``).
        audio_origin: The source time the output's clock starts from (its first frame's time).
        overwrite: Replace an existing output file.
        colour: The source's colour description: RGB is converted back with its matrix and range
            and the stream is tagged with all four tags (default: BT.709 for HD sizes, else BT.601,
            limited range).
        display_matrix: The source's display matrix (rotation, flips), written to the stream.

    Raises:
        UserError: The output exists (and ``overwrite`` is false), or an option is invalid.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        width: int,
        height: int,
        fps: Fraction | int,
        time_base: Fraction | None = None,
        codec: str = "h264",
        crf: int = 18,
        pix_fmt: str | None = None,
        audio_from: str | os.PathLike | None = None,
        trim_audio: bool = False,
        audio_start: Fraction | None = None,
        audio_origin: Fraction = Fraction(0),
        overwrite: bool = False,
        colour: ColourTags | None = None,
        display_matrix: tuple[int, ...] | None = None,
    ):
        self.path = Path(path)
        if codec not in CODECS:
            raise UserError(f"`codec` must be one of {list(CODECS)}. Got {codec!r}.")
        if width < 1 or height < 1:
            raise UserError(f"Video size must be positive. Got {width}x{height}.")
        if not fps or Fraction(fps) <= 0:
            raise UserError(f"`fps` must be > 0. Got {fps}.")
        if not 0 <= crf <= 51:
            raise UserError(f"`crf` must be in [0, 51]. Got {crf}.")
        if not self.path.suffix:
            raise UserError(f"Output {self.path} has no extension; expected e.g. .mp4 or .mkv.")
        if self.path.exists() and not overwrite:
            raise UserError(f"Output {self.path} already exists; set overwrite=true to replace it.")
        if self.path.is_dir():
            raise UserError(f"Output {self.path} is a folder; expected a video file name.")
        self.width, self.height = int(width), int(height)
        self.fps = Fraction(fps)
        self.time_base = Fraction(time_base) if time_base else 1 / self.fps
        self.codec, self.crf, self.pix_fmt = codec, int(crf), pix_fmt
        if pix_fmt is not None:
            self._check_pix_fmt()
        self.audio_from = Path(audio_from) if audio_from is not None else None
        self.trim_audio = trim_audio
        self.audio_start, self.audio_origin = audio_start, audio_origin
        self.colour, self.display_matrix = colour, display_matrix
        self.overwrite = overwrite
        self.frames_written = 0
        self._partial = partial_path(self.path)
        self._container = None
        self._stream = None
        self._audio: AudioRemuxer | None = None
        self._dtype = None
        self._uses_pts: bool | None = None
        self._last_pts: int | None = None

    def open(self) -> None:
        """Create the temporary output file (called by ``with``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(self.path)
        options = {}
        if self.path.suffix.lower() in _FASTSTART_SUFFIXES:
            # Move the index to the front so players can start before the download ends.
            options["movflags"] = "+faststart"
        try:
            self._container = av.open(str(self._partial), mode="w", container_options=options)
        except OSError:
            raise  # a folder it may not write, a full disk: the command line says which, in one line
        except (av.error.FFmpegError, ValueError) as err:
            reason = str(err).replace(str(self._partial), str(self.path))  # name the output, not its temporary
            raise UserError(f"Output {self.path}: cannot write this file type ({reason}).") from None
        encoder = _ENCODERS[self.codec]
        if self.codec not in self._container.supported_codecs and encoder not in self._container.supported_codecs:
            name = self.path.suffix
            self.abort()
            raise UserError(f"Output {self.path}: {name} cannot hold {self.codec} video; use .mkv.")

    # -- writing ---------------------------------------------------------------------------
    def write(self, frames: np.ndarray, pts: list[int] | None = None) -> None:
        """Encode frames.

        Args:
            frames: ``(T, H, W, 3)`` RGB, uint8 in [0, 255] or uint16 in [0, 65535], with
                ``H, W == height, width``.
            pts: One timestamp per frame in ``time_base`` units (the source's ``Chunk.pts``),
                increasing; None numbers the frames at ``fps``. Use one style for the whole file.
        """
        if self._container is None:
            raise RuntimeError("VideoWriter.write() called outside `with` (or after close()).")
        frames = self._check(frames, pts)
        if self._stream is None:
            self._start(frames.dtype)
        step = (1 / self.fps) / self.time_base  # time_base units per frame
        for index, rgb in enumerate(frames):
            frame = rgb_to_frame(rgb, self._stream.pix_fmt, self._matrix, self._full_range)
            if pts is not None:
                stamp = int(pts[index])
            else:
                stamp = round(self.frames_written * step)
            if self._last_pts is not None and stamp <= self._last_pts:
                raise ValueError(f"pts must increase; got {stamp} after {self._last_pts}.")
            frame.pts = stamp
            frame.time_base = self.time_base
            self._container.mux(self._stream.encode(frame))
            self._last_pts = stamp
            self.frames_written += 1
        if self._audio is not None:
            # Keep audio up to the last encoded frame interleaved with the video.
            self._audio.feed_until(self._last_pts * self.time_base)

    def _check(self, frames: np.ndarray, pts: list[int] | None) -> np.ndarray:
        if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[3] != 3:
            raise ValueError(f"frames must be a (T, H, W, 3) array. Got {getattr(frames, 'shape', type(frames))}.")
        if frames.shape[1:3] != (self.height, self.width):
            raise ValueError(
                f"frames are {frames.shape[2]}x{frames.shape[1]} but the writer was made for "
                f"{self.width}x{self.height}."
            )
        if frames.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"frames must be uint8 or uint16. Got {frames.dtype}.")
        if self._dtype is not None and frames.dtype != self._dtype:
            raise ValueError(f"frames dtype changed from {self._dtype} to {frames.dtype}.")
        if pts is not None and len(pts) != len(frames):
            raise ValueError(f"pts has {len(pts)} entries for {len(frames)} frames.")
        uses_pts = pts is not None
        if self._uses_pts is not None and uses_pts != self._uses_pts:
            raise ValueError("pass pts with every write() or with none.")
        self._uses_pts = uses_pts
        return frames

    def _check_pix_fmt(self) -> None:
        supported = [fmt.name for fmt in av.codec.Codec(_ENCODERS[self.codec], "w").video_formats]
        if self.pix_fmt not in supported:
            raise UserError(f"`pix_fmt` {self.pix_fmt!r} is not supported by {self.codec}; choose one of {supported}.")
        if (self.width % 2 or self.height % 2) and self.pix_fmt in _FULL_CHROMA:
            raise UserError(
                f"`pix_fmt` {self.pix_fmt} needs an even size; the video is {self.width}x{self.height}. "
                f"Use {_FULL_CHROMA[self.pix_fmt]} or leave pix_fmt unset."
            )

    def _choose_pix_fmt(self, dtype: np.dtype) -> str:
        if self.pix_fmt is not None:
            return self.pix_fmt
        pix_fmt = _DEFAULT_PIX_FMT[(self.codec, np.dtype(dtype).name)]
        if (self.width % 2 or self.height % 2) and pix_fmt in _FULL_CHROMA:
            logger.warning(
                "%s: %dx%d is odd, which %s cannot store; writing %s (not playable in some browsers).",
                self.path, self.width, self.height, pix_fmt, _FULL_CHROMA[pix_fmt],
            )
            pix_fmt = _FULL_CHROMA[pix_fmt]
        return pix_fmt

    def _start(self, dtype: np.dtype) -> None:
        """Add the video (and audio) streams; the header is written with the first packet."""
        self._dtype = dtype
        pix_fmt = self._choose_pix_fmt(dtype)
        stream = self._container.add_stream(_ENCODERS[self.codec], rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, pix_fmt
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        stream.thread_type = "AUTO"
        if self.codec in ("h264", "h265"):
            stream.options = {"crf": str(self.crf)}
            if self.codec == "h265":
                stream.options["x265-params"] = "log-level=error"
                # Apple players need the hvc1 tag for H.265 in MP4.
                if self.path.suffix.lower() in _FASTSTART_SUFFIXES:
                    stream.codec_context.codec_tag = "hvc1"
        self._matrix = writer_matrix(self.width, self.height, self.colour)
        tags = stream_colour_tags(self._matrix, pix_fmt, self.colour)
        self._full_range = tags["color_range"] == 2
        if av.VideoFormat(pix_fmt).is_rgb:
            # RGB samples have no matrix or range; the source's primaries and transfer still apply.
            specified = self.colour.specified() if self.colour is not None else {}
            tags = {k: v for k, v in specified.items() if k in ("color_primaries", "color_trc")}
        for key, value in tags.items():
            setattr(stream.codec_context, key, value)
        if self.display_matrix is not None:
            stream.set_display_matrix(list(self.display_matrix))
        self._stream = stream
        if self.audio_from is not None:
            self._audio = AudioRemuxer(self.audio_from, self._container, self.audio_start, self.audio_origin)

    # -- finishing -------------------------------------------------------------------------
    def close(self) -> Path:
        """Flush the encoder, copy the remaining audio, and rename the file to its real name.

        Returns:
            The written path.
        """
        if self._container is None:
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise ValueError(f"No frames were written to {self.path}.")
        try:
            self._container.mux(self._stream.encode(None))
            if self._audio is not None:
                end = None
                if self.trim_audio:
                    end = (self._last_pts * self.time_base) + 1 / self.fps
                self._audio.feed_until(end)
                self._audio.close()
            self._container.close()
        except BaseException:
            self.abort()
            raise
        self._container = None
        publish(self._partial, self.path, self.overwrite)
        logger.debug("Wrote %d frames to %s.", self.frames_written, self.path)
        return self.path

    def abort(self) -> None:
        """Stop writing and delete the temporary file (called by ``with`` on an exception)."""
        if self._audio is not None:
            self._audio.close()
        if self._container is not None:
            try:
                self._container.close()
            except (av.error.FFmpegError, OSError, ValueError) as err:
                logger.debug("Closing the partial output %s failed: %s", self._partial, err)
            self._container = None
        self._partial.unlink(missing_ok=True)


class FramesWriter(_AtomicWriter):
    """Write RGB frames into a folder as images, atomically: under the given names (an upscaled
    frames folder mirrors its input's file names), else as ``000000.png``, ``000001.png`` ...

    Frames go to a temporary folder beside the target, renamed to the target on success.

    Args:
        folder: Output folder.
        overwrite: Replace an existing folder, but only one that holds nothing except image
            files (a safety net against wiping a wrong path).
        suffix: Image type of numbered frames, ``.png`` (8/16-bit lossless) by default.
        names: File name of each frame in order (the input folder's names; the extension picks
            the image type); writing more frames than names is an error.

    Raises:
        UserError: The folder exists (and ``overwrite`` is false), or holds other files.
    """

    def __init__(self, folder: str | os.PathLike, overwrite: bool = False, suffix: str = ".png",
                 names: list[str] | None = None):
        self.folder = Path(folder)
        self.names = list(names) if names is not None else None
        for name in self.names or []:
            if not is_image(name) or Path(name).name != name:
                raise UserError(f"Frame name {name!r} for {self.folder} must be an image file name (.png, .jpg ...).")
        if self.names is not None and not all(writable_image(n) for n in self.names):
            # Types vsrkit reads but cannot write (WebP) keep their stem, as lossless PNG.
            logger.info("%s: frames named like the input, as .png where the input type cannot be written",
                        self.folder)
            self.names = [n if writable_image(n) else f"{Path(n).stem}.png" for n in self.names]
        self.suffix = suffix if suffix.startswith(".") else f".{suffix}"
        if not is_image(f"x{self.suffix}"):
            raise UserError(f"`suffix` must be an image type like .png. Got {suffix!r}.")
        if self.folder.exists():
            if not overwrite:
                raise UserError(f"Output {self.folder} already exists; set overwrite=true to replace it.")
            if not self.folder.is_dir():
                raise UserError(f"Output {self.folder} is a file; expected a folder for the frames.")
            others = [p.name for p in self.folder.iterdir() if not (p.is_file() and is_image(p))]
            if others:
                raise UserError(
                    f"Output {self.folder} holds more than frames ({others[0]!r}); refusing to replace it. "
                    f"Choose an empty or new folder."
                )
        self.overwrite = overwrite
        self.frames_written = 0
        self._partial = partial_path(self.folder)
        self._open = False

    def open(self) -> None:
        """Create the temporary folder (called by ``with``)."""
        remove_stale_partials(self.folder)
        if self._partial.exists():
            shutil.rmtree(self._partial)
        self._partial.mkdir(parents=True)
        self._open = True

    def write(self, frames: np.ndarray, pts: list[int] | None = None) -> None:
        """Write frames as numbered images.

        Args:
            frames: ``(T, H, W, 3)`` RGB, uint8 in [0, 255] or uint16 in [0, 65535].
            pts: Accepted for symmetry with :meth:`VideoWriter.write` and ignored (frame files
                carry no timestamps).
        """
        if not self._open:
            raise RuntimeError("FramesWriter.write() called outside `with` (or after close()).")
        if not isinstance(frames, np.ndarray) or frames.ndim != 4:
            raise ValueError(f"frames must be a (T, H, W, 3) array. Got {getattr(frames, 'shape', type(frames))}.")
        for rgb in frames:
            if self.names is None:
                name = self._partial / f"{self.frames_written:06d}{self.suffix}"
            elif self.frames_written < len(self.names):
                name = self._partial / self.names[self.frames_written]
            else:
                raise ValueError(f"FramesWriter for {self.folder} got frame {self.frames_written + 1} but only "
                                 f"{len(self.names)} names.")
            name.write_bytes(encode_image(rgb, name.suffix))
            self.frames_written += 1

    def close(self) -> Path:
        """Move the finished folder to its real name (replacing the old one when allowed)."""
        if not self._open:
            return self.folder
        self._open = False
        publish(self._partial, self.folder, self.overwrite)
        logger.debug("Wrote %d frames to %s.", self.frames_written, self.folder)
        return self.folder

    def abort(self) -> None:
        """Delete the temporary folder (called by ``with`` on an exception)."""
        self._open = False
        shutil.rmtree(self._partial, ignore_errors=True)
