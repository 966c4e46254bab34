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
which completes them exactly as one process would; segments start only where no window takes a
keyframe carried from the window before (``WindowSpec.carry_keyframes``). The output therefore has
the frames, timestamps, frame rate and audio of the one-process output, and, for windowed methods,
the same pixels. The input is opened, checked and ranged as in one process
(:func:`vsrkit.engine.run_infer.open_input`), and the windows run through the one-process loop
(:class:`vsrkit.engine.inference.WindowStream`).

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
from vsrkit.engine.inference import WindowRunner, WindowStream, model_to_frames
from vsrkit.engine.keyframes import carried_windows
from vsrkit.engine.segments import Segment, plan_stream_segments, plan_window_segments
from vsrkit.engine.streaming import is_streaming, upscale_frames
from vsrkit.engine.windows import plan_ranges

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


class WindowSegmentRun(WindowStream):
    """Runs one segment's windows with the engine's window loop (:class:`WindowStream`, the loop
    :func:`vsrkit.engine.inference.upscale_stream` runs), so the blending rule lives in one place.

    Iterating yields ``(frames (3, n, H*s, W*s) float32 in [-1, 1], pts)`` for the frames
    ``[segment.shared_until, segment.stop)``, in order; afterwards ``lead_parts``, ``lead_pts``
    and ``tail`` hold what is handed between processes (see :class:`WindowStream`).

    Args:
        runner: The window runner.
        chunks: Source chunks starting at ``segment.feed_start``.
        ranges: The whole clip's window plan.
        num_frames: Frames in the clip.
        segment: The segment to run.
        keyframes: ``{clip frame index: tensor}`` (see :func:`vsrkit.engine.inference.upscale_stream`).
        on_window: Called after each window with ``(frames finished in the clip, num_frames)``.
    """

    def __init__(self, runner: WindowRunner, chunks: Iterable, ranges: list, num_frames: int, segment: Segment,
                 keyframes: dict | None = None, on_window: Callable[[int, int], None] | None = None):
        super().__init__(runner, chunks, num_frames, keyframes, on_window, ranges=ranges,
                         windows=(segment.first_window, segment.stop_window), feed_start=segment.feed_start,
                         shared_until=segment.shared_until)
        self.segment = segment


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


def default_stream_driver(runner: WindowRunner, chunks: Iterable, num_frames: int) -> Iterator:
    """One fresh stream over ``chunks`` (the streaming engine's ``upscale_frames``; decoding and
    writing already run in threads beside it), reporting the method's stages to ``runner.progress``."""
    progress = getattr(runner, "progress", None)
    return upscale_frames(runner, chunks, num_frames, overlap_stages=False,
                          on_stage=progress.stage if progress is not None else None)


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
                  cuts: list[int] | None = None, keyframes: dict | None = None) -> tuple[list[Segment], str | None]:
    """The clip's segments for this method: window runs, or stream segments.

    With ``spec.carry_keyframes`` and keyframes, a window that takes the previous window's output
    as a keyframe cannot start a segment (its input would not exist yet in another process), so
    segments start only where the carry chain breaks (:func:`carried_windows`); the output stays
    exact, possibly over fewer processes.

    Returns:
        ``(segments, note)``: ``note`` says why fewer processes are used than could be (else None).
    """
    if is_streaming(runner.method):
        return plan_stream_segments(num_frames, world, warmup=config.stream_warmup, align=config.stream_align,
                                    offset=config.stream_offset, cuts=cuts or ()), None
    spec = runner.spec
    ranges = plan_ranges(num_frames, spec.window, spec.overlap, spec.stride_multiple)
    if not (spec.carry_keyframes and keyframes):
        return plan_window_segments(ranges, num_frames, world), None
    carried = carried_windows(ranges, keyframes, num_frames, spec.padded_length, spec.stride_multiple)
    segments = plan_window_segments(ranges, num_frames, world, [not c for c in carried])
    possible = len(plan_window_segments(ranges, num_frames, world))
    if len(segments) >= possible:
        return segments, None
    return segments, (f"{len(segments)} of {possible} possible segments: {sum(carried)} of {len(ranges)} windows take "
                      f"the previous window's output as a keyframe (keyframe carry), so a segment can start only "
                      f"at a window without one (a real keyframe in its first {spec.stride_multiple} frames); "
                      f"the output is exact. method.carry_keyframes=false, or keyframes at window starts, "
                      f"split it further.")


