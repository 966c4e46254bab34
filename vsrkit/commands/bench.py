"""``vsrkit bench``: run a method over a dataset, score it, and tabulate sweeps."""

from __future__ import annotations

import csv
import json
import logging
import math
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
    """One bench job. A failing job (bad option, missing weights, out of memory ...) writes its error
    into its ``results.json`` instead of scores; in a ``-m`` sweep the next job then runs, and the
    summary marks the failure."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from vsrkit.engine.build import hydra_choice

    job_dir = Path(HydraConfig.get().runtime.output_dir)
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        result = _run_job(cfg, job_dir)
    except Exception as err:  # noqa: BLE001 -- every failure is recorded; the sweep goes on
        from vsrkit.errors import UserError

        overrides = " ".join(HydraConfig.get().overrides.task)
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        if not isinstance(err, UserError):
            message = f"{type(err).__name__}: {message}"
            logger.error("bench job %s failed", overrides, exc_info=err)  # a bug: keep its traceback
        _write_json(job_dir / RESULTS, {
            "method": hydra_choice("method"), "backbone": hydra_choice("backbone"), "data": hydra_choice("data"),
            "scale": cfg.scale, "status": "failed", "error": message, "overrides": list(HydraConfig.get().overrides.task),
        })
        if not sweeping:
            raise
        print(f"error: job `{overrides}` failed: {message} (recorded in {job_dir / RESULTS}; the sweep goes on)",
              file=sys.stderr)
        return
    line = ", ".join(f"{k} {v:.4f}" for k, v in result["scores"].items())
    note = "".join(f"; {n}" for n in result["notes"])
    print(f"{result['method']} on {result['data']}: {line}; {result['seconds_per_frame'] * 1000:.1f} ms/frame{note} "
          f"-> {job_dir / RESULTS}")


def _run_job(cfg, job_dir: Path) -> dict:
    import torch
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from vsrkit.data import eval_clips
    from vsrkit.engine.build import build_method, hydra_choice, random_weights_note, to_dataclass
    from vsrkit.engine.evaluate import build_metric_set, score_pairs
    from vsrkit.engine.inference import WindowRunner, apply_overrides, resolve_device
    from vsrkit.engine.run_infer import keyframes_from_config, upscale_file

    method_name, backbone_name, data_name = hydra_choice("method"), hydra_choice("backbone"), hydra_choice("data")
    engine_cfg, io_cfg = to_dataclass(cfg.engine, "engine"), to_dataclass(cfg.io, "io")
    if io_cfg.output_size is not None:
        # Scores compare with ground truth at scale x the input; a resized output would not align.
        raise UserError(f"`io.output_size={io_cfg.output_size}` is for `vsrkit infer`; `vsrkit bench` scores "
                        f"outputs at scale x the input against the ground truth. Drop io.output_size.")
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
    weights_note = random_weights_note(cfg.get("backbone"))
    result = {
        "method": method_name, "backbone": backbone_name, "data": data_name, "scale": cfg.scale, "status": "ok",
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        "overrides": list(HydraConfig.get().overrides.task),
        "host": socket.gethostname(), "pid": os.getpid(),
        "scores": summary["scores"], "higher_is_better": summary["higher_is_better"], "metric_info": summary["info"],
        "frames": frames, "seconds": seconds, "seconds_per_frame": seconds / max(frames, 1),
        "peak_gpu_bytes": max((s.peak_gpu_bytes for s in stats), default=0) if device.type == "cuda" else None,
        "random_weights": weights_note is not None,
        "notes": ([weights_note] if weights_note else []) + [n for s in stats for n in s.notes],
        "videos": [dict(v.to_dict(), seconds=s.seconds, seconds_per_frame=s.seconds_per_frame, notes=s.notes)
                   for v, s in zip(videos, stats)],
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    _write_json(job_dir / RESULTS, result)
    return result


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
        keys.extend(k for k in r.get("scores", {}) if k not in keys)
    rows = []
    for f, r in zip(files, results):
        failed = r.get("status") == "failed"
        row: dict[str, Any] = {"method": r["method"], "backbone": r["backbone"] or "", "data": r["data"],
                               "scale": r["scale"]}
        row.update({k: r.get("scores", {}).get(k, float("nan")) for k in keys})
        peak = r.get("peak_gpu_bytes")
        row.update({"ms/frame": float("nan") if failed else r["seconds_per_frame"] * 1000,
                    # No GPU, no GPU memory figure (0.0000 would read as "measured, nothing used").
                    "peak GiB": peak / 2**30 if peak else "n/a",
                    "frames": r.get("frames", 0), "device": r.get("gpu") or r.get("device", ""),
                    "job": f.parent.name if f.parent != folder else ".",
                    "note": f"FAILED: {r['error']}" if failed else "; ".join(r.get("notes", []))})
        rows.append(row)
    columns = list(rows[0])
    from vsrkit.engine.evaluate import format_table

    higher = next((r["higher_is_better"] for r in results if "higher_is_better" in r), {})
    arrows = {k: (" (higher better)" if higher.get(k, True) else " (lower better)") for k in keys}
    md = folder / "summary.md"
    failed = sum(1 for r in results if r.get("status") == "failed")
    header = (f"# vsrkit bench summary\n\n{len(rows)} job(s)" + (f", {failed} FAILED (see the note column)" if failed else "")
              + ". Scores are per-video means averaged over videos.\n")
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

    rows = [r for r in rows if not (isinstance(r["ms/frame"], float) and math.isnan(r["ms/frame"]))]
    if not rows:
        return
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
