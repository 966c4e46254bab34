"""Runs a streaming method over a clip: frames in order, state kept by the method, outputs as they finish.

A :class:`~vsrkit.methods.protocol.StreamingMethod` (InfVSR and causal methods like it) keeps
caches from chunk to chunk and picks its own chunks, so the engine neither cuts windows nor
blends: it converts each decoded piece of frames to the method layout, pads it spatially,
pushes it, crops what comes back and hands finished frames on with their timestamps. Memory is
bounded by one decoded piece plus what the method buffers, whatever the clip's length.

Decoding, the model and the consumer (the file writer) overlap: the decoder and the model each
run in a background thread (:class:`vsrkit.engine.overlap.Prefetcher`, the engine's one thread
mechanism), connected by small bounded queues, so a long clip costs about the slowest of the
three stages rather than their sum.

:func:`upscale_frames` is the one entry the file runner and tools call; it dispatches on the
method's protocol (``open_stream``), never on its name.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from vsrkit.engine.inference import WindowRunner, _pad_video, frames_to_model, upscale_stream
from vsrkit.engine.overlap import Prefetcher
from vsrkit.errors import UserError
from vsrkit.methods.protocol import StreamContext, StreamingMethod

logger = logging.getLogger(__name__)

# Frames converted and pushed at a time: bounds host and device memory when a source hands over
# a long chunk (a tool passing a whole clip at once).
PUSH_FRAMES = 16
# Items waiting between the decoder, the model and the consumer.
QUEUE_DEPTH = 2


def is_streaming(method) -> bool:
    """Whether ``method`` follows the streaming contract (it has ``open_stream``)."""
    return isinstance(method, StreamingMethod)


def check_stream_settings(method, engine_cfg) -> None:
    """Fail before any weights load when engine settings that only apply to windows are set for a
    streaming method (it chooses its own chunks and tiles).

    Args:
        method: The constructed method.
        engine_cfg: The ``engine`` settings (:class:`vsrkit.engine.settings.EngineConfig`).
    """
    if not is_streaming(method):
        return
    for key in ("window", "overlap", "tile", "tile_overlap"):
        value = getattr(engine_cfg, key, None)
        if value is not None:
            raise UserError(f"`engine.{key}={value}` does not apply to {type(method).__name__}: it streams the clip "
                            f"in chunks of its own choosing with caches carried between them. Drop engine.{key}.")


def _pieces(chunks: Iterable, size: int) -> Iterator[tuple[np.ndarray, list]]:
    """Split the source's chunks into pieces of at most ``size`` frames, with their timestamps."""
    for chunk in chunks:
        frames = chunk.frames
        pts = list(chunk.pts) if chunk.pts is not None else [None] * len(frames)
        for start in range(0, len(frames), size):
            yield frames[start:start + size], pts[start:start + size]


