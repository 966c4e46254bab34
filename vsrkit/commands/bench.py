"""``vsrkit bench``: run a method over a dataset, score it, and tabulate sweeps."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from vsrkit.errors import UserError

logger = logging.getLogger(__name__)

RESULTS = "results.json"


def run(cfg) -> None:
    """One bench job. In a sweep (``-m``), a job that fails writes a ``results.json`` with
    ``status: failed`` and the error instead of stopping the sweep (the other jobs run, the summary
    lists it, and the sweep exits with status 1); a single run fails as usual."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        _run_job(cfg)
    except Exception as err:  # noqa: BLE001 -- recorded in the sweep, re-raised for a single run
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        _record_failure(cfg, err)


def _record_failure(cfg, err: Exception) -> None:
    from hydra.core.hydra_config import HydraConfig

    from vsrkit.engine.build import hydra_choice

    job_dir = Path(HydraConfig.get().runtime.output_dir)
    message = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    logger.error("job %s failed: %s", job_dir.name, message, exc_info=not isinstance(err, UserError))
    _write_json(job_dir / RESULTS, {
        "status": "failed", "error": message, "method": hydra_choice("method"), "backbone": hydra_choice("backbone"),
        "data": hydra_choice("data"), "scale": cfg.scale, "overrides": list(HydraConfig.get().overrides.task),
        "host": socket.gethostname(), "pid": os.getpid(), "scores": {}, "higher_is_better": {},
        "seconds_per_frame": float("nan"), "peak_gpu_bytes": 0, "frames": 0, "device": "", "gpu": "",
    })
    print(f"job {job_dir.name} failed: {message}")


