"""Runs a method over a clip: temporal windows, spatial tiles, padding, blending, streaming.

Frames come in as ``(T, H, W, 3)`` uint8/uint16 chunks and leave the same way; in between the
method sees ``(B, C, T, H, W)`` float32 windows in [-1, 1], padded to its :class:`WindowSpec`.
Only one window of input and its output (plus the frames still waiting for the next window's
overlap) is held in memory, so memory does not grow with the clip's length.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from vsrkit.engine.keyframes import KeyframeCarry, keyframes_in_window
from vsrkit.engine.windows import plan_ranges, ramp_weights
from vsrkit.methods.protocol import WindowContext, WindowSpec

logger = logging.getLogger(__name__)


def frames_to_model(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 or uint16 -> ``(1, 3, T, H, W)`` float32 in [-1, 1]."""
    peak = 65535.0 if frames.dtype == np.uint16 else 255.0
    video = torch.from_numpy(np.array(frames, copy=not frames.flags.writeable)).to(torch.float32)
    return (video / peak * 2.0 - 1.0).permute(3, 0, 1, 2).unsqueeze(0)


def model_to_frames(video: torch.Tensor, dtype: np.dtype = np.uint8) -> np.ndarray:
    """``(1, 3, T, H, W)`` or ``(3, T, H, W)`` float in [-1, 1] -> ``(T, H, W, 3)`` ``dtype`` (clamped, rounded)."""
    if video.dim() == 5:
        video = video[0]
    peak = 65535.0 if np.dtype(dtype) == np.uint16 else 255.0
    scaled = ((video.float().clamp(-1, 1) + 1.0) * (peak / 2.0)).round()
    # Quantise where the frames are (the GPU, usually): a quarter of the bytes cross to the host.
    integer = torch.uint8 if np.dtype(dtype) == np.uint8 else torch.int32
    return scaled.to(integer).permute(1, 2, 3, 0).contiguous().cpu().numpy().astype(dtype, copy=False)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def apply_overrides(spec: WindowSpec, window: int | None, overlap: int | None, tile: int | None,
                    tile_overlap: int | None) -> WindowSpec:
    """The method's spec with the user's engine settings applied (``tile=0`` disables tiling)."""
    changes = {}
    if window is not None:
        changes["window"] = window or None
    if overlap is not None:
        changes["overlap"] = overlap
    if tile is not None:
        changes["tile"] = tile or None
        changes["tile_width"] = None  # the user's tile is a square edge
    if tile_overlap is not None:
        changes["tile_overlap"] = tile_overlap
    if changes.get("window", spec.window) is None:
        changes["overlap"] = 0
    if changes.get("tile", spec.tile) is None:
        changes["tile_overlap"] = 0
        changes["tile_width"] = None
    from vsrkit.errors import UserError

    try:
        changed = dataclasses.replace(spec, **changes)
    except ValueError as err:
        raise UserError(f"engine settings with the method's defaults {spec.window=}, {spec.overlap=}, {spec.tile=}, "
                        f"{spec.tile_overlap=}: {err} Set engine.overlap / engine.tile_overlap too.") from None
    stride, multiple = (changed.window or 0) - changed.overlap, changed.stride_multiple
    if changed.window is not None and stride % multiple:
        # plan_ranges would round the stride, i.e. silently blend more (or fewer) frames than asked.
        lower, upper = changed.overlap + stride % multiple, changed.overlap - (multiple - stride % multiple)
        options = " or ".join(f"engine.overlap={v}" for v in (lower, upper) if 0 <= v < changed.window)
        raise UserError(f"`engine.window` - `engine.overlap` = {changed.window} - {changed.overlap} = {stride} must be a "
                        f"multiple of {multiple} for this method (its windows start on multiples of {multiple}); "
                        f"use {options}.")
    return changed


def _pad_video(x: torch.Tensor, pad_h: int, pad_w: int, mode: str) -> torch.Tensor:
    """Pad ``(B, C, T, H, W)`` at the bottom/right. ``constant`` pads with -1 (black)."""
    if not pad_h and not pad_w:
        return x
    if mode == "constant":
        return F.pad(x, (0, pad_w, 0, pad_h), mode="constant", value=-1.0)
    b, c, t, h, w = x.shape
    flat = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    flat = F.pad(flat, (0, pad_w, 0, pad_h), mode=mode)
    return flat.reshape(b, t, c, h + pad_h, w + pad_w).permute(0, 2, 1, 3, 4)


