"""Segment plans for one clip over several processes, and the bit-exact recombination of windowed
outputs (simulated in one process: the same runs and hand-overs the processes do)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vsrkit.engine.distributed import WindowSegmentRun, finish_shared, stream_segment
from vsrkit.engine.inference import upscale_stream
from vsrkit.engine.segments import Segment, plan_stream_segments, plan_window_segments, split_counts
from vsrkit.engine.windows import plan_ranges
from vsrkit.methods.protocol import WindowSpec


def test_split_counts_gives_the_first_processes_the_smaller_shares():
    assert split_counts(14, 2) == [7, 7]
    assert split_counts(15, 2) == [7, 8]
    assert split_counts(10, 4) == [2, 2, 3, 3]
    assert split_counts(3, 4) == [0, 1, 1, 1]


def test_window_segments_bicubic_defaults_on_60_frames():
    # bicubic: window 16, no overlap -> windows [0,16) [16,32) [32,48) [48,60), two per process.
    ranges = plan_ranges(60, 16, 0)
    assert plan_window_segments(ranges, 60, 2) == [
        Segment(0, 0, 32, 0, 32, 0, 2, 0),
        Segment(1, 32, 60, 32, 60, 2, 4, 32),
    ]


def test_window_segments_sparkvsr_330_frames_share_the_overlap():
    # SparkVSR: window 33, overlap 9, stride 24 -> 14 windows; window 6 is [144, 177), window 7 starts at 168.
    ranges = plan_ranges(330, 33, 9, 4)
    assert len(ranges) == 14 and ranges[6] == (144, 177) and ranges[7] == (168, 201)
    first, second = plan_window_segments(ranges, 330, 2)
    assert (first.start, first.stop, first.first_window, first.stop_window, first.feed_stop) == (0, 168, 0, 7, 177)
    assert (second.start, second.stop, second.first_window, second.stop_window) == (168, 330, 7, 14)
    assert (second.shared_until, second.feed_start, second.feed_stop) == (177, 168, 330)


def test_window_segments_never_more_than_windows_and_tile_the_clip():
    ranges = plan_ranges(40, 16, 0)  # 3 windows
    segments = plan_window_segments(ranges, 40, 8)
    assert [(s.start, s.stop) for s in segments] == [(0, 16), (16, 32), (32, 40)]
    assert plan_window_segments(plan_ranges(40, None, 0), 40, 4) == [Segment(0, 0, 40, 0, 40, 0, 1, 0)]


def test_heavy_overlap_uses_fewer_segments_so_shared_frames_stay_inside():
    # window 10, overlap 8: stride 2, a frame is in up to 5 windows; one window per segment would
    # make the shared frames of a segment reach past its end.
    ranges = plan_ranges(30, 10, 8)
    segments = plan_window_segments(ranges, 30, 8)
    assert 1 < len(segments) < 8
    assert all(s.start <= s.shared_until <= s.stop for s in segments)
    assert [s.start for s in segments[1:]] == [s.stop for s in segments[:-1]] and segments[-1].stop == 30


class _Runner:
    """Stands in for a WindowRunner: a window's output depends on every frame of it and on its
    start (like a real method), with random float values so that a different order of additions
    changes the last bits."""

    def __init__(self, spec: WindowSpec, blend: str):
        self.spec, self.blend, self.device, self.seed = spec, blend, torch.device("cpu"), 0

    def __call__(self, lq, frame_start, keyframes=None):
        g = torch.Generator().manual_seed(1000 + frame_start)
        noise = torch.rand(3, lq.shape[2], 2 * lq.shape[3], 2 * lq.shape[4], generator=g, dtype=torch.float64)
        base = torch.nn.functional.interpolate(lq[0].permute(1, 0, 2, 3), scale_factor=2).permute(1, 0, 2, 3)
        return (base + noise.float() * lq.mean() * 0.37).float()


def _clip(n: int) -> np.ndarray:
    return (np.random.default_rng(n).random((n, 4, 6, 3)) * 255).astype(np.uint8)


def _chunks(frames: np.ndarray, size: int = 5, first: int = 0, stop: int | None = None) -> list:
    """Frames ``[first, stop)`` of a clip in chunks of ``size``, frame ``i`` with timestamp ``10 i``
    (what ``FrameSource.chunks(size, max_frames=stop - first, first=first)`` yields)."""
    stop = len(frames) if stop is None else stop
    return [SimpleNamespace(frames=frames[i:min(i + size, stop)], pts=list(range(10 * i, 10 * min(i + size, stop), 10)))
            for i in range(first, stop, size)]


def _split_run(runner, frames, ranges, processes, keyframes=None, can_start=None):
    """What the processes do, in one process: each segment runs its windows; each hands its tail
    to the next, which completes its shared frames; the outputs are concatenated in order."""
    n = len(frames)
    segments = plan_window_segments(ranges, n, processes, can_start)
    outputs, pts, tail = [], [], None
    for seg in segments:
        run = WindowSegmentRun(runner, _chunks(frames, first=seg.feed_start, stop=seg.feed_stop), ranges, n, seg,
                               keyframes)
        body = list(run)
        if seg.shared_until > seg.start:
            outputs.append(finish_shared(tail, run.lead_parts, seg.start))
            pts.extend(run.lead_pts)
        else:
            assert tail is None and not run.lead_parts
        outputs.extend(o for o, _ in body)
        pts.extend(p for _, ps in body for p in ps)
        tail = run.tail
    assert tail is None
    return torch.cat(outputs, dim=1), pts, segments


@pytest.mark.parametrize("n, window, overlap, blend, processes", [
    (40, 16, 0, "linear", 2),
    (40, 16, 4, "linear", 2),
    (41, 9, 1, "linear", 3),
    (50, 12, 7, "linear", 3),   # stride 5: frames in three windows (one ramp is 0 there: two terms)
    (50, 12, 9, "linear", 3),   # stride 3: sums of three non-zero terms
    (50, 12, 7, "cut", 4),
    (61, 17, 9, "linear", 4),
    (30, 10, 8, "linear", 8),   # heavy overlap: fewer segments
])
def test_split_output_is_bit_identical_to_one_process(n, window, overlap, blend, processes):
    spec = WindowSpec(scale=2, window=window, overlap=overlap)
    runner = _Runner(spec, blend)
    frames = _clip(n)
    ranges = plan_ranges(n, window, overlap)
    one = list(upscale_stream(runner, _chunks(frames), n))
    expected = torch.cat([o for o, _ in one], dim=1)
    expected_pts = [p for _, ps in one for p in ps]
    got, pts, segments = _split_run(runner, frames, ranges, processes)
    assert len(segments) > 1
    assert got.shape == expected.shape == (3, n, 8, 12)
    assert torch.equal(got, expected)
    assert pts == expected_pts == list(range(0, 10 * n, 10))


def test_adding_the_shared_parts_before_the_partial_sum_is_not_exact():
    """Guards the order that test_split_output_is_bit_identical_to_one_process relies on: with
    three windows with non-zero weights over a frame, (a + b) + c and a + (b + c) differ in the
    last bits here (overlap 9 of 12: the blend ramps' zero margins leave three terms)."""
    spec = WindowSpec(scale=2, window=12, overlap=9)
    runner = _Runner(spec, "linear")
    frames = _clip(50)
    ranges = plan_ranges(50, 12, 9)
    expected = torch.cat([o for o, _ in upscale_stream(runner, _chunks(frames), 50)], dim=1)
    seg = plan_window_segments(ranges, 50, 3)[1]
    previous = plan_window_segments(ranges, 50, 3)[0]
    prev_run = WindowSegmentRun(runner, _chunks(frames, stop=previous.feed_stop), ranges, 50, previous)
    list(prev_run)
    run = WindowSegmentRun(runner, _chunks(frames, first=seg.feed_start, stop=seg.feed_stop), ranges, 50, seg)
    list(run)
    assert len(run.lead_parts) >= 2
    own = torch.zeros_like(prev_run.tail)
    for start, part in run.lead_parts:
        own[:, start - seg.start: start - seg.start + part.shape[1]] += part
    wrong = prev_run.tail + own
    right = finish_shared(prev_run.tail, run.lead_parts, seg.start)
    assert torch.equal(right, expected[:, seg.start:seg.shared_until])
    assert not torch.equal(wrong, right)


# --- keyframes carried from window to window ------------------------------------------------------


class _Conditioned:
    """A keyframe method stand-in: nearest x2 plus ``frame_start / 100`` plus a tenth of the mean of
    the keyframe at the window's first frame, so a carried keyframe (the previous window's output)
    changes the window's output. Records the keyframe indices it was given per window."""

    def __init__(self, spec: WindowSpec):
        self.spec, self.received = spec, []

    def window_spec(self):
        return self.spec

    def upscale(self, lq, context):
        self.received.append(sorted(context.keyframes))
        s = self.spec.scale
        out = lq.repeat_interleave(s, -1).repeat_interleave(s, -2) + context.frame_start / 100.0
        if 0 in context.keyframes:
            out = out + 0.1 * context.keyframes[0].mean()
        return out


def _carry_spec(**changes) -> WindowSpec:
    # SparkVSR's rules at a small size: windows of 9 (8k+1) sharing 1 frame, starts on multiples of 4.
    base = dict(scale=2, frame_multiple=8, frame_offset=1, window=9, overlap=1, stride_multiple=4,
                uses_keyframes=True, carry_keyframes=True)
    return WindowSpec(**{**base, **changes})


def _keyframes(indices, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {i: torch.rand(3, 8, 12, generator=g) * 2 - 1 for i in indices}


@pytest.mark.parametrize("n, indices, changes, expected", [
    (41, [0], {}, [False, True, True, True, True]),            # windows (0,9) (8,17) (16,25) (24,33) (32,41)
    (41, [0, 16], {}, [False, True, False, True, True]),       # a real keyframe at a window start breaks the chain
    (41, [0, 17], {}, [False, True, False, True, True]),       # ... anywhere in its first slot (16-19)
    (41, [0, 20], {}, [False, True, True, True, True]),        # ... but not after it
    (41, [20], {}, [False, False, False, True, True]),         # nothing to carry before the first keyframe
    (41, [], {}, [False] * 5),
    (38, [0, 40], {}, [False, True, True, True, True]),        # 40: in the clip's padding, the last window's
    (40, [0], dict(window=8, overlap=0), [False] * 5),          # windows that share no frame carry nothing
    (41, [0], dict(carry_keyframes=False), [False] * 5),
])
def test_carried_windows_are_the_windows_the_engine_hands_a_carried_frame(n, indices, changes, expected):
    from vsrkit.engine.keyframes import carried_windows, keyframes_in_window
    from vsrkit.engine.inference import WindowRunner

    spec = _carry_spec(**changes)
    ranges = plan_ranges(n, spec.window, spec.overlap, spec.stride_multiple)
    keyframes = _keyframes(indices)
    planned = carried_windows(ranges, keyframes, n, spec.padded_length, spec.stride_multiple) \
        if spec.carry_keyframes else [False] * len(ranges)
    assert planned == expected
    method = _Conditioned(spec)
    list(upscale_stream(WindowRunner(method, spec, torch.device("cpu")), _chunks(_clip(n)), n, keyframes))
    real = [sorted(k - a for k in keyframes_in_window(keyframes, a, b, n, a + spec.padded_length(b - a)))
            for a, b in ranges]
    assert [got != own for got, own in zip(method.received, real)] == expected


def test_split_with_carried_keyframes_starts_segments_at_chain_breaks_and_is_bit_identical():
    from vsrkit.engine.inference import WindowRunner
    from vsrkit.engine.keyframes import carried_windows

    n, spec = 41, _carry_spec()
    runner = WindowRunner(_Conditioned(spec), spec, torch.device("cpu"))
    frames, keyframes = _clip(n), _keyframes([0, 16, 32])
    ranges = plan_ranges(n, spec.window, spec.overlap, spec.stride_multiple)
    can_start = [not c for c in carried_windows(ranges, keyframes, n, spec.padded_length, spec.stride_multiple)]
    assert can_start == [True, False, True, False, True]
    expected = torch.cat([o for o, _ in upscale_stream(runner, _chunks(frames), n, keyframes)], dim=1)
    got, pts, segments = _split_run(runner, frames, ranges, 3, keyframes, can_start)
    assert [(s.first_window, s.stop_window) for s in segments] == [(0, 2), (2, 4), (4, 5)]  # not at 1 or 3
    assert [s.shared_until for s in segments] == [0, 17, 33]
    assert torch.equal(got, expected)
    assert pts == list(range(0, 10 * n, 10))
    # The guard: cutting where a window takes a carried frame (window 1) changes the output.
    naive, _, naive_segments = _split_run(runner, frames, ranges, 3, keyframes)
    assert [s.first_window for s in naive_segments] == [0, 1, 3]
    assert not torch.equal(naive, expected)


def test_plan_segments_keeps_an_unbroken_carry_chain_in_one_process_and_says_why():
    from vsrkit.engine.distributed import plan_segments
    from vsrkit.engine.distributed_config import DistributedConfig

    runner = SimpleNamespace(method=object(), spec=_carry_spec())
    segments, note = plan_segments(runner, 41, 4, DistributedConfig(), keyframes=_keyframes([0]))
    assert [(s.start, s.stop) for s in segments] == [(0, 41)]
    assert "1 of 4 possible segments" in note and "keyframe carry" in note and "exact" in note
    segments, note = plan_segments(runner, 41, 4, DistributedConfig(), keyframes=_keyframes([0, 16, 32]))
    assert [s.first_window for s in segments] == [0, 2, 4] and "3 of 4 possible segments" in note
    segments, note = plan_segments(runner, 41, 4, DistributedConfig(), keyframes=None)  # nothing carried
    assert len(segments) == 4 and note is None


def test_allowed_starts_take_the_allowed_windows_nearest_the_even_split():
    ranges = plan_ranges(100, 10, 0)  # 10 windows
    everywhere = plan_window_segments(ranges, 100, 3)
    assert plan_window_segments(ranges, 100, 3, [True] * 10) == everywhere
    assert [s.first_window for s in everywhere] == [0, 3, 6]
    allowed = [True, False, True, False, False, True, False, False, False, False]
    assert [s.first_window for s in plan_window_segments(ranges, 100, 3, allowed)] == [0, 2, 5]
    assert [s.first_window for s in plan_window_segments(ranges, 100, 4, allowed)] == [0, 2, 5]
    assert plan_window_segments(ranges, 100, 3, [True] + [False] * 9) == [Segment(0, 0, 100, 0, 100, 0, 10, 0)]


# --- streaming ------------------------------------------------------------------------------------


def test_stream_segments_snap_to_scene_cuts_without_warmup():
    segments = plan_stream_segments(100, 2, warmup=21, align=12, offset=9, cuts=[47])
    assert [(s.start, s.stop, s.feed_start) for s in segments] == [(0, 47, 0), (47, 100, 47)]


def test_stream_segments_without_cuts_align_and_warm_up():
    # ideal boundary 50 -> nearest 9 + 12k is 45; warm-up 21 -> fed from 24 (= 12 * 2: chunk starts line up).
    segments = plan_stream_segments(100, 2, warmup=21, align=12, offset=9)
    assert [(s.start, s.stop, s.feed_start) for s in segments] == [(0, 45, 0), (45, 100, 24)]
    assert segments[1].warmup == 21


def test_stream_segments_far_cut_is_ignored_but_stops_the_warmup():
    # the cut at 30 is too far from 50 to be a boundary (> 100/2/4), but a warm-up reaching back past
    # it starts at the cut: the method's state is reset there anyway.
    segments = plan_stream_segments(100, 2, warmup=30, align=1, offset=0, cuts=[30])
    assert [(s.start, s.feed_start) for s in segments] == [(0, 0), (50, 30)]
    segments = plan_stream_segments(100, 4, warmup=5, align=1, offset=0)
    assert [(s.start, s.stop, s.feed_start) for s in segments] == [(0, 25, 0), (25, 50, 20), (50, 75, 45), (75, 100, 70)]
    assert plan_stream_segments(10, 4, warmup=3, align=12, offset=9) == [Segment(0, 0, 9, 0, 9), Segment(1, 9, 10, 6, 10, 0, 0, 9)]


def test_stream_segment_drops_exactly_the_warmup_output():
    def driver(runner, chunks, num_frames):
        # lags two frames behind, like a method that buffers; returns frame index * 2 as values.
        held = []
        for chunk in chunks:
            held.extend(zip(chunk.frames[:, 0, 0, 0].tolist(), chunk.pts))
            ready, held = held[:-2], held[-2:]
            if ready:
                yield torch.tensor([float(v) for v, _ in ready])[None, :, None, None].expand(3, -1, 1, 1), [p for _, p in ready]
        yield torch.tensor([float(v) for v, _ in held])[None, :, None, None].expand(3, -1, 1, 1), [p for _, p in held]

    frames = np.arange(30, dtype=np.uint8)[:, None, None, None].repeat(3, axis=3)
    seg = Segment(1, 12, 30, 5, 30)
    out = list(stream_segment(driver, None, _chunks(frames, 4, first=5), seg))
    values = torch.cat([o for o, _ in out], dim=1)[0, :, 0, 0]
    assert values.tolist() == [float(i) for i in range(12, 30)]
    assert [p for _, ps in out for p in ps] == list(range(120, 300, 10))