def upscale_file_split(procs: Processes, runner: WindowRunner, src: Path, dst: Path, *, io_cfg, overwrite: bool,
                       max_frames: int | None, decode_chunk: int, config: DistributedConfig,
                       keyframes_for=None, progress: bool = True, stream_driver: Callable | None = None,
                       start=None, end=None):
    """Upscale one input with every process working on a segment of it; the first one writes ``dst``.

    Call it on every process with the same arguments. Arguments as
    :func:`vsrkit.engine.run_infer.upscale_file` (the same input checks, range, notes, frame
    names, audio and publishing: :func:`vsrkit.engine.run_infer.open_input`), plus:

    Args:
        procs: This process's place (:func:`start_processes`).
        config: The ``distributed`` settings.
        stream_driver: Streaming methods: ``driver(runner, chunks, num_frames)`` runs one fresh
            stream (default: :func:`default_stream_driver`).

    Returns:
        :class:`vsrkit.engine.run_infer.FileStats` on the first process, None on the others.
    """
    from vsrkit.engine.overlap import BackgroundWriter, Prefetcher
    from vsrkit.engine.progress import InferProgress
    from vsrkit.engine.run_infer import FileStats, open_input

    job = open_input(src, io_cfg, max_frames=max_frames, start=start, end=end, keyframes_for=keyframes_for)
    info, num_frames = job.info, job.span.count
    streaming = is_streaming(runner.method)
    cuts = None
    if streaming and callable(getattr(runner.method, "scene_cuts", None)):
        cuts = list(runner.method.scene_cuts(c.frames for c in job.chunks(decode_chunk)))
    segments, note = plan_segments(runner, num_frames, procs.world, config, cuts, job.keyframes)
    plan = "; ".join(f"segment {s.index} on process {s.index}: {s.describe()}" for s in segments)
    procs.log("%s: %d frames over %d of %d processes: %s", src.name, num_frames, len(segments), procs.world, plan)
    if note is not None and procs.is_main:
        logger.warning("%s: %s", src.name, note)
    if procs.rank >= len(segments):
        procs.log("process %d has no segment of %s (too few windows to share)", procs.rank, src.name)
        return None
    segment = segments[procs.rank]
    model_hw = (info.height * runner.spec.scale, info.width * runner.spec.scale)  # what windows compute
    geometry = job.output_geometry(runner.spec.scale, io_cfg)  # io.output_size, applied before quantising

    def finished(frames: torch.Tensor) -> torch.Tensor:
        return frames if geometry is None else geometry(frames)

    frame_shape = (*(model_hw if geometry is None else geometry.target_hw), 3)  # frames written
    device = runner.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    run = None

    def produce(chunks: Iterable) -> Iterator[tuple[torch.Tensor, list]]:
        nonlocal run
        if streaming:
            return stream_segment(stream_driver or default_stream_driver, runner, chunks, segment)
        spec = runner.spec
        ranges = plan_ranges(num_frames, spec.window, spec.overlap, spec.stride_multiple)
        run = WindowSegmentRun(runner, chunks, ranges, num_frames, segment, job.keyframes)
        return iter(run)

    # Decoding and writing run in threads beside the method, as in upscale_file (vsrkit.engine.overlap).
    decoded = job.chunks(decode_chunk, segment.feed_start, segment.feed_stop)
    if procs.is_main:
        runner.progress = InferProgress(num_frames, f"{src.name} -> {dst.name}", enabled=progress)
        written = 0
        try:
            with job.open_writer(dst, runner.spec.scale, io_cfg, overwrite) as writer, \
                    BackgroundWriter(writer) as sink:
                with Prefetcher(decoded) as chunks:
                    for frames, pts in produce(chunks):
                        sink.write(model_to_frames(finished(frames), info.dtype), pts=job.output_pts(pts))
                        written += frames.shape[1]
                        if streaming:  # window runs report finished frames themselves
                            runner.progress.frames_finished(written)
                procs.log("segment 0 (process 0) computed %s in %.2f s", segment.describe(),
                          time.perf_counter() - started)
                _hand_over_tail(procs, run, segments)
                for other in segments[1:]:
                    result: dict = {}
                    for frames, pts in _receive_frames(procs, other.index, frame_shape, info.dtype, result):
                        sink.write(frames, pts=job.output_pts(pts))
                        written += len(frames)
                        runner.progress.frames_finished(written)
                    procs.log("segment %d (process %d) computed %s in %.2f s", other.index, other.index,
                              other.describe(), result["seconds"])
        finally:
            runner.progress.close()
            runner.progress = None
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
        logger.info("%s: %d frames in %.2f s (%.3f s/frame) over %d processes -> %s", src, written, seconds,
                    seconds / max(written, 1), len(segments), dst)
        return FileStats(str(src), str(dst), written, seconds, int(peak), [*job.notes, f"{len(segments)} processes"])

    spool = _Spool(config.spool_dir, frame_shape, info.dtype)
    try:
        with BackgroundWriter(spool) as sink, Prefetcher(decoded) as chunks:
            for frames, pts in produce(chunks):
                sink.write(model_to_frames(finished(frames), info.dtype), pts=pts)
        seconds = time.perf_counter() - started
        pending_send = _hand_over_tail(procs, run, segments, wait=False)
        lead = None
        if run is not None and segment.shared_until > segment.start:
            n = segment.shared_until - segment.start
            partial = procs.recv((3, n, *model_hw), torch.float32, procs.rank - 1)
            lead = model_to_frames(finished(finish_shared(partial.to(device), run.lead_parts, segment.start)),
                                   info.dtype)
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
