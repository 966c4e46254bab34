"""`vsrkit infer` over several processes: one long clip split into segments, or inputs dealt out.

Started with ``accelerate launch`` or ``torchrun`` (one process per GPU, any number of nodes):
accelerate's :class:`~accelerate.PartialState` sets up the process group and the device of each
process, and this module adds a gloo group (CPU tensors, long timeout) for the frames and
partial sums that move between processes.

One clip over N processes (:func:`upscale_file_split`): process ``i`` upscales segment ``i`` of
:mod:`vsrkit.engine.segments`'s plan. The first process writes its own frames into the output as
they finish. The others keep theirs in a spool file (raw frames on local disk, so memory does not
grow with the clip), then send them to the first process, in order, in pieces of at most
``decode_chunk`` frames; the first process writes them after its own. Windowed methods: the
partial sums of the frames where two segments' windows overlap go from each process to the next,
which completes them exactly as one process would. The output therefore has the frames, timestamps,
frame rate and audio of the one-process output, and, for windowed methods, the same pixels.

Many inputs (:func:`deal`): round-robin over the processes, each upscaling whole files, no traffic.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from vsrkit.engine.distributed_config import DistributedConfig
from vsrkit.engine.inference import WindowRunner, frames_to_model, model_to_frames
from vsrkit.engine.segments import Segment, plan_stream_segments, plan_window_segments
from vsrkit.engine.windows import plan_ranges, ramp_weights
from vsrkit.errors import UserError

logger = logging.getLogger(__name__)


def launched() -> bool:
    """Whether this process is one of several started by ``accelerate launch`` / ``torchrun``."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Processes:
    """This process's place among the launched ones.

    Args:
        rank: Index of this process (0 writes the outputs of split clips).
        world: Number of processes.
        device: Where this process runs its method (``cuda:<local rank>`` or ``cpu``).
        group: gloo process group for the CPU tensors exchanged here.
    """

    rank: int
    world: int
    device: torch.device
    group: object

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def log(self, message: str, *args) -> None:
        """Log on the first process at INFO (the others at DEBUG: one voice per run)."""
        logger.log(logging.INFO if self.is_main else logging.DEBUG, message, *args)

    def send(self, tensor: torch.Tensor, dst: int) -> None:
        import torch.distributed as dist

        dist.send(tensor.contiguous().cpu(), dst, group=self.group)

    def recv(self, shape: tuple, dtype: torch.dtype, src: int) -> torch.Tensor:
        import torch.distributed as dist

        tensor = torch.empty(shape, dtype=dtype)
        dist.recv(tensor, src, group=self.group)
        return tensor


def join(device_name: str, timeout_minutes: int = 120) -> Processes | None:
    """:func:`start_processes` when several processes were launched, else None (one process).

    ``accelerate launch --num_processes N`` starts a single process when it finds neither a
    config file, ``--multi_gpu`` nor several GPUs (on CPU-only and one-GPU machines); it still
    sets ``MASTER_ADDR``, which is how that case is recognised. The process then starts the N
    processes that were asked for itself (:func:`relaunch`) and exits with their status.
    """
    if launched():
        return start_processes(device_name, timeout_minutes)
    if "MASTER_ADDR" in os.environ and "ACCELERATE_MIXED_PRECISION" in os.environ:
        requested = requested_processes()
        if requested > 1 and not os.environ.get(_RELAUNCHED):
            raise SystemExit(relaunch(requested))
        logger.warning("accelerate launch started one process: it starts several only with --multi_gpu, a "
                       "--config_file (conf/accelerate/ddp.yaml) or more than one visible GPU. Add --multi_gpu "
                       "(with ACCELERATE_USE_CPU=true for CPU processes) to split the work.")
    return None


_RELAUNCHED = "VSRKIT_RELAUNCHED"


