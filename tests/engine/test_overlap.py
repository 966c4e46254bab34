"""Decode / model / encode overlap (vsrkit/engine/overlap.py) and its use in upscale_file."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vsrkit.engine.overlap import BackgroundWriter, Prefetcher


def test_prefetcher_yields_everything_in_order_and_stays_bounded():
    pulled = []

    def items():
        for i in range(20):
            pulled.append(i)
            yield i

    with Prefetcher(items(), depth=3) as stream:
        first = next(stream)
        time.sleep(0.2)  # the thread runs ahead, but only as far as the queue allows
        assert len(pulled) <= 1 + 3 + 1
        rest = list(stream)
    assert [first, *rest] == list(range(20))


def test_prefetcher_raises_the_iterators_error_in_the_consumer():
    def items():
        yield 1
        raise KeyError("decode failed at frame 1")

    with Prefetcher(items()) as stream:
        assert next(stream) == 1
        with pytest.raises(KeyError, match="decode failed at frame 1"):
            next(stream)


def test_prefetcher_closes_the_iterator_in_its_thread_when_left_early():
    closed = []

    def items():
        try:
            for i in range(1000):
                yield i
        finally:
            closed.append(threading.current_thread().name)

    with Prefetcher(items(), depth=2, name="reader") as stream:
        assert next(stream) == 0
    assert closed == ["reader"]


class _Writer:
    def __init__(self, fail_at=None, delay=0.0):
        self.frames, self.pts, self.fail_at, self.delay = [], [], fail_at, delay

    def write(self, frames, pts=None):
        time.sleep(self.delay)
        if self.fail_at is not None and len(self.frames) == self.fail_at:
            raise OSError("disk full")
        self.frames.append(frames)
        self.pts.append(pts)


def test_background_writer_writes_everything_in_order():
    writer = _Writer()
    with BackgroundWriter(writer, depth=2) as sink:
        for i in range(10):
            sink.write(np.full((1, 2, 2, 3), i, np.uint8), pts=[i])
    assert [int(f[0, 0, 0, 0]) for f in writer.frames] == list(range(10))
    assert writer.pts == [[i] for i in range(10)]


def test_background_writer_raises_the_writers_error_at_the_next_call_or_at_the_end():
    sink = BackgroundWriter(_Writer(fail_at=2), depth=1)
    with pytest.raises(OSError, match="disk full"):
        with sink:
            for i in range(50):
                sink.write(np.zeros((1, 2, 2, 3), np.uint8))
                time.sleep(0.01)
    writer = _Writer(fail_at=1)
    with pytest.raises(OSError, match="disk full"):
        with BackgroundWriter(writer) as sink:
            sink.write(np.zeros((1, 2, 2, 3), np.uint8))
            sink.write(np.zeros((1, 2, 2, 3), np.uint8))  # fails in the thread after this returns


def test_background_writer_drops_queued_frames_when_the_caller_fails():
    writer = _Writer(delay=0.05)
    with pytest.raises(RuntimeError, match="model failed"):
        with BackgroundWriter(writer, depth=4) as sink:
            for _ in range(4):
                sink.write(np.zeros((1, 2, 2, 3), np.uint8))
            raise RuntimeError("model failed")
    assert len(writer.frames) < 4
    assert not any(t.name == "vsrkit-writer" for t in threading.enumerate())


def test_the_three_stages_overlap():
    # Each stage sleeps (no CPU needed): one after another 3 x 10 x 40 ms = 1.2 s; overlapped ~0.45 s.
    delay, items = 0.04, 10

    def decode():
        for i in range(items):
            time.sleep(delay)
            yield i

    started = time.perf_counter()
    writer = _Writer(delay=delay)
    with BackgroundWriter(writer) as sink, Prefetcher(decode()) as stream:
        for i in stream:
            time.sleep(delay)  # the model
            sink.write(i)
    elapsed = time.perf_counter() - started
    assert writer.frames == list(range(items))
    assert elapsed < 0.75 * 3 * delay * items, elapsed


def test_upscale_file_writes_the_same_frames_and_cleans_up_on_a_writer_error(tmp_path, monkeypatch):
    from vsrkit.engine.inference import WindowRunner
    from vsrkit.engine.run_infer import upscale_file
    from vsrkit.engine.settings import IOConfig
    from vsrkit.io import open_source, write_image
    from vsrkit.io.writer import VideoWriter
    from vsrkit.methods.baselines.config import BicubicConfig
    from vsrkit.methods.baselines.method import InterpolationMethod

    frames = tmp_path / "in"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        write_image(frames / f"{i:03d}.png", rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    method = InterpolationMethod(BicubicConfig(window=3), scale=2)
    runner = WindowRunner(method, method.window_spec(), torch.device("cpu"))
    io_cfg = IOConfig(codec="ffv1")
    out = tmp_path / "o.mkv"
    stats = upscale_file(runner, frames, out, io_cfg=io_cfg, overwrite=False, max_frames=None, decode_chunk=2,
                         progress=False)
    assert stats.frames == 7
    got = open_source(out).read()
    # The same clip frame by frame, without threads, through the method directly.
    from vsrkit.engine.inference import frames_to_model, model_to_frames

    lq = open_source(frames).read()
    want = model_to_frames(method.upscale(frames_to_model(lq), None))
    assert np.array_equal(got, want)

    calls = []
    original = VideoWriter.write

    def failing(self, frames, pts=None):
        calls.append(len(frames))
        if len(calls) == 2:
            raise OSError("No space left on device")
        return original(self, frames, pts=pts)

    monkeypatch.setattr(VideoWriter, "write", failing)
    bad = tmp_path / "bad.mkv"
    with pytest.raises(OSError, match="No space left"):
        upscale_file(runner, frames, bad, io_cfg=io_cfg, overwrite=False, max_frames=None, decode_chunk=2,
                     progress=False)
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["in", "o.mkv"]  # no partial output left
