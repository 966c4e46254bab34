"""tools/bench_realesrgan.py runs end to end on CPU (tiny frames, random weights) and reports each stage."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[3] / "tools"


def test_bench_tool_tiny_cpu_run(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(TOOLS))
    spec = importlib.util.spec_from_file_location("bench_realesrgan", TOOLS / "bench_realesrgan.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "b.json"
    assert tool.main(["--device", "cpu", "--random-weights", "--lr", "8x12", "--frames", "2", "--clip-frames", "3",
                      "--repeats", "1", "--models", "animevideov3,x4plus-anime", "--dtypes", "fp32", "--file-dtype", "fp32",
                      "--window", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r.get("model"), r["part"]) for r in rows] == [
        (None, "decode"), ("animevideov3", "model"), ("animevideov3", "model (NCHW)"), ("animevideov3", "engine"),
        ("animevideov3", "encode"), ("animevideov3", "file"), ("x4plus-anime", "model"), ("x4plus-anime", "model (NCHW)"),
        ("x4plus-anime", "engine"), ("x4plus-anime", "file")]
    assert all(r["ms_per_frame"] > 0 and r["lr"] == [8, 12] and r["hr"] == [32, 48] for r in rows)
    stages = {r["part"]: r["ms_per_frame"] for r in rows[:6]}
    file_row = rows[5]
    assert file_row["slowest_stage_ms"] == max(stages["decode"], stages["engine"], stages["encode"])
    assert file_row["file_over_slowest"] == stages["file"] / file_row["slowest_stage_ms"]
    assert "| animevideov3 | file | fp32 |" in capsys.readouterr().out