def requested_processes(parent_cmdline: list[str] | None = None) -> int:
    """The ``--num_processes`` (or ``--num-processes``) given to the ``accelerate launch`` that
    started this process, read from the parent's command line (Linux ``/proc``); 1 when unknown."""
    if parent_cmdline is None:
        try:
            raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
        except OSError:
            return 1
        parent_cmdline = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if not any("accelerate" in arg for arg in parent_cmdline):  # `accelerate launch` or `-m accelerate.commands.launch`
        return 1
    for i, arg in enumerate(parent_cmdline):
        for flag in ("--num_processes", "--num-processes"):
            value = None
            if arg == flag and i + 1 < len(parent_cmdline):
                value = parent_cmdline[i + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            if value is not None:
                try:
                    return max(int(value), 1)
                except ValueError:
                    return 1
    return 1


def relaunch(processes: int) -> int:
    """Start ``processes`` copies of this command with ``torch.distributed.run`` (what
    ``accelerate launch --multi_gpu`` does) and return their exit status."""
    import subprocess
    import sys

    logger.warning("accelerate launch started one process for --num_processes %d (without --multi_gpu or a config "
                   "file it starts one on a machine with fewer GPUs); vsrkit starts the %d processes itself "
                   "(torch.distributed.run).", processes, processes)
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
    env[_RELAUNCHED] = "1"
    # sys.orig_argv: the command as typed (Hydra rewrites sys.argv); drop the interpreter and its own flags.
    args = list(sys.orig_argv[1:])
    while args and args[0].startswith("-") and args[0] != "-m":
        args.pop(0)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args]
    return subprocess.run(command, env=env).returncode


def start_processes(device_name: str, timeout_minutes: int = 120) -> Processes:
    """Join the launched processes (call once per process, before any weights load).

    Args:
        device_name: The ``engine.device`` setting: ``auto`` and ``cuda`` mean this process's GPU
            (``cuda:<local rank>``, or the CPU when there is none / ``ACCELERATE_USE_CPU=true``);
            ``cpu`` and ``cuda:N`` are kept as given.
        timeout_minutes: How long a process waits for another one's frames or sums.
    """
    import torch.distributed as dist
    from accelerate import PartialState

    from accelerate.utils import parse_flag_from_env

    # PartialState (unlike Accelerator) does not read ACCELERATE_USE_CPU; without it, CPU processes
    # would not join a process group at all.
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or device_name == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    if state.num_processes < 2:
        raise RuntimeError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} but accelerate set up {state.num_processes} process")
    device = state.device if device_name in ("auto", "cuda") else torch.device(device_name)
    # The default group may be NCCL (GPU tensors); frames and sums travel as CPU tensors.
    group = dist.new_group(backend="gloo", timeout=timedelta(minutes=timeout_minutes))
    return Processes(rank=state.process_index, world=state.num_processes, device=device, group=group)


def deal(pairs: list, rank: int, world: int) -> list:
    """This process's share of ``pairs`` (round-robin in input order: every process gets every
    ``world``-th input, so a rerun deals the same files to the same processes)."""
    return list(pairs[rank::world])


# --- one segment ------------------------------------------------------------------------------


class _Piece:
    """A run of frames as :func:`vsrkit.engine.inference.upscale_stream` and the streaming
    engine take them (``frames (T, H, W, 3)``, ``pts``)."""

    def __init__(self, frames: np.ndarray, pts: list | None):
        self.frames, self.pts = frames, pts


def frames_from(chunks: Iterable, first: int) -> Iterator[_Piece]:
    """The source's chunks (starting at frame 0) with the frames before ``first`` dropped."""
    seen = 0
    for chunk in chunks:
        n = len(chunk.frames)
        if seen + n > first:
            skip = max(0, first - seen)
            pts = list(chunk.pts[skip:]) if chunk.pts is not None else None
            yield _Piece(chunk.frames[skip:], pts)
        seen += n


