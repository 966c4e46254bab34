"""The engine's streaming path (vsrkit.engine.streaming) with a toy streaming method, and `vsrkit infer` with InfVSR."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vsrkit.engine.inference import WindowRunner, model_to_frames
from vsrkit.engine.streaming import is_streaming, stream_clip, upscale_frames
from vsrkit.errors import UserError
from vsrkit.methods.protocol import StreamContext, WindowSpec


class DelayStream:
    """Nearest x2 upscale that holds frames back until it has 3, and flips sign after a reset."""

    def __init__(self, method):
        self.method = method
        self.held = []
        self.shapes = []

    def push(self, lq):
        self.shapes.append(tuple(lq.shape))
        self.held.extend(lq.unbind(2))
        out = []
        while len(self.held) >= 3:
            out.extend(self.held[:3])
            self.held = self.held[3:]
        return self._up(out, lq)

    def flush(self):
        out, self.held = self.held, []
        return self._up(out, None)

    def reset(self):
        self.held = []

    def _up(self, frames, like):
        if not frames:
            ref = like if like is not None else torch.zeros(1, 3, 1, self.method.size[0], self.method.size[1])
            return torch.zeros(1, 3, 0, ref.shape[3] * 2, ref.shape[4] * 2)
        x = torch.stack(frames, dim=2)
        self.method.size = x.shape[3:]
        return F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")


class ToyStreamingMethod:
    def __init__(self, multiple: int = 1, extra: int = 0):
        self.multiple, self.extra, self.size, self.streams = multiple, extra, None, []

    def window_spec(self):
        return WindowSpec(scale=2, spatial_multiple=self.multiple)

    def load(self, device, dtype=None):
        pass

    def open_stream(self, context: StreamContext):
        stream = DelayStream(self)
        if self.extra:
            push = stream.push
            stream.push = lambda lq: torch.cat([push(lq)] + [torch.zeros(1, 3, self.extra, lq.shape[3] * 2,
                                                                         lq.shape[4] * 2)], dim=2)
        self.streams.append(stream)
        return stream


class Chunk:
    def __init__(self, frames, pts):
        self.frames, self.pts = frames, pts


def _chunks(n: int, h: int = 5, w: int = 7, size: int = 10):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    return frames, [Chunk(frames[i:i + size], list(range(100 + i, 100 + min(n, i + size)))) for i in range(0, n, size)]


@pytest.mark.parametrize("overlap", [True, False])
def test_stream_keeps_order_timestamps_and_crops_the_padding(overlap):
    method = ToyStreamingMethod(multiple=4)
    assert is_streaming(method)
    frames, chunks = _chunks(23)
    runner = WindowRunner(method, method.window_spec(), torch.device("cpu"))
    outs = list(upscale_frames(runner, chunks, 23, overlap_stages=overlap))
    video = torch.cat([o for o, _ in outs], dim=1)
    pts = [p for _, ps in outs for p in ps]
    assert pts == list(range(100, 123))
    got = model_to_frames(video)
    want = frames.repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_array_equal(got, want)
    # The method saw pieces of at most 16 frames, padded from 5x7 to 8x8 (replicate).
    assert all(s[2] <= 16 and s[3:] == (8, 8) for s in method.streams[0].shapes)


def test_overlapped_stages_run_in_the_engines_prefetch_threads_and_stop_with_the_caller():
    """Decoding and the model each run in a vsrkit.engine.overlap.Prefetcher thread (the engine's
    one thread mechanism); a method's error reaches the caller; closing early ends both threads."""
    import threading

    method = ToyStreamingMethod()
    frames, chunks = _chunks(40, size=4)
    seen = {"decode": set(), "model": set()}

    def decoded():
        for chunk in chunks:
            seen["decode"].add(threading.current_thread().name)
            yield chunk

    original_open = method.open_stream

    def open_stream(context):
        stream = original_open(context)
        push = stream.push

        def recording_push(lq):
            seen["model"].add(threading.current_thread().name)
            if len(method.streams[0].shapes) == 6:
                raise ValueError("method failed on its 7th push")
            return push(lq)

        stream.push = recording_push
        return stream

    method.open_stream = open_stream
    runner = WindowRunner(method, method.window_spec(), torch.device("cpu"))
    outputs = upscale_frames(runner, decoded(), 40)
    first, _ = next(outputs)
    assert first.shape == (3, 3, 10, 14)
    outputs.close()  # the caller stops early: both threads end
    assert seen == {"decode": {"vsrkit-decode"}, "model": {"vsrkit-model"}}
    assert not [t for t in threading.enumerate() if t.name in ("vsrkit-decode", "vsrkit-model")]
    method.streams.clear()
    with pytest.raises(ValueError, match="7th push"):
        list(upscale_frames(runner, decoded(), 40))
    assert not [t for t in threading.enumerate() if t.name in ("vsrkit-decode", "vsrkit-model")]


