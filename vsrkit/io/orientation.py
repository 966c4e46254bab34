"""How a picture is meant to be shown: a video's display matrix, an image's EXIF orientation.

Phones store portrait video as landscape frames plus a display matrix (rotation, flips) that
players apply. Video outputs carry the matrix on (:class:`vsrkit.io.VideoWriter`) and
``io.output_size`` is read as displayed; metrics that compare what a viewer sees apply it to the
pixels, the way FFmpeg's command line does by default (``-autorotate``): the same angle rounding
and the same transpose/flip choice per quarter turn (``fftools/ffmpeg_filter.c``,
``get_rotation`` in ``fftools/cmdutils.c``).

Photos store the same thing as the EXIF ``Orientation`` tag. Image outputs carry no tag, so
images are read upright (:func:`vsrkit.io.read_image`), as ``cv2.imread`` (what Real-ESRGAN
reads with) and Pillow's ``ImageOps.exif_transpose`` do.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

_FIXED_ONE = float(1 << 16)  # the matrix's first two columns are 16.16 fixed point


def display_rotation(matrix: Sequence[int]) -> float:
    """Counter-clockwise rotation in degrees, in [0, 360), that FFmpeg derives from a display
    matrix (``-round(av_display_rotation_get)`` wrapped like ``get_rotation``); NaN when the
    matrix is degenerate."""
    a, b, c, d = (matrix[i] / _FIXED_ONE for i in (0, 1, 3, 4))
    scale_x, scale_y = math.hypot(a, c), math.hypot(b, d)
    if scale_x == 0 or scale_y == 0:
        return math.nan
    theta = float(round(math.degrees(math.atan2(b / scale_y, a / scale_x))))
    return theta - 360 * math.floor(theta / 360 + 0.9 / 360)


def _operations(matrix: Sequence[int]) -> list[str] | None:
    """FFmpeg's filters for ``matrix``, in order; None for angles that are not quarter turns."""
    theta = display_rotation(matrix)
    if math.isnan(theta):
        return None
    if abs(theta - 90) < 1:
        return ["transpose" if matrix[3] > 0 else "clock"]
    if abs(theta - 180) < 1:
        return [op for op, flipped in (("hflip", matrix[0] < 0), ("vflip", matrix[4] < 0)) if flipped]
    if abs(theta - 270) < 1:
        return ["antitranspose" if matrix[3] < 0 else "cclock"]
    if abs(theta) < 1:
        return ["vflip"] if matrix[4] < 0 else []
    return None


def swaps_axes(matrix: Sequence[int] | None) -> bool:
    """Whether showing frames with ``matrix`` swaps their width and height (a quarter turn)."""
    ops = _operations(matrix) if matrix is not None else None
    return bool(ops) and ops[0] in ("transpose", "clock", "antitranspose", "cclock")


# EXIF Orientation (TIFF 6.0 tag 274) -> the operation that shows the stored picture upright.
_EXIF_OPERATIONS = {1: [], 2: ["hflip"], 3: ["hflip", "vflip"], 4: ["vflip"], 5: ["transpose"],
                    6: ["clock"], 7: ["antitranspose"], 8: ["cclock"]}
_EXIF_ORIENTATION_TAG = 0x0112


def exif_orientation(path) -> int:
    """The EXIF ``Orientation`` of an image file (1, upright, when it has none or Pillow cannot
    read its header: the pixels are then taken as stored)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.format == "PNG" and "exif" not in image.info:
                # Pillow would decode the whole picture looking for an eXIf chunk after the pixels;
                # the PNG extension puts it before them, where opening has already seen it.
                return 1
            value = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 -- a header Pillow cannot parse only means "no tag"; FFmpeg decodes the pixels
        return 1
    return value if value in _EXIF_OPERATIONS else 1


def swaps_exif_axes(orientation: int) -> bool:
    """Whether EXIF ``orientation`` shows the stored picture with width and height swapped."""
    return orientation in (5, 6, 7, 8)


def orient_exif(image: np.ndarray, orientation: int) -> np.ndarray:
    """``image (H, W, C)`` shown upright for EXIF ``orientation`` (1 to 8)."""
    if orientation == 1:
        return image
    return _apply(image[None], _EXIF_OPERATIONS[orientation])[0]


def orient(frames: np.ndarray, matrix: Sequence[int] | None) -> np.ndarray:
    """``frames (T, H, W, C)`` as the display matrix shows them (contiguous; ``frames`` itself
    when there is nothing to do).

    A matrix that is not a multiple of 90 degrees (rare: FFmpeg would rotate and fill the corners
    with black) leaves the frames as stored, with a warning.
    """
    return _apply(frames, _display_operations(matrix))


def _display_operations(matrix: Sequence[int] | None) -> list[str]:
    """:func:`_operations` for pixels: none for no matrix, and none (with a warning, once per
    matrix since callers go chunk by chunk) for an angle that is not a quarter turn."""
    if matrix is None:
        return []
    ops = _operations(matrix)
    if ops is None:
        _warn_kept_as_stored(tuple(matrix))
        return []
    return ops


@functools.lru_cache(maxsize=None)
def _warn_kept_as_stored(matrix: tuple[int, ...]) -> None:
    logger.warning("The display matrix %s is not a quarter turn or flip; frames are kept as stored.", matrix)


def to_stored(frames: np.ndarray, matrix: Sequence[int] | None) -> np.ndarray:
    """``frames (T, H, W, C)`` as displayed, turned back into the orientation a video with
    ``matrix`` stores (the inverse of :func:`orient`): how a picture taken upright, a photo or a
    ground-truth frame, lines up with the stored frames a method works on."""
    return _apply(frames, [_INVERSE.get(op, op) for op in reversed(_display_operations(matrix))])


_INVERSE = {"clock": "cclock", "cclock": "clock"}  # transposes and flips undo themselves


def _apply(frames: np.ndarray, ops: list[str]) -> np.ndarray:
    if not ops:
        return frames
    for op in ops:
        if op == "clock":  # transpose=clock: 90 degrees clockwise
            frames = np.rot90(frames, k=-1, axes=(1, 2))
        elif op == "cclock":
            frames = np.rot90(frames, k=1, axes=(1, 2))
        elif op == "transpose":  # transpose=cclock_flip: rows become columns
            frames = frames.swapaxes(1, 2)
        elif op == "antitranspose":  # transpose=clock_flip
            frames = frames.swapaxes(1, 2)[:, ::-1, ::-1]
        elif op == "hflip":
            frames = frames[:, :, ::-1]
        elif op == "vflip":
            frames = frames[:, ::-1]
    return np.ascontiguousarray(frames)
