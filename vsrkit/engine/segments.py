"""Where each process's share of one clip starts and stops when the clip is split over processes.

Pure planning (no torch, no communication); :mod:`vsrkit.engine.distributed` runs the plan.

Windowed methods: the clip's window plan (:func:`vsrkit.engine.windows.plan_ranges`, the same one a
single process uses) is cut into runs of consecutive windows, one run per process. Every window is
computed exactly once, with its global frame index, weights and seed, so each output frame is the
same sum of the same window outputs as in one process. The frames that the last window of one run
and the first window of the next both touch (the temporal overlap) are finished by the later
process, which adds its window outputs, in window order, onto the earlier process's partial sums:
the same additions in the same order as one process, hence bit-identical output. A window whose
input depends on the previous window's output (a keyframe carried from it) cannot start a run;
the caller marks those windows (``can_start``).

Streaming methods (a method with ``open_stream``, e.g. InfVSR) carry state from chunk to chunk, so a
segment cannot start cold and match one process. A segment starts at a scene cut where the method
reports one (its stream restarts there anyway: exact), else it is fed ``warmup`` frames before its
start whose output is thrown away (approximate; measure it with ``vsrkit eval``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Segment:
    """One process's share of a clip.

    Args:
        index: Segment number; segment ``i`` runs on process ``i``.
        start: First output frame the segment delivers.
        stop: One past the last output frame it delivers.
        feed_start: First input frame it reads (windowed: ``start``; streaming: ``start`` minus
            the warm-up, or ``start`` at a scene cut).
        feed_stop: One past the last input frame it reads.
        first_window: Windowed: first window of the clip's plan that the segment computes.
        stop_window: Windowed: one past its last window (``first_window == stop_window == 0`` for
            streaming segments).
        shared_until: Windowed: frames ``[start, shared_until)`` are also touched by the previous
            segment's windows; the previous process hands over its partial sums of them
            (``shared_until == start`` when windows do not overlap).
    """

    index: int
    start: int
    stop: int
    feed_start: int
    feed_stop: int
    first_window: int = 0
    stop_window: int = 0
    shared_until: int = 0

    @property
    def warmup(self) -> int:
        """Input frames read before ``start`` whose output is thrown away (streaming)."""
        return self.start - self.feed_start

    def describe(self) -> str:
        text = f"frames [{self.start}, {self.stop})"
        if self.stop_window > self.first_window:
            text += f" (windows {self.first_window}-{self.stop_window - 1})"
        if self.warmup:
            text += f" after a warm-up of {self.warmup} frames from {self.feed_start}"
        return text


def split_counts(total: int, parts: int) -> list[int]:
    """``total`` items in ``parts`` runs whose sizes differ by at most one, the smaller runs first
    (the first process also writes the file, so it gets the lighter share)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i >= parts - extra else 0) for i in range(parts)]


