"""Output geometry: the size a run writes, when it is not ``scale`` times the input.

``io.output_size=WxH`` asks for frames of exactly ``W x H`` pixels; ``io.output_fit`` says how the
method's output (``scale`` times the input) gets there, ``io.output_filter`` which interpolation:

- ``crop`` (default, the SparkVSR release's ``--output_resolution H W``): scale by
  ``max(H / h, W / w)`` so both sides cover the target (sizes truncated with ``int()``, as the
  release), then centre-crop (offsets ``(scaled - target) // 2``).
- ``pad``: scale by ``min(H / h, W / w)`` so the whole picture fits, then centre it on black
  (letterbox / pillarbox; offsets ``(target - scaled) // 2``).
- ``stretch``: resize to ``W x H`` whatever the aspect ratio.

The release applies its resize to the bilinearly upsampled input before the model (so its model
runs at the target size) and pads to a multiple of 8 for the VAE; vsrkit applies the same size,
crop and filter to the model's output, for every method, and the engine's own padding takes the
place of the release's (it is cropped off exactly). :class:`OutputGeometry` works on the frames
where they are (the GPU, usually), a few frames at a time, as the engine yields them: nothing is
buffered beyond what the engine already holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vsrkit.errors import UserError

FITS = ["crop", "pad", "stretch"]
FILTERS = ["bilinear", "bicubic", "area", "nearest"]
_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
# Frames resized per interpolate call: bounds the float32 temporaries at 4K (8 x 3 x 2160 x 3840 x 4 B = 800 MB).
_FRAMES_PER_CALL = 8


def parse_output_size(text, key: str = "io.output_size") -> tuple[int, int] | None:
    """``"1280x720"`` -> ``(1280, 720)`` (width, height); None stays None.

    Raises:
        UserError: Anything but two positive integers joined by ``x``.
    """
    if text is None:
        return None
    match = _SIZE.match(str(text))
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise UserError(f"`{key}` must be WIDTHxHEIGHT in pixels, e.g. 1280x720 (the release's "
                        f"--output_resolution 720 1280). Got {text!r}.")
    return int(match.group(1)), int(match.group(2))


def needs_even_size(codec: str, pix_fmt: str | None) -> bool:
    """Whether a video written with ``codec`` / ``pix_fmt`` subsamples chroma 2x2 (4:2:0), i.e.
    cannot hold an odd width or height (h264/h265 default to yuv420p)."""
    if pix_fmt is None:
        return codec in ("h264", "h265")
    return pix_fmt.startswith(("yuv420", "yuvj420", "nv12", "nv21", "p010"))


def check_output_size(io_cfg, output) -> None:
    """Refuse, before any weights load, an ``io.output_size`` that the output cannot store.

    Args:
        io_cfg: The ``io`` settings (:class:`vsrkit.engine.settings.IOConfig`).
        output: The output path (a video gets the check; images and frames folders take any size).

    Raises:
        UserError: An odd width or height for a 4:2:0 video (h264/h265 by default).
    """
    size = parse_output_size(io_cfg.output_size)
    if size is None:
        return
    from vsrkit.io import is_video

    width, height = size
    if is_video(output) and (width % 2 or height % 2) and needs_even_size(io_cfg.codec, io_cfg.pix_fmt):
        pix_fmt = io_cfg.pix_fmt or "yuv420p"
        raise UserError(f"`io.output_size={width}x{height}` is odd, which {io_cfg.codec} {pix_fmt} (4:2:0) cannot "
                        f"store in {output}; use an even size like {width + width % 2}x{height + height % 2}, "
                        f"or io.pix_fmt=yuv444p, or io.codec=ffv1.")


def resized_size(src_hw: tuple[int, int], target_hw: tuple[int, int], fit: str) -> tuple[int, int]:
    """``(h, w)`` the frames are resized to before the crop or pad.

    ``crop``: ``int(side * max(H / h, W / w))`` per side, as the release computes it; a side the
    float product leaves one pixel short of the target (``int(9.999...)``) is raised to the target,
    where the release would crop a frame smaller than asked. ``pad``: ``min`` instead of ``max``,
    sides capped at the target. ``stretch``: the target.
    """
    src_h, src_w = src_hw
    target_h, target_w = target_hw
    if fit == "stretch":
        return target_h, target_w
    if fit == "crop":
        factor = max(target_h / src_h, target_w / src_w)
        return max(int(src_h * factor), target_h), max(int(src_w * factor), target_w)
    if fit == "pad":
        factor = min(target_h / src_h, target_w / src_w)
        return max(min(int(src_h * factor), target_h), 1), max(min(int(src_w * factor), target_w), 1)
    raise ValueError(f"fit must be one of {FITS}. Got {fit!r}.")


@dataclass(frozen=True)
class OutputGeometry:
    """How frames of ``src_hw`` become frames of ``target_hw`` (see the module docstring).

    Args:
        src_hw: ``(H, W)`` of the method's output (input size times ``scale``).
        target_hw: ``(H, W)`` written.
        fit: ``crop``, ``pad`` or ``stretch``.
        filter: ``bilinear`` (release), ``bicubic``, ``area`` or ``nearest``; bilinear and bicubic are
            antialiased when shrinking (on enlarging, antialiasing changes nothing).
    """

    src_hw: tuple[int, int]
    target_hw: tuple[int, int]
    fit: str = "crop"
    filter: str = "bilinear"

    def __post_init__(self):
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}. Got {self.fit!r}.")
        if self.filter not in FILTERS:
            raise ValueError(f"filter must be one of {FILTERS}. Got {self.filter!r}.")

    @property
    def resized_hw(self) -> tuple[int, int]:
        return resized_size(self.src_hw, self.target_hw, self.fit)

    @property
    def offset(self) -> tuple[int, int]:
        """``(top, left)``: where the target starts in the resized frame (crop), or where the
        resized frame starts in the target (pad); (0, 0) for stretch."""
        (rh, rw), (th, tw) = self.resized_hw, self.target_hw
        if self.fit == "crop":
            return (rh - th) // 2, (rw - tw) // 2
        if self.fit == "pad":
            return (th - rh) // 2, (tw - rw) // 2
        return 0, 0

    @property
    def is_identity(self) -> bool:
        return tuple(self.src_hw) == tuple(self.target_hw)

    def __call__(self, frames):
        """``(3, T, H, W)`` float in [-1, 1] (``H, W == src_hw``) -> ``(3, T, *target_hw)`` float32,
        on the frames' device."""
        import torch
        import torch.nn.functional as F

        if tuple(frames.shape[-2:]) != tuple(self.src_hw):
            raise ValueError(f"frames of size {tuple(frames.shape[-2:])}; this geometry maps {self.src_hw}.")
        if self.is_identity:
            return frames
        size, (top, left), (th, tw) = self.resized_hw, self.offset, self.target_hw
        kwargs: dict = {"mode": self.filter}
        if self.filter in ("bilinear", "bicubic"):
            kwargs["align_corners"] = False
            kwargs["antialias"] = size[0] < self.src_hw[0] or size[1] < self.src_hw[1]
        channels, length = frames.shape[0], frames.shape[1]
        out = torch.empty(channels, length, th, tw, dtype=torch.float32, device=frames.device)
        if self.fit == "pad":
            out.fill_(-1.0)  # black
        for first in range(0, length, _FRAMES_PER_CALL):
            piece = frames[:, first:first + _FRAMES_PER_CALL].transpose(0, 1).float()  # (t, 3, H, W)
            if tuple(size) != tuple(self.src_hw):
                piece = F.interpolate(piece, size=tuple(size), **kwargs)
            piece = piece.transpose(0, 1)
            if self.fit == "crop":
                out[:, first:first + _FRAMES_PER_CALL] = piece[..., top:top + th, left:left + tw]
            else:
                out[:, first:first + _FRAMES_PER_CALL, top:top + size[0], left:left + size[1]] = piece
        return out


def output_geometry(io_cfg, src_hw: tuple[int, int], display_matrix=None) -> OutputGeometry | None:
    """The geometry ``io_cfg`` asks for on frames of ``src_hw``, or None (write them as they are).

    ``display_matrix``: the input video's (:mod:`vsrkit.io.orientation`). ``io.output_size`` is
    the size a player shows, so under a quarter turn (a phone's portrait clip, stored as landscape
    frames) the stored frames get it swapped; the written video keeps the matrix.
    """
    size = parse_output_size(getattr(io_cfg, "output_size", None))
    if size is None:
        return None
    from vsrkit.io.orientation import swaps_axes

    width, height = size
    if swaps_axes(display_matrix):
        width, height = height, width
    return OutputGeometry(tuple(src_hw), (height, width), io_cfg.output_fit, io_cfg.output_filter)


def output_hw(io_cfg, src_hw: tuple[int, int], display_matrix=None) -> tuple[int, int]:
    """``(H, W)`` of the stored frames written for a method output of ``src_hw``."""
    geometry = output_geometry(io_cfg, src_hw, display_matrix)
    return tuple(src_hw) if geometry is None else geometry.target_hw
