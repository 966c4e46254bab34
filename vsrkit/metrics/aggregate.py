"""Score one video with a set of metrics (streamed in chunks), then average over a dataset.

What ``vsrkit eval`` and ``vsrkit bench`` call::

    metrics = build_metrics({"psnr": {}, "ssim": {}, "tof": {}})
    videos = [evaluate_pair(open_source(p).chunks(16), open_source(g).chunks(16), metrics, name=p.stem)
              for p, g in pairs]
    table = summarize(videos)

Conventions (those of the SparkVSR/DOVE evaluator, ``finetune/scripts/eval_all_metrics.py``):

- alignment ``align="crop"``: both sequences are truncated to the shorter one and centre-cropped
  to the common ``min(H) x min(W)`` (``match_resolution``); ``align="strict"`` refuses any mismatch.
- per-frame metrics give one value per frame, temporal metrics one per consecutive pair; the
  per-video score is the mean of those values (mean of per-frame PSNR, not PSNR of the pooled
  MSE), and the dataset score is the mean of the per-video scores.

Frames are streamed: the iterators yield ``(T, H, W, 3)`` uint8 (or uint16) numpy chunks of any
length (what :mod:`vsrkit.io` produces; objects with a ``.frames`` array are accepted too). They
are converted to ``(T, 3, H, W)`` float32 in [0, 1] here, and only here. Temporal metrics receive
the previous chunk's last frame in front of each chunk, so chunking never changes the scores.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from vsrkit.errors import UserError

logger = logging.getLogger(__name__)

ALIGN_MODES = ("crop", "strict")


@dataclass
class VideoScores:
    """Scores of one video.

    Args:
        name: Video name (file stem or folder), as given to :func:`evaluate_pair`.
        num_frames: Frames scored (after truncation to the shorter sequence).
        per_frame: ``{metric: (T,) float64}`` for per-frame metrics, ``(T - 1,)`` for temporal ones.
        mean: ``{key: per-video mean}``; also holds derived keys such as ``ewarp_x1000``. NaN
            when a metric had nothing to score (a temporal metric on a one-frame video).
        higher_is_better: ``{key: bool}`` for every key of ``mean``.
        info: ``{metric: facts}`` that qualify the numbers (e.g. ``{"ewarp": {"flow": "farneback"}}``).
        frames_dropped_from: ``"pred"`` or ``"gt"`` when that sequence was longer and was truncated,
            else ``""``.
        size: ``(H, W)`` the metrics saw (after alignment and ``crop_border``).
    """

    name: str
    num_frames: int
    per_frame: dict[str, np.ndarray]
    mean: dict[str, float]
    higher_is_better: dict[str, bool]
    info: dict[str, dict] = field(default_factory=dict)
    frames_dropped_from: str = ""
    size: tuple[int, int] = (0, 0)

    def to_dict(self) -> dict:
        """A JSON-ready dict (per-frame arrays as lists)."""
        out = dataclasses.asdict(self)
        out["per_frame"] = {k: [float(x) for x in v] for k, v in self.per_frame.items()}
        out["size"] = list(self.size)
        return out


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """The io -> metrics edge: ``(T, H, W, C)`` uint8/uint16 numpy to ``(T, C, H, W)`` float32 in [0, 1].

    Args:
        frames: ``(T, H, W, 3)`` (or ``(T, H, W, 1)``) uint8 in [0, 255] or uint16 in [0, 65535].
    """
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"frames must be a (T, H, W, 3) numpy array. Got {getattr(frames, 'shape', type(frames))}.")
    if frames.dtype == np.uint8:
        scale = 255.0
    elif frames.dtype == np.uint16:
        scale = 65535.0
    else:
        raise ValueError(f"frames must be uint8 or uint16. Got {frames.dtype}.")
    if not frames.flags.writeable:  # torch.from_numpy warns on read-only buffers (decoded frames may be)
        frames = frames.copy()
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(scale)


def build_metric(name: str, config: Any = None) -> Any:
    """Build the registered metric ``name``.

    Args:
        name: Registry name (``vsrkit ls`` lists them).
        config: Its config dataclass, a mapping of its fields, or None for the defaults.

    Raises:
        UserError: Unknown metric, or an unknown config key (the message lists the valid ones).
    """
    from vsrkit.builtins import register_builtins
    from vsrkit.registry import METRICS

    register_builtins()
    if name not in METRICS:
        raise UserError(METRICS.unknown_message(name))
    cls, config_cls = METRICS.get(name), METRICS.get_config(name)
    if config is None:
        config = config_cls()
    elif isinstance(config, Mapping):
        fields = {f.name for f in dataclasses.fields(config_cls)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise UserError(f"metric `{name}` has no option {unknown}. Options: {sorted(fields)}.")
        config = config_cls(**dict(config))
    return cls(config)


def build_metrics(spec: Mapping[str, Any] | Sequence[str]) -> dict[str, Any]:
    """Build several metrics: ``["psnr", "ssim"]`` or ``{"psnr": {...options}, "ssim": None}``.

    Returns:
        ``{name: metric}`` in the given order.
    """
    if isinstance(spec, Mapping):
        return {name: build_metric(name, cfg) for name, cfg in spec.items()}
    return {name: build_metric(name) for name in spec}


def _arrays(chunks: Iterable[Any]) -> Iterator[np.ndarray]:
    for chunk in chunks:
        frames = chunk if isinstance(chunk, np.ndarray) else getattr(chunk, "frames", chunk)
        if len(frames):
            yield frames


class _Rechunker:
    """Buffer one frame stream and hand out exactly ``n`` frames at a time (fewer at its end)."""

    def __init__(self, chunks: Iterable[Any]):
        self._it = _arrays(chunks)
        self._buf: list[np.ndarray] = []
        self._count = 0
        self.exhausted = False

    def _fill(self, n: int) -> None:
        while self._count < n and not self.exhausted:
            try:
                arr = next(self._it)
            except StopIteration:
                self.exhausted = True
                return
            self._buf.append(arr)
            self._count += len(arr)

    def take(self, n: int) -> np.ndarray | None:
        self._fill(n)
        if self._count == 0:
            return None
        joined = self._buf[0] if len(self._buf) == 1 else np.concatenate(self._buf)
        out, rest = joined[:n], joined[n:]
        self._buf, self._count = ([rest] if len(rest) else []), len(rest)
        return out

    def has_more(self) -> bool:
        self._fill(1)
        return self._count > 0


def _centre_crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w]


def evaluate_pair(
    pred_frames: Iterable[Any],
    gt_frames: Iterable[Any] | None,
    metrics: Mapping[str, Any],
    *,
    name: str = "",
    crop_border: int = 0,
    align: str = "crop",
    batch_frames: int = 8,
) -> VideoScores:
    """Score one predicted video (against its ground truth) with every metric, streaming the frames.

    Args:
        pred_frames: Iterator of ``(T, H, W, 3)`` uint8/uint16 chunks of the prediction.
        gt_frames: The same for the ground truth, or None for no-reference metrics only.
        metrics: ``{name: metric}`` (see :func:`build_metrics`).
        name: Video name recorded in the result.
        crop_border: Pixels dropped at each edge of both videos (after alignment) for every metric.
        align: ``"crop"`` truncates to the shorter sequence and centre-crops both to the common
            size (SparkVSR's evaluator); ``"strict"`` raises on any frame-count or size mismatch.
        batch_frames: Frames handed to the metrics per call (memory bound, not a result knob).

    Returns:
        :class:`VideoScores`.

    Raises:
        UserError: Bad option, a full-reference metric without ``gt_frames``, an empty video, or a
            mismatch under ``align="strict"``.
    """
    if align not in ALIGN_MODES:
        raise UserError(f"`align` must be one of {list(ALIGN_MODES)}. Got {align!r}.")
    if crop_border < 0:
        raise UserError(f"`crop_border` must be >= 0. Got {crop_border}.")
    if batch_frames < 1:
        raise UserError(f"`batch_frames` must be >= 1. Got {batch_frames}.")
    if gt_frames is None:
        fr = [k for k, m in metrics.items() if m.needs_gt]
        if fr:
            raise UserError(f"metrics {fr} need ground truth (gt=...); without it use no-reference metrics only.")

    pred_src = _Rechunker(pred_frames)
    gt_src = _Rechunker(gt_frames) if gt_frames is not None else None
    per_frame: dict[str, list[torch.Tensor]] = {k: [] for k in metrics}
    prev: dict[str, torch.Tensor | None] = {"pred": None, "gt": None}
    num_frames, size, dropped = 0, (0, 0), ""

    while True:
        p_np = pred_src.take(batch_frames)
        g_np = gt_src.take(batch_frames) if gt_src is not None else None
        if p_np is None or (gt_src is not None and g_np is None):
            break
        if g_np is not None and len(g_np) != len(p_np):
            dropped = "pred" if len(p_np) > len(g_np) else "gt"
            n = min(len(p_np), len(g_np))
            p_np, g_np = p_np[:n], g_np[:n]
        pred = frames_to_tensor(p_np)
        gt = frames_to_tensor(g_np) if g_np is not None else None
        if gt is not None and pred.shape[-2:] != gt.shape[-2:]:
            if align == "strict":
                raise UserError(f"video `{name}`: prediction frames are {pred.shape[-1]}x{pred.shape[-2]} but "
                                f"ground truth is {gt.shape[-1]}x{gt.shape[-2]} (W x H). Use align=crop to "
                                "centre-crop both to the common size.")
            h, w = min(pred.shape[-2], gt.shape[-2]), min(pred.shape[-1], gt.shape[-1])
            pred, gt = _centre_crop(pred, h, w), _centre_crop(gt, h, w)
        if crop_border:
            if 2 * crop_border >= min(pred.shape[-2:]):
                raise UserError(f"`crop_border` {crop_border} leaves nothing of {pred.shape[-1]}x{pred.shape[-2]} frames.")
            pred = pred[..., crop_border:-crop_border, crop_border:-crop_border]
            gt = gt[..., crop_border:-crop_border, crop_border:-crop_border] if gt is not None else None
        if num_frames and tuple(pred.shape[-2:]) != size:
            raise UserError(f"video `{name}`: frame size changes mid-stream ({size} -> {tuple(pred.shape[-2:])}).")
        size = tuple(pred.shape[-2:])

        for key, metric in metrics.items():
            g = gt if metric.needs_gt else None
            if metric.temporal and prev["pred"] is not None:
                p_in = torch.cat([prev["pred"], pred])
                g_in = torch.cat([prev["gt"], g]) if g is not None else None
            else:
                p_in, g_in = pred, g
            per_frame[key].append(torch.as_tensor(metric(p_in, g_in)).reshape(-1).double().cpu())
        prev = {"pred": pred[-1:], "gt": gt[-1:] if gt is not None else None}
        num_frames += pred.shape[0]

    if num_frames == 0:
        raise UserError(f"video `{name}`: no frames to score (empty prediction or ground truth).")
    if gt_src is not None and not dropped:
        if pred_src.has_more():
            dropped = "pred"
        elif gt_src.has_more():
            dropped = "gt"
    if dropped:
        if align == "strict":
            raise UserError(f"video `{name}`: the {dropped} sequence has more than {num_frames} frames, the other "
                            "has exactly that many. Use align=crop to score the common frames.")
        logger.warning("video %s: %s has more frames than the other sequence; scored the first %d",
                       name or "?", dropped, num_frames)

    return _scores(name, num_frames, metrics, per_frame, dropped, size)


def _scores(name: str, num_frames: int, metrics: Mapping[str, Any], per_frame: dict[str, list[torch.Tensor]],
            dropped: str, size: tuple) -> VideoScores:
    arrays = {k: torch.cat(v).numpy() if v else np.zeros(0) for k, v in per_frame.items()}
    mean: dict[str, float] = {}
    higher: dict[str, bool] = {}
    info: dict[str, dict] = {}
    for key, metric in metrics.items():
        values = arrays[key]
        mean[key] = float(values.mean()) if len(values) else math.nan
        higher[key] = bool(metric.higher_is_better)
        for derived, factor in getattr(metric, "report_scales", {}).items():
            mean[derived] = mean[key] * factor
            higher[derived] = higher[key]
        if getattr(metric, "info", None):
            info[key] = dict(metric.info)
    return VideoScores(name=name, num_frames=num_frames, per_frame=arrays, mean=mean, higher_is_better=higher,
                       info=info, frames_dropped_from=dropped, size=(int(size[0]), int(size[1])))


def summarize(videos: Sequence[VideoScores]) -> dict:
    """Dataset scores: the mean over videos of each per-video mean.

    Videos where a metric had nothing to score (NaN) are left out of that metric's mean.

    Returns:
        ``{"num_videos": int, "num_frames": int, "scores": {key: float}, "higher_is_better":
        {key: bool}, "info": {metric: facts}}``.
    """
    if not videos:
        raise UserError("no videos to summarize (the prediction folder matched nothing).")
    keys: list[str] = []
    for v in videos:
        keys.extend(k for k in v.mean if k not in keys)
    scores, higher, info = {}, {}, {}
    for key in keys:
        values = [v.mean[key] for v in videos if key in v.mean and not math.isnan(v.mean[key])]
        if len(values) < len(videos):
            logger.warning("metric %s: %d of %d videos had no score and are left out of the mean",
                           key, len(videos) - len(values), len(videos))
        scores[key] = float(np.mean(values)) if values else math.nan
        higher[key] = next(v.higher_is_better[key] for v in videos if key in v.higher_is_better)
    for v in videos:
        for key, facts in v.info.items():
            info.setdefault(key, facts)
    return {"num_videos": len(videos), "num_frames": int(sum(v.num_frames for v in videos)), "scores": scores,
            "higher_is_better": higher, "info": info}
