"""Temporal windows and spatial tiles: where they start, and how overlaps are weighted.

A plan is a list of half-open ranges ``[start, stop)`` that covers ``[0, length)``; consecutive
ranges overlap by at most ``overlap``, and with an overlap above half the window an item lies in
more than two ranges. Blend weights are ramps over the overlaps divided by their sum over every
range, so they add up to 1 at every position: a constant input gives a constant output, and a
per-frame method gives the same frames windowed or not.
"""

from __future__ import annotations

import torch


def plan_ranges(length: int, window: int | None, overlap: int, stride_multiple: int = 1) -> list[tuple[int, int]]:
    """Cut ``[0, length)`` into windows of ``window`` with ``overlap`` shared items.

    The stride (``window - overlap``) is rounded down to a multiple of ``stride_multiple`` (at
    least one multiple), so window starts stay aligned (SparkVSR's keyframe slots need starts that
    are multiples of 4). The last window may be shorter than ``window``; the caller pads it.

    Args:
        length: Items to cover (frames, or pixels along one axis).
        window: Window length; ``None`` or ``>= length`` gives one window.
        overlap: Items shared by consecutive windows.
        stride_multiple: Starts are multiples of this.
    """
    if length <= 0:
        return []
    if window is None or window >= length:
        return [(0, length)]
    stride = window - overlap
    stride = max(stride_multiple, (stride // stride_multiple) * stride_multiple)
    ranges = []
    start = 0
    while True:
        stop = min(start + window, length)
        ranges.append((start, stop))
        if stop >= length:
            break
        start += stride
    return ranges


def ramp_weights(ranges: list[tuple[int, int]], index: int, blend: str = "linear") -> torch.Tensor:
    """Blend weights ``(stop - start,)`` of range ``index`` of ``ranges`` along its axis.

    Each range first gets a ramp over the items it shares with its previous and next range
    (:func:`_raw_weights`); the ramps are then divided by their sum over every range that covers
    an item, so the weights of all ranges sum to exactly 1 at every position even where more
    than two ranges overlap (an overlap above half the window). Ranges are sorted by start and
    by stop (what :func:`plan_ranges` makes), so only neighbours that intersect are visited.

    With ``blend="linear"`` the ramps are cross-fades ``(j+1)/(n+1)``; with ``"cut"`` each
    overlap is split at its middle (weights 0 or 1, half and half on an odd overlap's middle
    item), as the SparkVSR release stitches.
    """
    start, stop = ranges[index]
    own = _raw_weights(ranges, index, blend)
    total = own.clone()
    for step in (-1, 1):
        other = index + step
        while 0 <= other < len(ranges):
            lo, hi = max(ranges[other][0], start), min(ranges[other][1], stop)
            if lo >= hi:
                break  # sorted ranges: the ones beyond this neighbour miss too
            offset = ranges[other][0]
            total[lo - start:hi - start] += _raw_weights(ranges, other, blend)[lo - offset:hi - offset]
            other += step
    if bool((total <= 0).any()):
        raise AssertionError(f"blend weights vanish inside range {ranges[index]} of {ranges}")
    return own / total


def _raw_weights(ranges: list[tuple[int, int]], index: int, blend: str) -> torch.Tensor:
    """Unnormalised ramps of range ``index``: rising over the overlap with the previous range,
    falling over the overlap with the next one (1 elsewhere)."""
    start, stop = ranges[index]
    weights = torch.ones(stop - start, dtype=torch.float64)
    if index > 0:
        n = min(max(0, ranges[index - 1][1] - start), stop - start)
        weights[:n] = _rise(n, blend)
    if index + 1 < len(ranges):
        n = min(max(0, stop - ranges[index + 1][0]), stop - start)
        if n:
            weights[stop - start - n:] = weights[stop - start - n:] * _rise(n, blend).flip(0)
    return weights


def _rise(n: int, blend: str) -> torch.Tensor:
    """Weights of the later range over an overlap of ``n`` items (the earlier one gets the flip)."""
    j = torch.arange(n, dtype=torch.float64)
    if blend == "cut":
        # 0 before the middle, 1 after; an odd overlap's middle item is shared half and half.
        mid = (n - 1) / 2
        return torch.where(j > mid, 1.0, torch.where(j == mid, 0.5, 0.0)).to(torch.float64)
    # A cross-fade over the middle half of the overlap: the outer quarters belong wholly to the
    # range whose edge is further away, because a window's or tile's edge items saw padding
    # instead of their neighbours (a bicubic kernel reaches 2 input pixels, a VAE further).
    margin = n // 4
    return ((j + 1 - margin) / (n + 1 - 2 * margin)).clamp(0.0, 1.0)