def stream_clip(
    method,
    chunks: Iterable,
    num_frames: int | None,
    device: torch.device,
    *,
    seed: int = 42,
    spatial_multiple: int = 1,
    pad_mode: str = "replicate",
    on_stage: Callable[[str, int, int], None] | None = None,
    push_frames: int = PUSH_FRAMES,
) -> Iterator[tuple[torch.Tensor, list]]:
    """Stream one clip through ``method`` (no threads; :func:`upscale_frames` adds them).

    Args:
        method: A :class:`~vsrkit.methods.protocol.StreamingMethod`, loaded.
        chunks: Objects with ``frames`` (``(T, H, W, 3)`` uint8/uint16) and ``pts`` (list or None),
            as :mod:`vsrkit.io` yields them.
        num_frames: Frames in the clip, if known (progress only; every frame is pushed).
        device: Where the method runs; inputs are moved there.
        seed: Seed of the stream's generator.
        spatial_multiple: Input H and W are padded to a multiple of this (the spec's); outputs
            are cropped back.
        pad_mode: Padding mode (see :class:`~vsrkit.methods.protocol.WindowSpec`).
        on_stage: Progress callback handed to the method.
        push_frames: Most frames converted and pushed at a time.

    Yields:
        ``(frames (3, n, H*s, W*s) float32 in [-1, 1] on the method's device, pts list)``, in order,
        covering every input frame exactly once.
    """
    scale = method.window_spec().scale
    generator = torch.Generator(device=device).manual_seed(seed)
    stream = method.open_stream(StreamContext(num_frames=num_frames, generator=generator, on_stage=on_stage))
    waiting_pts: deque = deque()
    size: tuple[int, int] | None = None
    name = type(method).__name__

    def take(out: torch.Tensor) -> tuple[torch.Tensor, list] | None:
        hw = ((size[0] + pad[0]) * scale, (size[1] + pad[1]) * scale)
        if out.dim() != 5 or out.shape[:2] != (1, 3) or tuple(out.shape[3:]) != hw:
            raise RuntimeError(f"{name} stream returned shape {tuple(out.shape)}, "
                               f"expected (1, 3, T, {hw[0]}, {hw[1]}).")
        n = out.shape[2]
        if n > len(waiting_pts):
            raise RuntimeError(f"{name} stream returned {n} frames but only {len(waiting_pts)} were pending.")
        if n == 0:
            return None
        pts = [waiting_pts.popleft() for _ in range(n)]
        return out[0, :, :, : size[0] * scale, : size[1] * scale].float(), pts

    pad = (0, 0)
    pushed = 0
    for frames, pts in _pieces(chunks, push_frames):
        if size is None:
            size = (frames.shape[1], frames.shape[2])
            pad = ((-size[0]) % spatial_multiple, (-size[1]) % spatial_multiple)
        elif (frames.shape[1], frames.shape[2]) != size:
            raise UserError(f"frame size changed within the clip from {size} to {frames.shape[1:3]}; "
                            f"a stream keeps one size.")
        lq = _pad_video(frames_to_model(frames), pad[0], pad[1], pad_mode)
        if device.type == "cuda":
            lq = lq.pin_memory().to(device, non_blocking=True)
        else:
            lq = lq.to(device)
        waiting_pts.extend(pts)
        pushed += len(frames)
        taken = take(stream.push(lq))
        if taken is not None:
            yield taken
    if num_frames is not None and pushed != num_frames:
        raise RuntimeError(f"the source ended after {pushed} frames; {num_frames} were expected")
    if size is not None:
        taken = take(stream.flush())
        if taken is not None:
            yield taken
    if waiting_pts:
        raise RuntimeError(f"{name} stream finished with {len(waiting_pts)} of {pushed} frames never returned.")


def upscale_frames(runner: WindowRunner, chunks: Iterable, num_frames: int, keyframes: dict | None = None,
                   on_window: Callable[[int, int], None] | None = None,
                   on_stage: Callable[[str, int, int], None] | None = None,
                   overlap_stages: bool = True) -> Iterator[tuple[torch.Tensor, list]]:
    """Upscale a clip with the runner's method: streamed if it is a streaming method, else windowed.

    Args:
        runner: The window runner (its ``method``, ``spec``, ``device`` and ``seed`` are used by
            both paths).
        chunks: Source chunks (see :func:`stream_clip`).
        num_frames: Frames in the clip.
        keyframes: Keyframes for windowed methods (streaming methods take none).
        on_window: Windowed methods: called after each window (progress).
        on_stage: Streaming methods: the progress callback handed to the stream.
        overlap_stages: Streaming methods: decode in one thread and run the model in another, so
            decoding, the model and the caller's consumer (encoding) overlap.

    Yields:
        ``(frames (3, n, H*s, W*s) float32 in [-1, 1] on the runner's device, pts list)``, in order.
    """
    method = runner.method
    if not is_streaming(method):
        yield from upscale_stream(runner, chunks, num_frames, keyframes, on_window)
        return
    if keyframes:
        raise UserError(f"{type(method).__name__} is a streaming method and takes no keyframes.")
    spec = runner.spec

    def run(source: Iterable) -> Iterator[tuple[torch.Tensor, list]]:
        return stream_clip(method, source, num_frames, runner.device, seed=runner.seed,
                           spatial_multiple=spec.spatial_multiple, pad_mode=spec.pad_mode, on_stage=on_stage)

    if not overlap_stages:
        yield from run(chunks)
        return
    # The decoder and the model each in a thread (vsrkit.engine.overlap), the caller in this one.
    with Prefetcher(chunks, QUEUE_DEPTH, name="vsrkit-decode") as decoded, \
            Prefetcher(run(decoded), QUEUE_DEPTH, name="vsrkit-model") as outputs:
        yield from outputs