class WindowSegmentRun:
    """Runs one segment of windows, as :func:`vsrkit.engine.inference.upscale_stream` runs them all.

    Iterating yields ``(frames (3, n, H*s, W*s) float32 in [-1, 1], pts)`` for the frames
    ``[segment.shared_until, segment.stop)``, in order. Afterwards:

    * ``lead_parts``: ``[(window start, weighted output of frames [window start, shared_until))]``
      in window order; :func:`finish_shared` adds them onto the previous segment's partial sums.
    * ``lead_pts``: the timestamps of the frames ``[segment.start, shared_until)``.
    * ``tail``: partial sums ``(3, m, H*s, W*s)`` of the frames from ``segment.stop`` on that the
      next segment's windows also touch (``None`` for the last segment).

    Args:
        runner: The window runner.
        chunks: Source chunks starting at ``segment.feed_start``.
        ranges: The whole clip's window plan.
        num_frames: Frames in the clip.
        segment: The segment to run.
        keyframes: ``{clip frame index: tensor}`` (see :class:`WindowRunner`).
        on_window: Called after each window with ``(frames finished, frames in the segment)``.
    """

    def __init__(self, runner: WindowRunner, chunks: Iterable, ranges: list, num_frames: int, segment: Segment,
                 keyframes: dict | None = None, on_window: Callable[[int, int], None] | None = None):
        self.runner, self.chunks, self.ranges, self.num_frames = runner, chunks, ranges, num_frames
        self.segment, self.keyframes, self.on_window = segment, keyframes, on_window
        self.lead_parts: list[tuple[int, torch.Tensor]] = []
        self.lead_pts: list = []
        self.tail: torch.Tensor | None = None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list]]:
        seg, ranges, runner = self.segment, self.ranges, self.runner
        chunk_iter = iter(self.chunks)
        buffer: list[np.ndarray] = []
        buffer_pts: list = []
        buffer_start = seg.feed_start
        pending: torch.Tensor | None = None  # weighted output sums for frames from `pending_start` on
        pending_start = seg.start
        for index in range(seg.first_window, seg.stop_window):
            start, stop = ranges[index]
            while buffer_start + len(buffer) < stop:
                try:
                    chunk = next(chunk_iter)
                except StopIteration:
                    raise RuntimeError(f"the source ended after {buffer_start + len(buffer)} frames; "
                                       f"{stop} were expected") from None
                buffer.extend(list(chunk.frames))
                buffer_pts.extend(chunk.pts if chunk.pts is not None else [None] * len(chunk.frames))
            window_frames = np.stack(buffer[start - buffer_start: stop - buffer_start])
            out = runner(frames_to_model(window_frames), start, self.keyframes)
            weights = ramp_weights(ranges, index, runner.blend).to(out.device, torch.float32)
            out = out * weights[None, :, None, None]
            if start < seg.shared_until:
                # Kept apart: one process adds these onto the earlier windows' sums, in this order.
                self.lead_parts.append((start, out[:, : seg.shared_until - start].clone()))
            # From here on the same bookkeeping as upscale_stream, so sums are formed identically.
            if pending is None:
                pending, pending_start = out, start
            else:
                overlap = pending_start + pending.shape[1] - start
                pending[:, pending.shape[1] - overlap:] += out[:, :overlap]
                pending = torch.cat([pending, out[:, overlap:]], dim=1)
            next_start = ranges[index + 1][0] if index + 1 < len(ranges) else self.num_frames
            done = next_start - pending_start
            pts = buffer_pts[pending_start - buffer_start: next_start - buffer_start]
            shared = max(0, min(done, seg.shared_until - pending_start))
            self.lead_pts.extend(pts[:shared])
            if done > shared:
                yield pending[:, shared:done], pts[shared:]
            pending, pending_start = pending[:, done:], next_start
            drop = next_start - buffer_start
            buffer, buffer_pts, buffer_start = buffer[drop:], buffer_pts[drop:], next_start
            if self.on_window is not None:
                self.on_window(min(next_start, seg.stop) - seg.start, seg.stop - seg.start)
        self.tail = pending if pending is not None and pending.shape[1] else None


