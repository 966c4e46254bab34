"""Starting several CPU processes for the scale-out tests, and reading videos back.

Two CPU processes on one machine come from ``accelerate launch --multi_gpu`` with
``ACCELERATE_USE_CPU=true`` (torchrun under the hood, gloo); without ``--multi_gpu`` or a config
file accelerate starts a single process on a machine without several GPUs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[2]


def env(**extra: str) -> dict:
    out = dict(os.environ)
    out.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", ACCELERATE_USE_CPU="true",
               PYTHONPATH=os.pathsep.join([str(REPO), out.get("PYTHONPATH", "")]))
    out.update(extra)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_cmd(processes: int, *target: str) -> list[str]:
    """``accelerate launch`` of ``target`` (``-m vsrkit.cli ...`` or a script) on CPU processes."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), *target]


def run(cmd: list[str], cwd: Path, timeout: int = 600, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env(**extra_env), capture_output=True, text=True, timeout=timeout)


def infer(args: list[str], cwd: Path, processes: int = 1, timeout: int = 600) -> subprocess.CompletedProcess:
    """``vsrkit infer`` in one process (``python -m vsrkit.cli``) or several (``accelerate launch``)."""
    target = ["-m", "vsrkit.cli", "infer", *args, "engine.device=cpu"]
    cmd = accelerate_cmd(processes, *target) if processes > 1 else [sys.executable, *target]
    return run(cmd, cwd, timeout)


def decode(path: Path) -> tuple[np.ndarray, list[int], int, object]:
    """``(frames (T, H, W, 3) uint8, pts, number of audio streams, video stream time base)``."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, pts = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            pts.append(int(frame.pts))
        return np.stack(frames), pts, len(container.streams.audio), stream.time_base


def make_clip(dst: Path, parts: list[tuple[Path, int]], box: tuple[int, int, int, int], audio: bool = False) -> Path:
    """A small lossless clip cut from real videos: the first ``n`` frames of each ``(video, n)``
    in ``parts``, cropped to ``box = (y, x, h, w)``, at the first video's exact rate and time base;
    ``audio`` copies the first video's audio (trimmed to the frames)."""
    from vsrkit.io import VideoWriter, open_source

    y, x, h, w = box
    first = open_source(parts[0][0]).info
    with VideoWriter(dst, width=w, height=h, fps=first.fps, time_base=first.time_base, codec="ffv1",
                     audio_from=parts[0][0] if audio else None, trim_audio=audio) as writer:
        for path, n in parts:
            for chunk in open_source(path).chunks(16, max_frames=n):
                writer.write(np.ascontiguousarray(chunk.frames[:, y:y + h, x:x + w]))
    return dst
