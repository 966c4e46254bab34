"""A toy streaming method and driver for the split-clip tests (InfVSR's contract, issue 12).

The method upscales 2x (nearest) and averages each output frame with up to ``memory - 1``
previous frames of the same scene (state carried between pushes, output lagging two frames behind
its input, like a method that buffers a chunk). A scene cut (mean absolute change to the previous
frame above ``CUT``) resets the state, and ``scene_cuts`` reports the same cuts for a whole clip.
So a segment that starts at a cut, or after a warm-up of at least ``memory - 1`` frames, equals one
process; a shorter warm-up does not.

Run as a script under ``accelerate launch`` it upscales each ``--job INPUT OUTPUT WARMUP`` split
over the processes (``upscale_file_split`` with this driver).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vsrkit.methods.protocol import WindowSpec  # noqa: E402

CUT = 40.0  # mean absolute change (0..255) that counts as a scene cut
LAG = 2


def _is_cut(previous: np.ndarray | None, frame: np.ndarray) -> bool:
    return previous is not None and float(np.abs(frame.astype(np.float64) - previous.astype(np.float64)).mean()) > CUT


class ToyStream:
    def __init__(self, memory: int):
        self.memory = memory
        self.history: list[torch.Tensor] = []
        self.previous: np.ndarray | None = None
        self.waiting: list[torch.Tensor] = []

    def push_frames(self, frames: np.ndarray, lq: torch.Tensor) -> torch.Tensor:
        for i, frame in enumerate(frames):
            if _is_cut(self.previous, frame):
                self.history = []
            self.previous = frame
            up = F.interpolate(lq[:, :, i], scale_factor=2, mode="nearest")[0]  # (3, 2H, 2W)
            self.history = (self.history + [up])[-self.memory:]
            self.waiting.append(torch.stack(self.history).mean(0))
        ready, self.waiting = self.waiting[:-LAG] if len(self.waiting) > LAG else [], self.waiting[-LAG:]
        return self._stack(ready, lq)

    def flush(self, like: torch.Tensor) -> torch.Tensor:
        ready, self.waiting = self.waiting, []
        return self._stack(ready, like)

    @staticmethod
    def _stack(frames: list, like: torch.Tensor) -> torch.Tensor:
        if not frames:
            return like.new_zeros(1, 3, 0, 2 * like.shape[3], 2 * like.shape[4])
        return torch.stack(frames, dim=1)[None]


class ToyStreamMethod:
    """Has ``open_stream``: the engine treats it as a streaming method."""

    def __init__(self, memory: int = 4):
        self.memory = memory

    def window_spec(self) -> WindowSpec:
        return WindowSpec(scale=2)

    def load(self, device, dtype=None) -> None:
        pass

    def open_stream(self, context=None) -> ToyStream:
        return ToyStream(self.memory)

    def scene_cuts(self, chunks) -> list[int]:
        cuts, previous, index = [], None, 0
        for frames in chunks:
            for frame in frames:
                if _is_cut(previous, frame):
                    cuts.append(index)
                previous, index = frame, index + 1
        return cuts


def toy_driver(runner, chunks, num_frames):
    """One fresh stream over ``chunks`` (what the streaming engine's ``upscale_frames`` does)."""
    from vsrkit.engine.inference import frames_to_model

    stream = runner.method.open_stream()
    waiting_pts: list = []
    like = None
    for chunk in chunks:
        lq = frames_to_model(chunk.frames)
        like = lq
        waiting_pts.extend(chunk.pts if chunk.pts is not None else [None] * len(chunk.frames))
        out = stream.push_frames(chunk.frames, lq)
        if out.shape[2]:
            yield out[0], [waiting_pts.pop(0) for _ in range(out.shape[2])]
    out = stream.flush(like)
    if out.shape[2]:
        yield out[0], [waiting_pts.pop(0) for _ in range(out.shape[2])]


def main(argv: list[str] | None = None) -> int:
    from vsrkit.engine.distributed import start_processes, upscale_file_split
    from vsrkit.engine.distributed_config import DistributedConfig
    from vsrkit.engine.inference import WindowRunner
    from vsrkit.engine.settings import IOConfig

    parser = argparse.ArgumentParser()
    parser.add_argument("--job", nargs=3, action="append", metavar=("INPUT", "OUTPUT", "WARMUP"), required=True)
    parser.add_argument("--memory", type=int, default=4)
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    procs = start_processes("cpu")
    method = ToyStreamMethod(args.memory)
    runner = WindowRunner(method, method.window_spec(), procs.device)
    for src, dst, warmup in args.job:
        config = DistributedConfig(stream_warmup=int(warmup), stream_align=1, stream_offset=0)
        upscale_file_split(procs, runner, Path(src), Path(dst), io_cfg=IOConfig(codec="ffv1"), overwrite=False,
                           max_frames=None, decode_chunk=5, config=config, progress=False, stream_driver=toy_driver)
    return 0


if __name__ == "__main__":
    sys.exit(main())