def _run_job(cfg) -> None:
    import torch
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from vsrkit.data import eval_clips
    from vsrkit.engine.build import build_method, hydra_choice, to_dataclass
    from vsrkit.engine.evaluate import build_metric_set, score_pairs
    from vsrkit.engine.inference import WindowRunner, apply_overrides, resolve_device
    from vsrkit.engine.run_infer import keyframes_from_config, upscale_file

    method_name, backbone_name, data_name = hydra_choice("method"), hydra_choice("backbone"), hydra_choice("data")
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    engine_cfg, io_cfg = to_dataclass(cfg.engine, "engine"), to_dataclass(cfg.io, "io")
    clips = eval_clips(to_dataclass(cfg.data, f"data `{data_name}`"))
    metrics = build_metric_set(cfg.metric)
    method = build_method(cfg, method_name, backbone_name, cfg.scale)
    spec = apply_overrides(method.window_spec(), engine_cfg.window, engine_cfg.overlap, engine_cfg.tile,
                           engine_cfg.tile_overlap)
    device = resolve_device(engine_cfg.device)
    method.load(device, None)  # None: the backbone preset's dtype (backbone.dtype) decides
    runner = WindowRunner(method, spec, device, blend=engine_cfg.blend, seed=engine_cfg.seed)
    videos, stats = [], []
    keyframe_models: dict = {}  # a keyframe model (keyframes.source=method) loads once for all clips
    for clip in clips:
        dst = job_dir / "outputs" / f"{clip.name}.mkv"
        keyframes_for = (keyframes_from_config(cfg.keyframes, spec.scale, clip.gt, device=device, cache=keyframe_models,
                                               padded_length=spec.padded_length)
                         if spec.uses_keyframes else None)
        stats.append(upscale_file(runner, Path(clip.lq), dst, io_cfg=io_cfg, overwrite=True,
                                  max_frames=cfg.max_frames, decode_chunk=engine_cfg.decode_chunk,
                                  keyframes_for=keyframes_for, progress=cfg.progress))
        video_scores, _ = score_pairs([(clip.name, dst, clip.gt)], metrics, align=cfg.align)
        videos.extend(video_scores)
        if not cfg.save_outputs:
            dst.unlink()
    if not cfg.save_outputs:
        shutil.rmtree(job_dir / "outputs", ignore_errors=True)
    from vsrkit.metrics.aggregate import summarize

    summary = summarize(videos)
    frames = sum(s.frames for s in stats)
    seconds = sum(s.seconds for s in stats)
    result = {
        "method": method_name, "backbone": backbone_name, "data": data_name, "scale": cfg.scale,
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        "overrides": list(HydraConfig.get().overrides.task), "status": "ok",
        "host": socket.gethostname(), "pid": os.getpid(),
        "scores": summary["scores"], "higher_is_better": summary["higher_is_better"], "metric_info": summary["info"],
        "frames": frames, "seconds": seconds, "seconds_per_frame": seconds / max(frames, 1),
        "peak_gpu_bytes": max((s.peak_gpu_bytes for s in stats), default=0),
        "videos": [dict(v.to_dict(), seconds=s.seconds, seconds_per_frame=s.seconds_per_frame)
                   for v, s in zip(videos, stats)],
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    _write_json(job_dir / RESULTS, result)
    line = ", ".join(f"{k} {v:.4f}" for k, v in summary["scores"].items())
    print(f"{method_name} on {data_name}: {line}; {result['seconds_per_frame'] * 1000:.1f} ms/frame -> {job_dir / RESULTS}")


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def write_summary(folder: Path) -> Path | None:
    """Tabulate every ``*/results.json`` (or ``results.json``) under ``folder``.

    Writes ``summary.md``, ``summary.csv`` and ``summary.png`` (quality against speed) into
    ``folder`` and returns the Markdown path, or None when there are no results.
    """
    files = sorted(folder.glob(f"*/{RESULTS}")) or sorted(folder.glob(RESULTS))
    results = [json.loads(f.read_text()) for f in files]
    if not results:
        return None
    keys: list[str] = []
    for r in results:
        keys.extend(k for k in r["scores"] if k not in keys)
    failed = [r for r in results if r.get("status") == "failed"]
    rows = []
    for f, r in zip(files, results):
        row: dict[str, Any] = {"method": r["method"], "backbone": r["backbone"] or "", "data": r["data"],
                               "scale": r["scale"]}
        row.update({k: r["scores"].get(k, float("nan")) for k in keys})
        row.update({"ms/frame": r["seconds_per_frame"] * 1000, "peak GiB": r["peak_gpu_bytes"] / 2**30,
                    "frames": r["frames"], "device": r["gpu"] or r["device"],
                    "job": f.parent.name if f.parent != folder else "."})
        if failed:
            row["status"] = "failed: " + r["error"] if r.get("status") == "failed" else "ok"
        rows.append(row)
    columns = list(rows[0])
    from vsrkit.engine.evaluate import format_table

    arrows = {k: (" (higher better)" if results[0]["higher_is_better"].get(k, True) else " (lower better)") for k in keys}
    md = folder / "summary.md"
    header = f"# vsrkit bench summary\n\n{len(rows)} job(s). Scores are per-video means averaged over videos.\n"
    if failed:
        header += f"\n**{len(failed)} job(s) failed**; see the status column.\n"
    notes = "\n".join(f"- {k}{arrows[k]}" for k in keys)
    _atomic_text(md, f"{header}\n{format_table(rows, columns)}\n\n{notes}\n")
    csv_path = folder / "summary.csv"
    tmp = csv_path.with_name(csv_path.name + ".partial")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, csv_path)
    _plot(folder / "summary.png", [r for r in rows if not r.get("status", "ok").startswith("failed")],
          keys[0] if keys else None)
    return md


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def _plot(path: Path, rows: list[dict], metric: str | None) -> None:
    if metric is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        ax.scatter(row["ms/frame"], row[metric])
        ax.annotate(f"{row['method']} ({row['backbone'] or '-'})", (row["ms/frame"], row[metric]), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("ms per output frame (log)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against speed")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name("partial-" + path.name)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


class SweepSummary(Callback):
    """Hydra callback: after a run or a whole sweep, write the summary table."""

    def on_run_end(self, config, **kwargs) -> None:
        self._summarize(Path(config.hydra.run.dir))

    def on_multirun_end(self, config, **kwargs) -> None:
        self._summarize(Path(config.hydra.sweep.dir))

    @staticmethod
    def _summarize(folder: Path) -> None:
        md = write_summary(folder) if folder.is_dir() else None
        if md is not None:
            print(f"summary: {md} (+ summary.csv, summary.png)")
            results = [json.loads(f.read_text()) for f in sorted(folder.glob(f"*/{RESULTS}"))]
            failed = [r for r in results if r.get("status") == "failed"]
            if failed:
                print(f"error: {len(failed)} of {len(results)} bench jobs failed (first: {failed[0]['error']}); "
                      f"the others are in {md}", file=sys.stderr)
                sys.exit(1)
