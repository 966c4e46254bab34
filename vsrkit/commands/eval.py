"""``vsrkit eval``: score a prediction (file or folder) against ground truth."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vsrkit.errors import UserError


def run(cfg) -> None:
    from vsrkit.engine.evaluate import build_metric_set, format_table, match_pairs, score_pairs

    if cfg.output and Path(cfg.output).suffix.lower() != ".json":
        # Scores are JSON; any other name could be a video or folder that must not be replaced.
        raise UserError(f"`output` is where the scores go, a .json file. Got {cfg.output}.")
    metrics = build_metric_set(cfg.metric)
    pairs = match_pairs(cfg.pred, cfg.gt)
    videos, summary = score_pairs(pairs, metrics, align=cfg.align, autorotate=cfg.autorotate)
    keys = list(summary["scores"])
    rows = [{"video": v.name, "frames": v.num_frames, **v.mean} for v in videos]
    rows.append({"video": "mean", "frames": summary["num_frames"], **summary["scores"]})
    print(format_table(rows, ["video", "frames", *keys]))
    if cfg.output:
        path = Path(cfg.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(json.dumps({"videos": [v.to_dict() for v in videos], "summary": summary}, indent=2))
        os.replace(tmp, path)
        print(f"scores written to {path}")