def finish_shared(partial: torch.Tensor, parts: list[tuple[int, torch.Tensor]], start: int) -> torch.Tensor:
    """Complete the shared frames ``[start, start + partial.shape[1])``.

    Args:
        partial: The previous segment's partial sums of those frames (its pending output).
        parts: This segment's weighted window outputs over them, ``[(window start, tensor)]`` in
            window order.
        start: Clip index of the first shared frame.

    Returns:
        ``partial`` with each part added in window order (one process's additions, in its order).
    """
    total = partial.clone()
    for window_start, part in parts:
        offset = window_start - start
        total[:, offset: offset + part.shape[1]] += part.to(total.device)
    return total


def stream_segment(driver: Callable, runner: WindowRunner, chunks: Iterable,
                   segment: Segment) -> Iterator[tuple[torch.Tensor, list]]:
    """Run a streaming method over ``[segment.feed_start, segment.stop)`` as a fresh stream and
    yield the output of ``[segment.start, segment.stop)`` (the warm-up's output is dropped).

    Args:
        driver: ``driver(runner, chunks, num_frames) -> iterator of (frames, pts)`` running one
            fresh stream (the streaming engine's ``upscale_frames``).
        runner: Carries the method, spec, device and seed.
        chunks: Source chunks starting at ``segment.feed_start``.
        segment: The segment.
    """
    drop = segment.warmup
    for frames, pts in driver(runner, chunks, segment.stop - segment.feed_start):
        if drop >= frames.shape[1]:
            drop -= frames.shape[1]
            continue
        yield frames[:, drop:], list(pts[drop:])
        drop = 0


def is_streaming(method) -> bool:
    """A streaming method (it carries state between chunks) has ``open_stream``."""
    return callable(getattr(method, "open_stream", None))


def default_stream_driver() -> Callable:
    """The streaming engine's clip runner (``vsrkit.engine.streaming.upscale_frames``, issue 12)."""
    try:
        from vsrkit.engine.streaming import upscale_frames
    except ImportError:
        raise UserError("this method streams (it has open_stream) but this vsrkit has no streaming engine "
                        "(vsrkit.engine.streaming); run it in one process.") from None
    return upscale_frames


# --- moving frames between processes -------------------------------------------------------------

_END = 0


class _Spool:
    """Finished frames of a segment kept on disk until the first process asks for them."""

    def __init__(self, folder: str | None, frame_shape: tuple, dtype: np.dtype):
        self._dir = tempfile.TemporaryDirectory(prefix="vsrkit-spool-", dir=folder)
        self.path = Path(self._dir.name) / "frames.raw"
        self.frame_shape, self.dtype = tuple(frame_shape), np.dtype(dtype)
        self._handle = open(self.path, "wb")
        self.frames = 0
        self.pts: list = []

    def write(self, frames: np.ndarray, pts: list) -> None:
        self._handle.write(np.ascontiguousarray(frames, dtype=self.dtype).tobytes())
        self.frames += len(frames)
        self.pts.extend(pts)

    def pieces(self, size: int) -> Iterator[tuple[np.ndarray, list]]:
        self._handle.close()
        frame_bytes = int(np.prod(self.frame_shape)) * self.dtype.itemsize
        with open(self.path, "rb") as handle:
            for start in range(0, self.frames, size):
                n = min(size, self.frames - start)
                data = np.frombuffer(bytearray(handle.read(n * frame_bytes)), dtype=self.dtype)
                yield data.reshape(n, *self.frame_shape), self.pts[start:start + n]

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()
        self._dir.cleanup()


