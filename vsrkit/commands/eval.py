"""``vsrkit eval``: score a prediction (file or folder) against ground truth."""

from __future__ import annotations

import json
import os
from pathlib import Path


def run(cfg) -> None:
    from vsrkit.engine.evaluate import build_metric_set, format_table, match_pairs, score_pairs

    metrics = build_metric_set(cfg.metric)
    pairs = match_pairs(cfg.pred, cfg.gt)
    videos, summary = score_pairs(pairs, metrics, align=cfg.align)
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
