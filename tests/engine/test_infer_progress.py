"""Progress inside a file: per window, tile and stage, with fps and ETA (issue 9, item 11)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import vsrkit.engine.progress as progress_module
from vsrkit.engine.inference import WindowRunner, upscale_stream
from vsrkit.engine.progress import InferProgress
from vsrkit.methods.protocol import WindowSpec


class _Staged:
    """Nearest x1 that reports encode, four denoise steps and decode, like a diffusion method."""

    def upscale(self, lq, context):
        context.stage("encode")
        for step in range(4):
            context.stage("denoise", step, 4)
        context.stage("decode")
        return lq.clone()


class _Recorder:
    def __init__(self):
        self.events = []

    def begin_window(self, index, count, frames):
        self.events.append(("window", index, count, frames))

    def begin_tile(self, index, count):
        self.events.append(("tile", index, count))

    def stage(self, name, done=0, total=1):
        self.events.append(("stage", name, done, total))

    def frames_finished(self, done):
        self.events.append(("finished", done))


class _Chunk:
    def __init__(self, frames):
        self.frames, self.pts = frames, None


def test_engine_reports_windows_tiles_stages_and_finished_frames():
    spec = WindowSpec(scale=1, window=6, overlap=2, tile=8, tile_overlap=2)
    recorder = _Recorder()
    runner = WindowRunner(_Staged(), spec, torch.device("cpu"), progress=recorder)
    frames = np.zeros((10, 4, 12, 3), np.uint8)
    list(upscale_stream(runner, [_Chunk(frames)], 10))
    windows = [e for e in recorder.events if e[0] == "window"]
    assert windows == [("window", 0, 2, 6), ("window", 1, 2, 6)]  # (0, 6), (4, 10)
    first_window = recorder.events[1:recorder.events.index(("finished", 4))]
    stages = [("stage", "encode", 0, 1)] + [("stage", "denoise", i, 4) for i in range(4)] + [("stage", "decode", 0, 1)]
    assert first_window == [("tile", 0, 2), *stages, ("tile", 1, 2), *stages]
    assert [e for e in recorder.events if e[0] == "finished"] == [("finished", 4), ("finished", 10)]


def test_fps_eta_and_log_lines_without_a_terminal(monkeypatch, caplog):
    clock = {"now": 100.0}
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: clock["now"])
    progress = InferProgress(100, "a.mp4 -> b.mp4", terminal=False, log_every=0.0)
    progress.begin_window(0, 5, 20)
    clock["now"] = 106.0
    with caplog.at_level(logging.INFO, logger="vsrkit.engine.progress"):
        progress.stage("denoise", 1, 2)  # half way through the middle third of the first window
    # 6 s for half of a 20-frame window: 10 frames' worth -> 0.6 s/frame, 90 frames left -> 54 s.
    assert progress.eta_seconds() == pytest.approx(54.0)
    assert caplog.records[-1].getMessage() == ("a.mp4 -> b.mp4: 0/100 frames, window 1/5, denoise 1/2, 0.00 fps, "
                                               "ETA 0:00:54")
    clock["now"] = 110.0
    progress.frames_finished(20)
    assert progress.fps() == pytest.approx(2.0)
    progress.begin_window(1, 5, 20)
    clock["now"] = 115.0  # half of a typical (10 s) window: 30 of 100 frames' worth in 15 s
    assert progress.eta_seconds() == pytest.approx(35.0)
    assert progress.describe() == "window 2/5, 1.33 fps, ETA 0:00:35"
    progress.close()