def _send_frames(procs: Processes, frames: np.ndarray, pts: list) -> None:
    has_pts = bool(pts) and pts[0] is not None
    procs.send(torch.tensor([len(frames), int(has_pts), 0], dtype=torch.int64), 0)
    procs.send(torch.from_numpy(np.ascontiguousarray(frames).view(np.uint8).reshape(-1)), 0)
    if has_pts:
        procs.send(torch.tensor([int(p) for p in pts], dtype=torch.int64), 0)


def _receive_frames(procs: Processes, src: int, frame_shape: tuple, dtype: np.dtype,
                    result: dict) -> Iterator[tuple[np.ndarray, list | None]]:
    """Frames process ``src`` sends until its end marker; ``result["seconds"]`` is its compute time."""
    itemsize = np.dtype(dtype).itemsize
    while True:
        n, has_pts, extra = (int(v) for v in procs.recv((3,), torch.int64, src))
        if n == _END:
            result["seconds"] = extra / 1000.0
            return
        data = procs.recv((n * int(np.prod(frame_shape)) * itemsize,), torch.uint8, src).numpy()
        frames = data.view(dtype).reshape(n, *frame_shape)
        pts = [int(p) for p in procs.recv((n,), torch.int64, src)] if has_pts else None
        yield frames, pts


# --- one clip over all processes -----------------------------------------------------------------


def plan_segments(runner: WindowRunner, num_frames: int, world: int, config: DistributedConfig,
                  cuts: list[int] | None = None) -> list[Segment]:
    """The clip's segments for this method: window runs, or stream segments."""
    if is_streaming(runner.method):
        return plan_stream_segments(num_frames, world, warmup=config.stream_warmup, align=config.stream_align,
                                    offset=config.stream_offset, cuts=cuts or ())
    spec = runner.spec
    ranges = plan_ranges(num_frames, spec.window, spec.overlap, spec.stride_multiple)
    return plan_window_segments(ranges, num_frames, world)


