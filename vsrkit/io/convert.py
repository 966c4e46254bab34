"""Conversions between PyAV frames and numpy RGB arrays that honour colour metadata.

swscale, left alone, converts every untagged YUV frame with BT.601 and treats an untagged range
as limited. Here the frame's own tags win; an untagged frame gets the colour matrix players
assume for its size (BT.709 for HD) and the range its pixel format implies (``yuvj*`` is full
range), so what the model sees is what a player shows. The writer converts back with the same
rules and tags the stream, so a round trip keeps its colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

# AVColorSpace (libavutil/pixfmt.h) -> swscale colour matrix. BT470BG (5) and SMPTE170M (6)
# share the BT.601 matrix; BT2020 constant luminance (10) has no swscale matrix of its own.
_AVCOL_SPC_TO_SWS = {
    1: Colorspace.ITU709,
    4: Colorspace.FCC,
    5: Colorspace.ITU601,
    6: Colorspace.ITU601,
    7: Colorspace.SMPTE240M,
    9: Colorspace.BT2020,
    10: Colorspace.BT2020,
}
# swscale colour matrix -> AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic tags
# written into the output stream (values from libavutil/pixfmt.h).
_SWS_TO_TAGS = {
    Colorspace.ITU709: {"colorspace": 1, "color_primaries": 1, "color_trc": 1},
    Colorspace.ITU601: {"colorspace": 6, "color_primaries": 6, "color_trc": 6},
}
_AVCOL_RANGE_MPEG = 1
_AVCOL_RANGE_JPEG = 2
_UNSPECIFIED = (0, 2)  # AVCOL_*_RESERVED0 / UNSPECIFIED: "no tag" for primaries, transfer, matrix


@dataclass(frozen=True)
class ColourTags:
    """The colour description of a video stream, as FFmpeg numbers it (libavutil/pixfmt.h).

    A writer given these converts RGB back to YUV with the source's matrix and range and tags
    the output with all four, so an upscaled BT.709 or full-range clip stays one.

    Args:
        matrix: AVColorSpace (1 BT.709, 5 BT.470BG, 6 SMPTE 170M, 9 BT.2020 NCL, 2 unspecified).
        primaries: AVColorPrimaries (1 BT.709, 6 SMPTE 170M, 9 BT.2020, 2 unspecified).
        transfer: AVColorTransferCharacteristic (1 BT.709, 6 SMPTE 170M, 16 PQ, 18 HLG, 2 unspecified).
        range: AVColorRange (1 limited/MPEG, 2 full/JPEG, 0 unspecified).
    """

    matrix: int = 2
    primaries: int = 2
    transfer: int = 2
    range: int = 0

    @classmethod
    def of(cls, frame: av.VideoFrame) -> "ColourTags":
        """The tags a decoded frame carries (a ``yuvj*`` format counts as full range)."""
        color_range = int(frame.color_range)
        if color_range not in (_AVCOL_RANGE_MPEG, _AVCOL_RANGE_JPEG) and frame.format.name.startswith("yuvj"):
            color_range = _AVCOL_RANGE_JPEG
        return cls(int(frame.colorspace), int(frame.color_primaries), int(frame.color_trc), color_range)

    def specified(self) -> dict[str, int]:
        """The tags that say something, under their codec-context names (``colorspace`` ...)."""
        tags = {"colorspace": self.matrix, "color_primaries": self.primaries, "color_trc": self.transfer}
        tags = {k: v for k, v in tags.items() if v not in _UNSPECIFIED}
        if self.range in (_AVCOL_RANGE_MPEG, _AVCOL_RANGE_JPEG):
            tags["color_range"] = self.range
        return tags

# swscale's default YUV->RGB path upsamples chroma coarsely: on a 4:2:0 JPEG of baboon.png it
# differs from libjpeg (PIL) by up to 44 levels (mean 3.1); with full horizontal chroma
# interpolation and accurate rounding by at most 3 (mean 0.36). Measured with PyAV 18.1.0.
_TO_RGB_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
# RGB->YUV: area-averaged chroma gave the best RGB->yuv420p->RGB round trip of the swscale
# options tried (27.7 dB vs 27.4 dB default on tiled baboon.png, 1280x720).
_FROM_RGB_FLAGS = Interpolation.AREA | Interpolation.ACCURATE_RND


def is_hd(width: int, height: int) -> bool:
    """Whether players treat an untagged picture of this size as HD (BT.709).

    Same rule as mpv's ``mp_csp_guess_colorspace`` (video/csputils.c): width >= 1280 or
    height > 576.
    """
    return width >= 1280 or height > 576


def default_matrix(width: int, height: int) -> Colorspace:
    """The colour matrix used for untagged YUV of this size: BT.709 for HD, else BT.601."""
    return Colorspace.ITU709 if is_hd(width, height) else Colorspace.ITU601


def is_yuv(fmt: av.VideoFormat) -> bool:
    """Whether a pixel format stores luma + chroma (needs a colour matrix to become RGB)."""
    name = fmt.name
    if fmt.is_rgb or fmt.has_palette or fmt.is_bayer:
        return False
    return not name.startswith(("gray", "ya", "mono"))


def bit_depth(fmt: av.VideoFormat) -> int:
    """Bits per sample of a pixel format's first component (8 for yuv420p, 10 for yuv420p10le)."""
    return max(component.bits for component in fmt.components)