def _pad_image(img: torch.Tensor, pad_h: int, pad_w: int, mode: str) -> torch.Tensor:
    """Pad ``(C, H, W)`` at the bottom/right like :func:`_pad_video`."""
    return _pad_video(img[None, :, None], pad_h, pad_w, mode)[0, :, 0]


class WindowRunner:
    """Upscales one window of frames with tiles, padding and blending.

    Args:
        method: Any object following :class:`vsrkit.methods.protocol.Method`.
        spec: The method's window spec with the user's overrides applied.
        device: Where the method runs.
        blend: ``linear`` or ``cut`` (see :func:`vsrkit.engine.windows.ramp_weights`).
        seed: Seed of the generator passed to the method.
        progress: Where windows, tiles and the method's stages are reported
            (:class:`vsrkit.engine.progress.InferProgress`); None shows nothing.
    """

    def __init__(self, method, spec: WindowSpec, device: torch.device, blend: str = "linear", seed: int = 42,
                 progress=None):
        self.method = method
        self.spec = spec
        self.device = device
        self.blend = blend
        self.seed = seed
        self.progress = progress

    def __call__(self, lq: torch.Tensor, frame_start: int, keyframes: dict | None = None) -> torch.Tensor:
        """Upscale ``lq (1, 3, L, H, W)`` float32 in [-1, 1] (unpadded).

        Args:
            lq: The window's input frames.
            frame_start: Index of the window's first frame in the clip.
            keyframes: ``{clip frame index: (3, H*s, W*s) float32 in [-1, 1]}``; only those inside
                the window (its temporal padding included) are used, re-indexed to the window.

        Returns:
            ``(3, L, H*s, W*s)`` float32 on the runner's device (tiles are blended where they are
            computed; only finished uint8 frames need to reach the host).
        """
        spec, s = self.spec, self.spec.scale
        _, _, length, height, width = lq.shape
        padded_length = spec.padded_length(length)
        if padded_length > length:
            lq = torch.cat([lq, lq[:, :, -1:].expand(-1, -1, padded_length - length, -1, -1)], dim=2)
        local_keyframes = {k - frame_start: v for k, v in (keyframes or {}).items()
                           if frame_start <= k < frame_start + padded_length}
        rows = plan_ranges(height, spec.tile, spec.tile_overlap)
        cols = plan_ranges(width, spec.tile_width or spec.tile, spec.tile_overlap)
        canvas = torch.zeros(3, length, height * s, width * s, dtype=torch.float32, device=self.device)
        for i, (y0, y1) in enumerate(rows):
            wy = ramp_weights(rows, i, self.blend).repeat_interleave(s).to(self.device, torch.float32)
            for j, (x0, x1) in enumerate(cols):
                if self.progress is not None and len(rows) * len(cols) > 1:
                    self.progress.begin_tile(i * len(cols) + j, len(rows) * len(cols))
                wx = ramp_weights(cols, j, self.blend).repeat_interleave(s).to(self.device, torch.float32)
                out = self._tile(lq[..., y0:y1, x0:x1], local_keyframes, (y0, y1, x0, x1), frame_start, length)
                canvas[:, :, y0 * s:y1 * s, x0 * s:x1 * s] += out * (wy[:, None] * wx[None, :])
        return canvas

    def _tile(self, tile: torch.Tensor, keyframes: dict, box: tuple, frame_start: int, length: int) -> torch.Tensor:
        spec, s = self.spec, self.spec.scale
        y0, y1, x0, x1 = box
        m = spec.spatial_multiple
        pad_h, pad_w = (-(y1 - y0)) % m, (-(x1 - x0)) % m
        tile = _pad_video(tile, pad_h, pad_w, spec.pad_mode)
        tile_keyframes = {
            k: _pad_image(v[:, y0 * s:y1 * s, x0 * s:x1 * s], pad_h * s, pad_w * s, spec.pad_mode).to(self.device)
            for k, v in keyframes.items()
        }
        generator = torch.Generator(device=self.device).manual_seed(self.seed + frame_start)
        context = WindowContext(frame_start=frame_start, num_valid=length, keyframes=tile_keyframes,
                                generator=generator, spatial_offset=(y0, x0),
                                on_stage=self.progress.stage if self.progress is not None else None)
        out = self.method.upscale(tile.to(self.device), context)
        expected = (1, 3, tile.shape[2], tile.shape[3] * s, tile.shape[4] * s)
        if tuple(out.shape) != expected:
            raise RuntimeError(f"{type(self.method).__name__}.upscale returned shape {tuple(out.shape)}, "
                               f"expected {expected} for input {tuple(tile.shape)} at scale {s}.")
        if not out.dtype.is_floating_point:
            raise RuntimeError(f"{type(self.method).__name__}.upscale returned dtype {out.dtype}, expected float.")
        return out[0, :, :length, : (y1 - y0) * s, : (x1 - x0) * s].to(self.device, torch.float32)