def upscale_file_split(procs: Processes, runner: WindowRunner, src: Path, dst: Path, *, io_cfg, overwrite: bool,
                       max_frames: int | None, decode_chunk: int, config: DistributedConfig,
                       keyframes_for=None, progress: bool = True, stream_driver: Callable | None = None):
    """Upscale one input with every process working on a segment of it; the first one writes ``dst``.

    Call it on every process with the same arguments. Arguments as
    :func:`vsrkit.engine.run_infer.upscale_file`, plus:

    Args:
        procs: This process's place (:func:`start_processes`).
        config: The ``distributed`` settings.
        stream_driver: Streaming methods: runs one fresh stream (default: the streaming engine's).

    Returns:
        :class:`vsrkit.engine.run_infer.FileStats` on the first process, None on the others.
    """
    from vsrkit.engine.progress import InferProgress
    from vsrkit.engine.run_infer import FileStats, open_writer, parse_fps
    from vsrkit.io import open_source

    source = open_source(src, frames_fps=parse_fps(io_cfg.frames_fps))
    info = source.info
    num_frames = info.num_frames if max_frames is None else min(info.num_frames, max_frames)
    keyframes = keyframes_for(source, num_frames) if keyframes_for is not None else None
    streaming = is_streaming(runner.method)
    cuts = None
    if streaming and callable(getattr(runner.method, "scene_cuts", None)):
        cuts = list(runner.method.scene_cuts(c.frames for c in source.chunks(decode_chunk, max_frames=num_frames)))
    segments = plan_segments(runner, num_frames, procs.world, config, cuts)
    plan = "; ".join(f"segment {s.index} on process {s.index}: {s.describe()}" for s in segments)
    procs.log("%s: %d frames over %d of %d processes: %s", src.name, num_frames, len(segments), procs.world, plan)
    if procs.rank >= len(segments):
        procs.log("process %d has no segment of %s (too few windows to share)", procs.rank, src.name)
        return None
    segment = segments[procs.rank]
    scale = runner.spec.scale
    frame_shape = (info.height * scale, info.width * scale, 3)
    device = runner.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    chunks = frames_from(source.chunks(decode_chunk, max_frames=segment.feed_stop), segment.feed_start)
    if streaming:
        run = None
        produced = stream_segment(stream_driver or default_stream_driver(), runner, chunks, segment)
    else:
        spec = runner.spec
        ranges = plan_ranges(num_frames, spec.window, spec.overlap, spec.stride_multiple)
        run = WindowSegmentRun(runner, chunks, ranges, num_frames, segment, keyframes)
        produced = iter(run)

    if procs.is_main:
        bar = InferProgress(num_frames, f"{src.name} -> {dst.name}", enabled=progress)
        written = 0
        with open_writer(dst, info, scale, io_cfg, overwrite, src, capped=num_frames < info.num_frames,
                         names=source.frame_names()) as writer:
            for frames, pts in produced:
                writer.write(model_to_frames(frames, info.dtype), pts=None if pts and pts[0] is None else pts)
                written += frames.shape[1]
                bar.frames_finished(written)
            procs.log("segment 0 (process 0) computed %s in %.2f s", segment.describe(), time.perf_counter() - started)
            _hand_over_tail(procs, run, segments)
            for other in segments[1:]:
                result: dict = {}
                for frames, pts in _receive_frames(procs, other.index, frame_shape, info.dtype, result):
                    writer.write(frames, pts=pts)
                    written += len(frames)
                    bar.frames_finished(written)
                procs.log("segment %d (process %d) computed %s in %.2f s", other.index, other.index,
                          other.describe(), result["seconds"])
        bar.close()
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
        logger.info("%s: %d frames in %.2f s (%.3f s/frame) over %d processes -> %s", src, written, seconds,
                    seconds / max(written, 1), len(segments), dst)
        return FileStats(str(src), str(dst), written, seconds, int(peak))

    spool = _Spool(config.spool_dir, frame_shape, info.dtype)
    try:
        for frames, pts in produced:
            spool.write(model_to_frames(frames, info.dtype), pts)
        seconds = time.perf_counter() - started
        pending_send = _hand_over_tail(procs, run, segments, wait=False)
        lead = None
        if run is not None and segment.shared_until > segment.start:
            n = segment.shared_until - segment.start
            partial = procs.recv((3, n, frame_shape[0], frame_shape[1]), torch.float32, procs.rank - 1)
            lead = model_to_frames(finish_shared(partial.to(device), run.lead_parts, segment.start), info.dtype)
        if pending_send is not None:
            pending_send.wait()
        if lead is not None:
            _send_frames(procs, lead, run.lead_pts)
        for frames, pts in spool.pieces(decode_chunk):
            _send_frames(procs, frames, pts)
        procs.send(torch.tensor([_END, 0, int(seconds * 1000)], dtype=torch.int64), 0)
    finally:
        spool.close()
    return None


def _hand_over_tail(procs: Processes, run: WindowSegmentRun | None, segments: list[Segment], wait: bool = True):
    """Send this segment's partial sums of the frames it shares with the next segment (if any)."""
    if run is None or procs.rank + 1 >= len(segments):
        return None
    following = segments[procs.rank + 1]
    if following.shared_until <= following.start:
        return None
    import torch.distributed as dist

    tail = run.tail.contiguous().cpu()
    expected = following.shared_until - following.start
    if tail.shape[1] != expected:
        raise RuntimeError(f"segment {procs.rank} holds {tail.shape[1]} shared frames, the plan says {expected}")
    work = dist.isend(tail, procs.rank + 1, group=procs.group)
    if wait:
        work.wait()
        return None
    return _KeepAlive(work, tail)


@dataclasses.dataclass
class _KeepAlive:
    """An unfinished send and the tensor it reads (which must live until it completes)."""

    work: object
    tensor: torch.Tensor

    def wait(self) -> None:
        self.work.wait()
