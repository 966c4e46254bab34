"""Online scene cuts and chunk planning for streaming methods (InfVSR's rule, reusable by others).

The detector reproduces PySceneDetect 0.6.7.1's ``ContentDetector`` with its defaults, which the
InfVSR release runs (``diffsynth_wan/scenes.py``; infvsr.md errata):

* frames go to HSV exactly as OpenCV's 8-bit ``cvtColor(BGR2HSV)`` (H in [0, 180), fixed-point
  tables with 12 fractional bits);
* a frame's score is the mean absolute difference of H, S and V to the previous frame, averaged
  over the three (weights (1, 1, 1), edges 0); the first frame scores 0;
* a frame is "above" when its score is ``>= threshold``; the MERGE flash filter of length
  ``min_scene_len`` turns "above" frames into cuts: no cut within ``min_scene_len`` frames of the
  first frame or of the previous cut, and a run of cuts closer than that is merged into one at
  its last frame, reported up to ``min_scene_len`` frames late.

:class:`SceneChunker` turns frames into the chunks a streaming method runs: ``first`` frames
after a scene start, then ``later`` frames (InfVSR: 9, then 12), shorter only before a cut or at
the end, each flagged as a new scene (reset caches) and/or as needing a new reference frame.

Scores are computed where the frames are (the method's device), in one batch per push.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

# OpenCV color_hsv: fixed-point shift and the two division tables (saturate_cast rounds to nearest even).
_HSV_SHIFT = 12


def _division_tables(device) -> tuple[torch.Tensor, torch.Tensor]:
    i = torch.arange(256, dtype=torch.float64)
    sdiv = torch.where(i > 0, torch.round((255 << _HSV_SHIFT) / i.clamp(min=1)), torch.zeros_like(i))
    hdiv = torch.where(i > 0, torch.round((180 << _HSV_SHIFT) / (6.0 * i.clamp(min=1))), torch.zeros_like(i))
    return sdiv.to(device, torch.int32), hdiv.to(device, torch.int32)


def rgb_to_hsv8(rgb: torch.Tensor) -> torch.Tensor:
    """OpenCV's 8-bit RGB -> HSV, bit for bit.

    Args:
        rgb: ``(..., 3, H, W)`` integer tensor with values in [0, 255] (R, G, B).

    Returns:
        ``(..., 3, H, W)`` uint8: H in [0, 180), S and V in [0, 255].
    """
    x = rgb.to(torch.int32)  # products stay below 2**31 (255 * 1044480, 1275 * 122880)
    r, g, b = x.unbind(-3)
    v = torch.maximum(torch.maximum(r, g), b)
    vmin = torch.minimum(torch.minimum(r, g), b)
    diff = v - vmin
    sdiv, hdiv = _division_tables(x.device)
    half = 1 << (_HSV_SHIFT - 1)
    s = (diff * sdiv[v] + half) >> _HSV_SHIFT
    # OpenCV's branch order: V == R first, then V == G, else V == B.
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * hdiv[diff] + half) >> _HSV_SHIFT
    h = torch.where(h < 0, h + 180, h)
    return torch.stack((h, s, v), dim=-3).to(torch.uint8)


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """``(..., H, W)`` float in [-1, 1] (the engine's ``frames / 255 * 2 - 1``) -> the uint8 values back."""
    return ((video.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def content_scores(hsv: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """ContentDetector scores of ``hsv (T, 3, H, W)`` uint8, each frame against the one before it
    (the first against ``previous``, or 0 without one): the mean of the three mean absolute channel
    differences. Returns ``(T,)`` float64 on the frames' device."""
    frames = hsv.to(torch.int32)
    if previous is None:
        current, before = frames[1:], frames[:-1]
    else:
        current, before = frames, torch.cat([previous[None].to(torch.int32), frames[:-1]])
    # Per channel sum|diff| / pixels (PySceneDetect's _mean_pixel_distance), then the mean of H, S, V.
    scores = (current - before).abs().to(torch.float64).mean(dim=(-2, -1)).mean(dim=-1)
    if previous is None:
        scores = torch.cat([scores.new_zeros(1), scores])
    return scores


class FlashFilterMerge:
    """PySceneDetect's ``FlashFilter`` in MERGE mode: "above threshold" frames -> cut frames.

    Args:
        length: ``min_scene_len`` (0 passes every above-threshold frame through).
    """

    def __init__(self, length: int):
        self.length = length
        self.last_above: int | None = None
        self.merge_enabled = False
        self.merge_triggered = False
        self.merge_start: int | None = None

    def __call__(self, frame: int, above: bool) -> list[int]:
        if not self.length > 0:
            return [frame] if above else []
        if self.last_above is None:
            self.last_above = frame
        length_met = frame - self.last_above >= self.length
        if above:
            self.last_above = frame
        if self.merge_triggered:
            if length_met and not above and self.last_above - self.merge_start >= self.length:
                self.merge_triggered = False
                return [self.last_above]
            return []
        if not above:
            return []
        if length_met:
            self.merge_enabled = True
            return [frame]
        if self.merge_enabled:
            self.merge_triggered = True
            self.merge_start = frame
        return []


@dataclass(frozen=True)
class PlannedChunk:
    """One chunk to run.

    Args:
        start: Index of its first frame in the clip.
        stop: One past its last frame.
        new_scene: Whether it starts a scene (reset caches, positions and the reference).
        update_reference: Whether the reference frame is recomputed from its first frame.
    """

    start: int
    stop: int
    new_scene: bool
    update_reference: bool


class SceneChunker:
    """Plans the chunks of a clip from its frames as they arrive (the release's ``scene_batches``,
    or ``frame_batches`` with ``detect=False``).

    Args:
        first: Frames of the first chunk of a scene (InfVSR 9 = 1 + 4*2: three latent frames).
        later: Frames of every later chunk (12 = 4*3).
        detect: Detect scene cuts; without, one scene and one reference for the whole clip.
        scene_threshold: Content score at or above which a frame may start a new scene.
        reference_threshold: Score between the current reference and a chunk's first frame at or
            above which the reference is recomputed (checked once ``reference_gap`` frames passed).
        min_scene_len: Flash-filter length: frames a scene lasts at least; also how many frames
            decisions wait for (cuts can be reported that late).
        reference_gap: Frames since the last reference before it may be replaced.
    """

    def __init__(self, first: int = 9, later: int = 12, detect: bool = True, scene_threshold: float = 27.0,
                 reference_threshold: float = 27.0, min_scene_len: int = 15, reference_gap: int = 15):
        if first < 1 or later < 1:
            raise ValueError(f"chunk sizes must be >= 1. Got first={first}, later={later}.")
        self.first, self.later, self.detect = first, later, detect
        self.scene_threshold, self.reference_threshold = scene_threshold, reference_threshold
        self.reference_gap = reference_gap
        self.delay = min_scene_len if detect else 0
        self.filter = FlashFilterMerge(min_scene_len)
        self.count = 0  # frames received
        self.start = 0  # first frame not yet planned
        self.new_scene = True
        self.cuts: deque[int] = deque()
        self.last_hsv: torch.Tensor | None = None
        self.pending_hsv: deque[torch.Tensor] = deque()  # HSV of frames start..count-1
        self.reference_hsv: torch.Tensor | None = None
        self.reference_index = 0

    def push(self, frames: torch.Tensor) -> list[PlannedChunk]:
        """Take the next frames ``(t, 3, H, W)`` uint8 RGB (any device); returns the chunks now decided."""
        if frames.shape[0] == 0:
            return []
        if self.detect:
            hsv = rgb_to_hsv8(frames)
            scores = content_scores(hsv, self.last_hsv).tolist()
            self.last_hsv = hsv[-1]
            for offset, score in enumerate(scores):
                self.cuts.extend(self.filter(self.count + offset, score >= self.scene_threshold))
            self.pending_hsv.extend(hsv.unbind(0))
        self.count += frames.shape[0]
        return self._drain(max(0, self.count - self.delay), final=False)

    def finish(self) -> list[PlannedChunk]:
        """End of the clip: plan every remaining frame (PySceneDetect's post-processing adds no cut)."""
        return self._drain(self.count, final=True)

    def _take(self, n: int) -> torch.Tensor | None:
        first = self.pending_hsv[0] if self.pending_hsv else None
        for _ in range(min(n, len(self.pending_hsv))):
            self.pending_hsv.popleft()
        return first

    def _drain(self, limit: int, final: bool) -> list[PlannedChunk]:
        planned = []
        while self.start < self.count and self.start < limit:
            if self.cuts and self.cuts[0] == self.start:
                self.cuts.popleft()
                self.new_scene = True
            assert not self.cuts or self.cuts[0] > self.start, "a cut was reported behind the planned frames"
            boundary = self.cuts[0] if self.cuts else None
            stop = min(limit, boundary) if boundary is not None else limit
            size = self.first if self.new_scene else self.later
            available = stop - self.start
            if available < size and not (final or boundary == stop):
                break
            n = min(size, available)
            first_hsv = self._take(n)
            update = self.new_scene
            if self.detect and not update and self.start - self.reference_index >= self.reference_gap:
                score = content_scores(first_hsv[None], self.reference_hsv)[-1]
                update = bool(score >= self.reference_threshold)
            if update:
                self.reference_hsv, self.reference_index = first_hsv, self.start
            planned.append(PlannedChunk(self.start, self.start + n, self.new_scene, update))
            self.start += n
            self.new_scene = False
        return planned

    def held_bytes(self) -> int:
        """Bytes of frame data the planner holds (HSV of pending frames, last and reference frames)."""
        tensors = [*self.pending_hsv, self.last_hsv, self.reference_hsv]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)