def upscale_stream(
    runner: WindowRunner,
    chunks: Iterable,
    num_frames: int,
    keyframes: dict | None = None,
    on_window: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[torch.Tensor, list]]:
    """Stream a clip through ``runner`` window by window (all of :class:`WindowStream`'s windows).

    Args:
        runner: The window runner.
        chunks: Iterable of objects with ``frames`` (``(T, H, W, 3)`` uint8/uint16) and ``pts``
            (list of timestamps or None), as :mod:`vsrkit.io` yields them.
        num_frames: Frames in the clip (decoded count, after any ``max_frames`` cap).
        keyframes: See :meth:`WindowRunner.__call__`; positions in the clip's temporal padding go to
            the last window (:func:`vsrkit.engine.keyframes.keyframes_in_window`). With
            ``spec.carry_keyframes`` each window after a conditioned one also gets a pseudo-keyframe
            from the previous window's output (:class:`vsrkit.engine.keyframes.KeyframeCarry`).
        on_window: Called with ``(frames done, num_frames)`` after each window (progress).

    Yields:
        ``(frames (3, n, H*s, W*s) float32 in [-1, 1] on the runner's device, pts list)`` for finished
        frames, in order.
    """
    yield from WindowStream(runner, chunks, num_frames, keyframes, on_window)