def test_a_stream_returning_frames_it_never_got_is_an_error():
    method = ToyStreamingMethod(extra=1)
    _, chunks = _chunks(6)
    with pytest.raises(RuntimeError, match="returned 7 frames but only 6 were pending"):
        list(stream_clip(method, chunks, 6, torch.device("cpu")))


def test_window_methods_still_go_through_windows():
    from vsrkit.methods.baselines.config import BicubicConfig
    from vsrkit.methods.baselines.method import InterpolationMethod

    method = InterpolationMethod(BicubicConfig(), None, 2)
    assert not is_streaming(method)
    _, chunks = _chunks(5)
    runner = WindowRunner(method, method.window_spec(), torch.device("cpu"))
    out = torch.cat([o for o, _ in upscale_frames(runner, chunks, 5)], dim=1)
    assert out.shape == (3, 5, 10, 14)


def _vsrkit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vsrkit.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=900)


@pytest.mark.parametrize("override,message", [
    ("engine.window=9", "`engine.window=9` does not apply to InfVSRMethod"),
    ("method.scene_threshold=0", "`scene_threshold` must be > 0. Got 0"),
    ("method.visual_encoder=clip", "Unknown visual encoder `clip`"),
])
def test_infer_bad_input_is_one_line_and_exit_2(tmp_path, override, message):
    src = tmp_path / "in.mp4"
    src.write_bytes(b"")
    result = _vsrkit("infer", "method=infvsr", "backbone=wan2.1-t2v-1.3b-tiny", f"input={src}",
                     f"output={tmp_path / 'o.mp4'}", override)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.slow
def test_infer_real_clip_with_audio_keeps_frames_size_and_audio(real_data, tmp_path):
    av = pytest.importorskip("av")
    src = real_data / "sczhou_Upscale-A-Video" / "old_animation_1.mp4"  # 320x240, AAC audio
    dst = tmp_path / "o.mp4"
    result = _vsrkit("infer", "method=infvsr", "backbone=wan2.1-t2v-1.3b-tiny", f"input={src}", f"output={dst}",
                     "scale=1", "max_frames=5")
    assert result.returncode == 0, result.stderr[-3000:]
    with av.open(str(dst)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (320, 240)
        assert len(c.streams.audio) == 1
        assert sum(1 for _ in c.decode(video=0)) == 5


def test_ten_thousand_frames_stream_with_bounded_buffers():
    # The engine keeps at most one decoded piece plus what the method holds back (here < 3 frames).
    method = ToyStreamingMethod()
    frame = np.zeros((1, 2, 2, 3), np.uint8)

    def source():
        for i in range(10_000):
            yield Chunk(frame + (i % 251), [i])

    runner = WindowRunner(method, method.window_spec(), torch.device("cpu"))
    total, held = 0, 0
    for out, pts in upscale_frames(runner, source(), 10_000):
        assert pts == list(range(total, total + len(pts)))
        total += out.shape[1]
        held = max(held, len(method.streams[0].held))
    assert total == 10_000 and held < 3
