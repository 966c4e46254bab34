"""Single images: reading any PNG/JPEG/BMP/TIFF into RGB, atomic writing, natural file order."""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Colorspace

from vsrkit.errors import UserError, VideoReadError
from vsrkit.io.convert import bit_depth, frame_to_rgb, rgb_to_frame
from vsrkit.io.kinds import (  # noqa: F401 -- the file kinds live in kinds.py (no av); re-exported here
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    WRITABLE_IMAGE_EXTENSIONS,
    is_image,
    is_video,
    list_images,
    natural_key,
    writable_image,
)
from vsrkit.io.orientation import exif_orientation, orient_exif, swaps_exif_axes
from vsrkit.io.publish import partial_path, publish, remove_stale_partials

logger = logging.getLogger(__name__)

# Encoder and pixel format per written image type: uint8 input, uint16 input (None: not possible).
_IMAGE_ENCODERS = {
    ".png": ("png", "rgb24", "rgb48be"),
    ".tif": ("tiff", "rgb24", "rgb48le"),
    ".tiff": ("tiff", "rgb24", "rgb48le"),
    ".bmp": ("bmp", "bgr24", None),
    # mjpeg takes full-range YUV; qscale 2 is its best usable quality (FFmpeg docs, "-q:v 2").
    ".jpg": ("mjpeg", "yuvj444p", None),
    ".jpeg": ("mjpeg", "yuvj444p", None),
}


def _decode_image(path: Path) -> av.VideoFrame:
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"Image {path} is not a readable image: it has no picture.")
            for frame in container.decode(video=0):
                return frame
    except av.error.FFmpegError as err:
        raise VideoReadError(f"Image {path} is not a readable image ({_reason(err)}).") from None
    raise VideoReadError(f"Image {path} is not a readable image: no picture could be decoded.")


def _reason(err: av.error.FFmpegError) -> str:
    return getattr(err, "strerror", None) or str(err)


def probe_image(path: str | os.PathLike) -> tuple[int, int, int, str]:
    """Size (upright, as :func:`read_image` returns it) and depth of an image without converting it.

    Args:
        path: An image file.

    Returns:
        ``(width, height, bit_depth, pix_fmt)``.

    Raises:
        VideoReadError: The file is missing or not a decodable image.
    """
    path = _existing(path)
    frame = _decode_image(path)
    width, height = (frame.height, frame.width) if swaps_exif_axes(exif_orientation(path)) else \
        (frame.width, frame.height)
    return width, height, bit_depth(frame.format), frame.format.name


def read_image(path: str | os.PathLike, high_bit_depth: bool | None = None) -> np.ndarray:
    """Read an image as RGB (alpha dropped, grey and palette expanded), upright: an EXIF
    ``Orientation`` (a phone's photo) is applied, as image viewers and ``cv2.imread`` do, since
    nothing written later carries the tag (:mod:`vsrkit.io.orientation`).

    Args:
        path: A PNG, JPEG, BMP or TIFF file.
        high_bit_depth: Return uint16; default: only when the file has more than 8 bits.

    Returns:
        ``(H, W, 3)`` RGB, uint8 in [0, 255] or uint16 in [0, 65535].

    Raises:
        VideoReadError: The file is missing or not a decodable image.
    """
    path = _existing(path)
    frame = _decode_image(path)
    if high_bit_depth is None:
        high_bit_depth = bit_depth(frame.format) > 8
    return orient_exif(frame_to_rgb(frame, high_bit_depth=high_bit_depth), exif_orientation(path))


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"Image {path} does not exist.")
    return path


def encode_image(frame: np.ndarray, suffix: str) -> bytes:
    """Encode one RGB frame as the bytes of an image file.

    Args:
        frame: ``(H, W, 3)`` RGB, uint8 or uint16 (uint16 only for .png and .tif).
        suffix: File type, one of the keys of ``_IMAGE_ENCODERS`` (``.png``, ``.jpg`` ...).

    Returns:
        The complete file contents.
    """
    suffix = suffix.lower()
    if suffix not in _IMAGE_ENCODERS:
        raise UserError(f"Image type {suffix!r} cannot be written; expected one of {list(_IMAGE_ENCODERS)}.")
    _check_frame(frame)
    codec, fmt8, fmt16 = _IMAGE_ENCODERS[suffix]
    pix_fmt = fmt16 if frame.dtype == np.uint16 else fmt8
    if pix_fmt is None:
        raise UserError(f"16-bit images cannot be written as {suffix}; use .png or .tif.")
    context = av.CodecContext.create(codec, "w")
    context.width, context.height = frame.shape[1], frame.shape[0]
    context.pix_fmt = pix_fmt
    context.time_base = Fraction(1, 1)
    if codec == "mjpeg":
        context.qscale = 2
        context.qmin = context.qmax = 2
        context.color_range = 2
    # JFIF defines JPEG colour as BT.601 full range whatever the size (PIL/libjpeg assume it).
    av_frame = rgb_to_frame(frame, pix_fmt, Colorspace.ITU601 if codec == "mjpeg" else None)
    av_frame.pts = 0
    packets = context.encode(av_frame) + context.encode(None)
    return b"".join(bytes(packet) for packet in packets)


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        raise ValueError(f"frame must be an (H, W, 3) RGB array. Got shape {shape}.")
    if frame.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"frame must be uint8 or uint16. Got {frame.dtype}.")


def write_image(path: str | os.PathLike, frame: np.ndarray, overwrite: bool = False) -> Path:
    """Write one RGB frame as an image, atomically (temporary file, then rename).

    The type follows the extension: PNG (8/16-bit), TIFF (8/16-bit), BMP, JPEG (quality q=2).

    Args:
        path: Target file.
        frame: ``(H, W, 3)`` RGB, uint8 in [0, 255] or uint16 in [0, 65535].
        overwrite: Replace an existing file.

    Returns:
        The written path.

    Raises:
        UserError: The file exists and ``overwrite`` is false, or the type cannot hold the frame.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"Output {path} already exists; set overwrite=true to replace it.")
    data = encode_image(frame, path.suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    temporary = partial_path(path)
    try:
        temporary.write_bytes(data)
        publish(temporary, path, overwrite)
    finally:
        temporary.unlink(missing_ok=True)
    return path