def frame_to_rgb(frame: av.VideoFrame, high_bit_depth: bool = False) -> np.ndarray:
    """Convert a decoded frame to an RGB array, honouring its colour matrix and range.

    Args:
        frame: A decoded video or image frame in any pixel format.
        high_bit_depth: Return ``rgb48`` (uint16, full 0..65535 scale) instead of ``rgb24``.

    Returns:
        ``(H, W, 3)`` RGB array, uint8 in [0, 255] (or uint16 in [0, 65535] when
        ``high_bit_depth``).
    """
    target = "rgb48le" if high_bit_depth else "rgb24"
    if not is_yuv(frame.format):
        return frame.to_ndarray(format=target)
    matrix = _AVCOL_SPC_TO_SWS.get(int(frame.colorspace))
    if matrix is None:
        matrix = default_matrix(frame.width, frame.height)
    color_range = int(frame.color_range)
    if color_range not in (_AVCOL_RANGE_MPEG, _AVCOL_RANGE_JPEG):
        color_range = _AVCOL_RANGE_JPEG if frame.format.name.startswith("yuvj") else _AVCOL_RANGE_MPEG
    return frame.to_ndarray(
        format=target,
        src_colorspace=matrix,
        src_color_range=ColorRange(color_range),
        dst_color_range=ColorRange.JPEG,
        interpolation=_TO_RGB_FLAGS,
    )


def rgb_to_frame(rgb: np.ndarray, pix_fmt: str, matrix: Colorspace | None = None,
                 full_range: bool | None = None) -> av.VideoFrame:
    """Build a frame in ``pix_fmt`` from an RGB array (limited range for YUV targets by default).

    Args:
        rgb: ``(H, W, 3)`` RGB, uint8 in [0, 255] or uint16 in [0, 65535].
        pix_fmt: Pixel format the encoder takes (``yuv420p``, ``bgr0``, ``rgb48le`` ...).
        matrix: Colour matrix for YUV targets; default: :func:`default_matrix` of the size.
        full_range: Full-range YUV; default: only for ``yuvj*`` formats.

    Returns:
        A frame in ``pix_fmt`` tagged with the matrix and range used.
    """
    source = "rgb48le" if rgb.dtype == np.uint16 else "rgb24"
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=source)
    target = av.VideoFormat(pix_fmt)
    if not is_yuv(target):
        return frame.reformat(format=pix_fmt)
    if matrix is None:
        matrix = default_matrix(frame.width, frame.height)
    full = pix_fmt.startswith("yuvj") if full_range is None else full_range
    return frame.reformat(
        format=pix_fmt,
        dst_colorspace=matrix,
        src_color_range=ColorRange.JPEG,
        dst_color_range=ColorRange.JPEG if full else ColorRange.MPEG,
        interpolation=_FROM_RGB_FLAGS,
    )


def stream_colour_tags(matrix: Colorspace, pix_fmt: str, source: ColourTags | None = None) -> dict[str, int]:
    """Colour tags (AVColorSpace, primaries, transfer, range) to set on an encoder's context.

    Args:
        matrix: The matrix :func:`rgb_to_frame` converted with (:func:`writer_matrix`).
        pix_fmt: The encoder's pixel format; ``yuvj*`` formats are full range.
        source: The input's tags: every tag it specifies is kept (primaries and transfer pass
            through unchanged, since the RGB values are in the source's colour space).

    Returns:
        ``{"colorspace", "color_primaries", "color_trc", "color_range"}`` as ints.
    """
    tags = dict(_SWS_TO_TAGS.get(matrix, {}))
    tags["color_range"] = _AVCOL_RANGE_JPEG if pix_fmt.startswith("yuvj") else _AVCOL_RANGE_MPEG
    if source is not None:
        specified = source.specified()
        if _AVCOL_SPC_TO_SWS.get(specified.get("colorspace")) != matrix:
            specified.pop("colorspace", None)  # the conversion used another matrix: tag what was used
        tags.update(specified)
    if pix_fmt.startswith("yuvj"):
        tags["color_range"] = _AVCOL_RANGE_JPEG
    return tags


def writer_matrix(width: int, height: int, source: ColourTags | None = None) -> Colorspace:
    """The matrix a writer converts RGB to YUV with: the source's when it names one swscale has,
    else the one players assume for the output size (:func:`default_matrix`)."""
    if source is not None and source.matrix in _AVCOL_SPC_TO_SWS:
        return _AVCOL_SPC_TO_SWS[source.matrix]
    return default_matrix(width, height)