def plan_window_segments(ranges: Sequence[tuple[int, int]], num_frames: int, processes: int,
                         can_start: Sequence[bool] | None = None) -> list[Segment]:
    """Cut a window plan into at most ``processes`` segments of consecutive windows.

    Fewer segments than processes come back when there are fewer windows than processes, when
    the windows overlap so much that a segment's shared frames would reach past its end (then
    some processes stay idle for this clip), or when ``can_start`` leaves too few windows where a
    segment may start.

    Args:
        ranges: The clip's window plan ``[(start, stop), ...]`` (:func:`plan_ranges`), covering
            ``[0, num_frames)`` with non-decreasing starts and stops.
        num_frames: Frames in the clip.
        processes: Processes available (>= 1).
        can_start: One flag per window: whether a segment may start at it (False where a window
            depends on the previous window's output, e.g. a carried keyframe). None: everywhere.
            Boundaries go to the allowed windows nearest the even split.

    Returns:
        Segments in clip order; their ``[start, stop)`` ranges tile ``[0, num_frames)``.
    """
    if processes < 1:
        raise ValueError(f"`processes` must be >= 1. Got {processes}.")
    if not ranges:
        return []
    allowed = [i for i in range(1, len(ranges)) if can_start is None or can_start[i]]
    for parts in range(min(processes, len(allowed) + 1), 0, -1):
        firsts, even = [], 0
        for k, count in enumerate(split_counts(len(ranges), parts)[:-1]):
            even += count
            # The allowed window nearest the even boundary, after the previous boundary and leaving
            # one allowed window for each boundary still to place.
            later = [i for i in allowed if not firsts or i > firsts[-1]]
            choices = later[: len(later) - (parts - 2 - k)]
            firsts.append(min(choices, key=lambda i: (abs(i - even), i)))
        segments = []
        for index, (first, stop_window) in enumerate(zip([0, *firsts], [*firsts, len(ranges)])):
            start = ranges[first][0] if first else 0
            stop = ranges[stop_window][0] if stop_window < len(ranges) else num_frames
            # Windows before `first` have non-decreasing stops, so the previous one reaches furthest.
            shared_until = max(start, ranges[first - 1][1]) if first else start
            segments.append(Segment(index=index, start=start, stop=stop, feed_start=start,
                                    feed_stop=ranges[stop_window - 1][1], first_window=first,
                                    stop_window=stop_window, shared_until=shared_until))
        if all(s.shared_until <= s.stop and s.start < s.stop for s in segments):
            return segments
    raise AssertionError("one segment always satisfies the plan")  # parts == 1 has no shared frames


def plan_stream_segments(num_frames: int, processes: int, *, warmup: int, align: int = 1, offset: int = 0,
                         cuts: Sequence[int] = ()) -> list[Segment]:
    """Cut a clip for a streaming method into at most ``processes`` segments of similar length.

    Each boundary goes to a scene cut when one lies within a quarter of a segment of the even
    split (no warm-up: the method's stream restarts there anyway); otherwise to the nearest frame
    ``offset + k * align`` and the segment reads ``warmup`` frames before it (never reaching back
    past a cut, where the state is reset anyway, nor before frame 0).

    Args:
        num_frames: Frames in the clip.
        processes: Processes available (>= 1).
        warmup: Frames fed before a boundary that is not a cut.
        align: Boundaries that are not cuts are ``offset + k * align``.
        offset: See ``align``.
        cuts: Frame indices where the method's stream restarts from a blank state.
    """
    if processes < 1 or warmup < 0 or align < 1 or offset < 0:
        raise ValueError(f"bad stream split: processes={processes}, warmup={warmup}, align={align}, offset={offset}.")
    if num_frames <= 0:
        return []
    cuts = sorted({c for c in cuts if 0 < c < num_frames})
    length = num_frames / processes
    bounds: list[tuple[int, bool]] = []  # (frame, is a cut)
    for k in range(1, processes):
        ideal = k * length
        near = [c for c in cuts if abs(c - ideal) <= length / 4]
        if near:
            bounds.append((min(near, key=lambda c: (abs(c - ideal), c)), True))
            continue
        j = max(0, round((ideal - offset) / align))
        aligned = offset + j * align
        if 0 < aligned < num_frames:
            bounds.append((aligned, False))
    unique: list[tuple[int, bool]] = []
    for frame, is_cut in bounds:
        if not unique or frame > unique[-1][0]:
            unique.append((frame, is_cut))
    starts = [0] + [frame for frame, _ in unique]
    stops = starts[1:] + [num_frames]
    segments = []
    for index, (start, stop) in enumerate(zip(starts, stops)):
        feed_start = start
        if index and not unique[index - 1][1]:
            feed_start = max(0, start - warmup)
            earlier_cuts = [c for c in cuts if feed_start < c <= start]
            if earlier_cuts:
                feed_start = earlier_cuts[-1]
        segments.append(Segment(index=index, start=start, stop=stop, feed_start=feed_start, feed_stop=stop,
                                shared_until=start))
    return segments
