"""Temporal windows and spatial tiles: where they start, and how overlaps are weighted.

A plan is a list of half-open ranges ``[start, stop)`` that covers ``[0, length)``; consecutive
ranges overlap by at most ``overlap``. Blend weights are linear ramps over the overlaps that sum to
exactly 1 for every position, so a constant input gives a constant output across boundaries.
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
    """Weights ``(stop - start,)`` of window ``index`` of ``ranges`` along its axis.

    With ``blend="linear"`` each overlap between neighbours is a cross-fade: weights ``(j+1)/(n+1)``
    for the later window and ``(n-j)/(n+1)`` for the earlier one, summing to 1. With ``"cut"`` the
    overlap is split at its middle (weights 0 or 1), as the SparkVSR release stitches.
    """
    start, stop = ranges[index]
    weights = torch.ones(stop - start, dtype=torch.float64)
    if index > 0:
        n = max(0, ranges[index - 1][1] - start)
        weights[:n] = _rise(n, blend)
    if index + 1 < len(ranges):
        n = max(0, stop - ranges[index + 1][0])
        if n:
            weights[stop - start - n:] = weights[stop - start - n:] * _rise(n, blend).flip(0)
    return weights


def _rise(n: int, blend: str) -> torch.Tensor:
    if blend == "cut":
        # 0 before the middle, 1 after; an odd overlap's middle item is shared half and half.
        j = torch.arange(n, dtype=torch.float64)
        mid = (n - 1) / 2
        return torch.where(j > mid, 1.0, torch.where(j == mid, 0.5, 0.0)).to(torch.float64)
    return torch.arange(1, n + 1, dtype=torch.float64) / (n + 1)
