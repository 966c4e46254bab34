"""tools/bench_method.py runs a streaming method (CPU smoke run on the tiny preset)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[3] / "tools" / "bench_method.py"


@pytest.mark.slow
def test_bench_method_streams_infvsr_with_stage_times_and_file_round_trip(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_method", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "r.json"
    assert tool.main(["--method", "infvsr", "--backbone", "wan2.1-t2v-1.3b-tiny", "--lr", "4x8", "--frames", "9",
                      "--frames", "21", "--repeats", "1", "--device", "cpu", "--dtype", "fp32", "--file-to-file", "21",
                      "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["frames"], r["hr"]) for r in rows] == [(9, [16, 32]), (21, [16, 32])]
    for row in rows:
        assert set(row["parts_seconds"]) == {"encode", "denoise", "decode"}
        assert 0 < sum(row["parts_seconds"].values()) <= row["seconds"] * 1.05
    assert "file" not in rows[0]
    assert set(rows[1]["file"]) == {"decode_s", "encode_s", "file_to_file_s", "file_to_file_ms_per_frame"}
