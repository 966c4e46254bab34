"""Pairs predictions with ground truth and scores them (``vsrkit eval``, ``vsrkit bench``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vsrkit.errors import UserError

logger = logging.getLogger(__name__)


def _items(folder: Path) -> dict[str, Path]:
    """``{stem: path}`` of the videos and frame folders directly inside ``folder``."""
    from vsrkit.io import is_video, list_images

    items = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and is_video(path):
            items[path.stem] = path
        elif path.is_dir() and list_images(path):
            items[path.name] = path
    return items


def _is_single_clip(path: Path) -> bool:
    from vsrkit.io import is_image, list_images

    return path.is_file() or (path.is_dir() and bool(list_images(path))) or is_image(path)


def match_pairs(pred: str | Path, gt: str | Path | None) -> list[tuple[str, Path, Path | None]]:
    """``[(name, prediction, ground truth)]``.

    A single video, image or frames folder pairs with a single ``gt``; a folder of videos or of
    frame folders pairs item by item with the same name (stem) in ``gt``.
    """
    pred, gt = Path(pred), (Path(gt) if gt is not None else None)
    if not pred.exists():
        raise UserError(f"prediction `{pred}` does not exist.")
    if gt is not None and not gt.exists():
        raise UserError(f"ground truth `{gt}` does not exist.")
    if _is_single_clip(pred):
        if gt is not None and not _is_single_clip(gt):
            raise UserError(f"prediction `{pred}` is one clip but ground truth `{gt}` is a folder of clips.")
        return [(pred.stem if pred.is_file() else pred.name, pred, gt)]
    pred_items = _items(pred)
    if not pred_items:
        raise UserError(f"prediction folder `{pred}` contains no videos, frames or frame folders.")
    if gt is None:
        return [(name, path, None) for name, path in pred_items.items()]
    gt_items = _items(gt)
    missing = sorted(set(pred_items) - set(gt_items))
    if missing:
        raise UserError(f"no ground truth in `{gt}` for {len(missing)} prediction(s), e.g. `{missing[0]}` "
                        f"(matched by name without extension).")
    return [(name, path, gt_items[name]) for name, path in pred_items.items()]


def build_metric_set(metric_node: Any) -> dict:
    """``{name: metric}`` from the composed ``metric`` config node."""
    from vsrkit.engine.build import to_dataclass
    from vsrkit.metrics.aggregate import build_metric

    if metric_node is None or not len(metric_node):
        raise UserError("no metric selected; pass e.g. 'metric=[psnr,ssim]'.")
    return {name: build_metric(name, to_dataclass(metric_node[name], f"metric `{name}`")) for name in metric_node}


def _frames(path: Path, chunk: int, autorotate: bool):
    from vsrkit.io import open_source
    from vsrkit.io.orientation import orient

    source = open_source(path)
    matrix = source.display_matrix if autorotate else None  # the probe's: no counting decode
    return (orient(c.frames, matrix) for c in source.chunks(chunk))


def score_pairs(pairs: list, metrics: dict, *, align: str = "crop", chunk: int = 16,
                autorotate: bool = True) -> tuple[list, dict]:
    """Score every pair; returns ``(per-video VideoScores list, dataset summary)``.

    ``autorotate``: compare videos as displayed (their display matrix applied,
    :mod:`vsrkit.io.orientation`), so an upscaled frames folder, written upright, scores against
    a phone's rotated ground-truth video; false: as stored.
    """
    from vsrkit.metrics.aggregate import evaluate_pair, summarize

    videos = []
    for name, pred, gt in pairs:
        gt_frames = _frames(gt, chunk, autorotate) if gt is not None else None
        scores = evaluate_pair(_frames(pred, chunk, autorotate), gt_frames, metrics, name=name, align=align)
        if scores.frames_dropped_from:
            logger.warning("%s: the %s had more frames and was truncated to %d", name, scores.frames_dropped_from,
                           scores.num_frames)
        videos.append(scores)
    return videos, summarize(videos)


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of ``rows`` (dicts) over ``columns``; floats with 4 decimals."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
