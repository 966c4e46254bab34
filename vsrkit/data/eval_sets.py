"""Evaluation clips of a paired dataset preset (``vsrkit bench`` / ``vsrkit eval``). No torch.

``eval_clips(cfg)`` lists ``EvalClip(name, lq, gt)``: ``lq``/``gt`` are absolute paths of a frames
folder or a video file (``gt`` is None for LQ-only sets such as MovieLQ). Layouts:

- ``frames``: ``<root>/GT/<clip>/*.png`` and ``<root>/LQ/<clip>/*.png``;
- ``video``: ``<root>/GT-Video/<clip>.mkv`` and ``<root>/LQ-Video/<clip>.mkv``;
- ``single``: one clip, ``<root>/<gt_dir>/*.png`` and ``<root>/<lq_dir>/*.png`` (Vid4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vsrkit.data.config import HQDataConfig, PairedDataConfig
from vsrkit.data.files import is_image, is_video
from vsrkit.errors import UserError


@dataclass(frozen=True)
class EvalClip:
    """One evaluation clip.

    Attributes:
        name: Clip name (folder or file stem), unique in the dataset.
        lq: Absolute path of the LQ frames folder or video file.
        gt: Absolute path of the GT frames folder or video file; None if the set has no GT.
    """

    name: str
    lq: Path
    gt: Path | None


def _root(cfg: PairedDataConfig) -> Path:
    if not cfg.root:
        raise UserError(f"`data.root` is not set for dataset `{cfg.name}`: pass data.root=<dataset folder>.")
    root = Path(cfg.root).expanduser().resolve()
    if not root.is_dir():
        raise UserError(f"dataset `{cfg.name}`: root {root} does not exist or is not a folder; "
                        f"pass data.root=<dataset folder>.")
    return root


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and is_image(p) for p in folder.iterdir())


def _frames_entries(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and _has_images(p)}


def _video_entries(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and is_video(p)}


def resolve_layout(cfg: PairedDataConfig, root: Path) -> str:
    """The layout ``auto`` stands for at ``root`` (``frames`` or ``video``), or ``cfg.layout``."""
    if cfg.layout != "auto":
        return cfg.layout
    if (root / cfg.lq_dir).is_dir():
        return "frames"
    if (root / cfg.lq_video_dir).is_dir():
        return "video"
    if (root / cfg.gt_dir).is_dir() or (root / cfg.gt_video_dir).is_dir():
        raise UserError(f"dataset `{cfg.name}`: {root} has GT but no LQ folder (`{cfg.lq_dir}/` or "
                        f"`{cfg.lq_video_dir}/`); make one with tools/make_testset.py.")
    raise UserError(f"dataset `{cfg.name}`: {root} has neither `{cfg.lq_dir}/` nor `{cfg.lq_video_dir}/`; "
                    f"expected <root>/{{{cfg.gt_dir},{cfg.lq_dir}}}/<clip>/ or "
                    f"<root>/{{{cfg.gt_video_dir},{cfg.lq_video_dir}}}/<clip>.mkv.")


def paired_clips(cfg: PairedDataConfig, *, require_gt: bool = False) -> list[EvalClip]:
    """The clips of a paired dataset, in name order.

    Args:
        cfg: The dataset config (``root`` absolute or relative to the working directory).
        require_gt: Fail if the dataset has no GT (training needs it).

    Raises:
        UserError: missing root or folders, no clips, a clip without GT while others have GT, or
            a name in ``cfg.clips`` that the dataset lacks.
    """
    root = _root(cfg)
    layout = resolve_layout(cfg, root)
    if layout == "single":
        lq, gt = root / cfg.lq_dir, root / cfg.gt_dir
        if not lq.is_dir() or not _has_images(lq):
            raise UserError(f"dataset `{cfg.name}`: {lq} must be a folder of LQ frames "
                            f"(pass data.root=<folder with {cfg.gt_dir}/ and {cfg.lq_dir}/>).")
        has_gt = gt.is_dir() and _has_images(gt)
        if require_gt and not has_gt:
            raise UserError(f"dataset `{cfg.name}`: {gt} must be a folder of GT frames.")
        clips = [EvalClip(root.name, lq, gt if has_gt else None)]
    else:
        lq_dir = root / (cfg.lq_dir if layout == "frames" else cfg.lq_video_dir)
        gt_dir = root / (cfg.gt_dir if layout == "frames" else cfg.gt_video_dir)
        entries = _frames_entries if layout == "frames" else _video_entries
        if not lq_dir.is_dir():
            raise UserError(f"dataset `{cfg.name}`: LQ folder {lq_dir} does not exist (layout `{layout}`).")
        lq = entries(lq_dir)
        gt = entries(gt_dir) if gt_dir.is_dir() else {}
        if not lq:
            kind = "folders of frames" if layout == "frames" else "video files"
            raise UserError(f"dataset `{cfg.name}`: {lq_dir} holds no clips ({kind}).")
        if gt:
            missing = sorted(set(lq) - set(gt))
            if missing:
                raise UserError(f"dataset `{cfg.name}`: clips {missing[:5]} have LQ in {lq_dir} but no GT in {gt_dir}.")
        elif require_gt:
            raise UserError(f"dataset `{cfg.name}`: no GT clips in {gt_dir}; training on pairs needs GT.")
        clips = [EvalClip(name, lq[name], gt.get(name)) for name in sorted(lq)]
    if cfg.clips:
        known = {c.name: c for c in clips}
        unknown = [n for n in cfg.clips if n not in known]
        if unknown:
            raise UserError(f"`data.clips` names {unknown}, not in dataset `{cfg.name}` "
                            f"(has {sorted(known)[:10]}).")
        clips = [known[n] for n in cfg.clips]
    return clips


def eval_clips(cfg: Any) -> list[EvalClip]:
    """The clips to evaluate for a data config (``vsrkit bench data=<preset>``).

    Args:
        cfg: A data config dataclass: :class:`PairedDataConfig` (every evaluation preset) or a
            plugin's config whose registered dataset class has an ``eval_clips(cfg)`` classmethod.

    Returns:
        ``EvalClip`` list with absolute paths.

    Raises:
        UserError: a training-only preset, a missing root or a malformed dataset folder.
    """
    if isinstance(cfg, PairedDataConfig):
        return paired_clips(cfg)
    if isinstance(cfg, HQDataConfig):
        raise UserError(f"dataset `{cfg.name}` holds HQ clips only (training, degraded on the fly); "
                        f"evaluate on a paired preset (udm10, spmcs, youhq40, realvsr, movielq, paired, "
                        f"vid4-calendar) or make one with tools/make_testset.py.")
    from vsrkit.builtins import register_builtins
    from vsrkit.registry import DATASETS

    register_builtins()
    name = getattr(cfg, "name", None)
    impl = DATASETS.get(name) if name in DATASETS else None
    if impl is None or not hasattr(impl, "eval_clips"):
        raise UserError(f"dataset `{name}` ({type(cfg).__name__}) cannot be used for evaluation.")
    return list(impl.eval_clips(cfg))