class WindowStream:
    """The engine's one window loop: runs windows of a clip's plan in order and blends them.

    Each window's output is weighted (:func:`vsrkit.engine.windows.ramp_weights`, normalised over
    every window that covers a frame) and added, in window order, onto the running sums of the
    frames it covers; a frame is finished, and yielded, once no later window covers it. Only one
    window of input and the sums still waiting for later windows are held.

    :func:`upscale_stream` runs every window. A segment of several processes
    (:mod:`vsrkit.engine.distributed`) runs the windows ``windows = (first, stop)``: its chunks
    start at ``feed_start``, the frames ``[ranges[first][0], shared_until)`` that the previous
    segment's windows also cover are not yielded but kept apart (``lead_parts``, ``lead_pts``),
    and the sums of the frames that the next segment's windows also cover are left in ``tail``.
    The additions are the ones one process makes, in its order, so split output is bit-identical.

    Iterating yields ``(frames (3, n, H*s, W*s) float32 in [-1, 1] on the runner's device, pts)``
    for the finished frames from ``shared_until`` on, in order. Afterwards:

    * ``lead_parts``: ``[(window start, weighted output over [window start, shared_until))]`` in
      window order (:func:`vsrkit.engine.distributed.finish_shared` adds them onto the previous
      segment's ``tail``).
    * ``lead_pts``: the timestamps of the frames ``[ranges[first][0], shared_until)``.
    * ``tail``: partial sums ``(3, m, H*s, W*s)`` of the frames from ``ranges[stop][0]`` on
      (None after the clip's last window).

    Args:
        runner: The window runner.
        chunks: Source chunks (see :func:`upscale_stream`) starting at frame ``feed_start``.
        num_frames: Frames in the clip.
        keyframes: See :func:`upscale_stream` (clip frame indices). A keyframe carried between
            windows starts afresh at window ``first``: a segment must start where the carry
            chain breaks (:func:`vsrkit.engine.keyframes.carried_windows`).
        on_window: Called with ``(frames done in the clip, num_frames)`` after each window.
        ranges: The clip's window plan (default: :func:`plan_ranges` of the runner's spec).
        windows: ``(first, stop)`` window indices to run (default: all).
        feed_start: Clip index of the first frame ``chunks`` yields.
        shared_until: See above (default: the first window's start, i.e. nothing kept apart).
    """

    def __init__(self, runner: WindowRunner, chunks: Iterable, num_frames: int, keyframes: dict | None = None,
                 on_window: Callable[[int, int], None] | None = None, *, ranges: list | None = None,
                 windows: tuple[int, int] | None = None, feed_start: int = 0, shared_until: int | None = None):
        spec = runner.spec
        self.runner, self.chunks, self.num_frames = runner, chunks, num_frames
        self.keyframes, self.on_window = keyframes, on_window
        self.ranges = ranges if ranges is not None else plan_ranges(num_frames, spec.window, spec.overlap,
                                                                     spec.stride_multiple)
        self.windows = windows if windows is not None else (0, len(self.ranges))
        self.feed_start = feed_start
        first_start = self.ranges[self.windows[0]][0] if self.windows[0] < self.windows[1] else feed_start
        self.shared_until = first_start if shared_until is None else shared_until
        self.lead_parts: list[tuple[int, torch.Tensor]] = []
        self.lead_pts: list = []
        self.tail: torch.Tensor | None = None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list]]:
        runner, ranges, num_frames, keyframes = self.runner, self.ranges, self.num_frames, self.keyframes
        spec, progress = runner.spec, getattr(runner, "progress", None)
        first, stop_window = self.windows
        if first >= stop_window:
            return
        expected = ranges[stop_window - 1][1]
        chunk_iter = iter(self.chunks)
        buffer: list[np.ndarray] = []  # input frames from index `buffer_start` on
        buffer_pts: list = []
        buffer_start = self.feed_start
        pending: torch.Tensor | None = None  # weighted output sums for frames from `pending_start` on
        pending_start = ranges[first][0]
        shared_until = self.shared_until
        carry = KeyframeCarry(spec.stride_multiple) if spec.carry_keyframes and keyframes else None
        for index in range(first, stop_window):
            start, stop = ranges[index]
            while buffer_start + len(buffer) < stop:
                try:
                    chunk = next(chunk_iter)
                except StopIteration:
                    raise RuntimeError(f"the source ended after {buffer_start + len(buffer)} frames; "
                                       f"{expected} were expected") from None
                buffer.extend(list(chunk.frames))
                buffer_pts.extend(chunk.pts if chunk.pts is not None else [None] * len(chunk.frames))
            window_frames = np.stack(buffer[start - buffer_start: stop - buffer_start])
            window_keyframes = keyframes_in_window(keyframes or {}, start, stop, num_frames,
                                                   start + spec.padded_length(stop - start))
            if carry is not None:
                window_keyframes = carry.add(window_keyframes, start)
            if progress is not None:
                progress.begin_window(index, len(ranges), stop - start)
            out = runner(frames_to_model(window_frames), start, window_keyframes)
            next_start = ranges[index + 1][0] if index + 1 < len(ranges) else num_frames
            if carry is not None:
                carry.remember(out, window_keyframes, start, next_start if index + 1 < len(ranges) else None)
            weights = ramp_weights(ranges, index, runner.blend).to(out.device, torch.float32)
            out = out * weights[None, :, None, None]
            if start < shared_until:
                # Kept apart: the process finishing these frames adds them onto the earlier
                # windows' sums, in this order (the additions of one process).
                self.lead_parts.append((start, out[:, : shared_until - start].clone()))
            if pending is None:
                pending, pending_start = out, start
            else:
                overlap = pending_start + pending.shape[1] - start
                pending[:, pending.shape[1] - overlap:] += out[:, :overlap]
                pending = torch.cat([pending, out[:, overlap:]], dim=1)
            done = next_start - pending_start
            pts = buffer_pts[pending_start - buffer_start: next_start - buffer_start]
            shared = max(0, min(done, shared_until - pending_start))
            self.lead_pts.extend(pts[:shared])
            if done > shared:
                yield pending[:, shared:done], pts[shared:]
            pending, pending_start = pending[:, done:], next_start
            drop = next_start - buffer_start
            buffer, buffer_pts, buffer_start = buffer[drop:], buffer_pts[drop:], next_start
            if progress is not None:
                progress.frames_finished(next_start)
            if self.on_window is not None:
                self.on_window(next_start, num_frames)
        self.tail = pending if pending is not None and pending.shape[1] else None
