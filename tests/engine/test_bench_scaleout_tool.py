"""tools/bench_scaleout.py on CPU processes (what the GPU figures will be produced with)."""

from __future__ import annotations

import json
import sys

import pytest
from launch_helpers import REPO, run

pytestmark = pytest.mark.slow


def test_infer_scaling_reports_speedup_and_equality(tmp_path):
    out = tmp_path / "scale.json"
    cmd = [sys.executable, str(REPO / "tools" / "bench_scaleout.py"), "infer", "--method", "bicubic", "--processes", "1,2",
           "--frames", "10", "--lr", "16x24", "--scale", "2", "--set", "engine.device=cpu", "--set", "engine.window=4",
           "--set", "engine.overlap=1", "--work", str(tmp_path / "work"), "--out", str(out)]
    proc = run(cmd, tmp_path, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(out.read_text())
    assert result["gpu"] == "cpu"
    one, two = result["result"]
    assert (one["processes"], two["processes"]) == (1, 2) and one["ok"] and two["ok"]
    assert one["frames"] == two["frames"] == 10 and one["speedup"] == 1.0
    assert two["speedup"] == pytest.approx(one["file_seconds"] / two["file_seconds"])
    assert two["efficiency"] == pytest.approx(two["speedup"] / 2)
    assert two["vs_first"] == {"same_shape": True, "max_abs_diff": 0, "psnr_db": float("inf"), "frames_differing": 0}
    # windows [0,4) [3,7) [6,10): process 0 takes one, process 1 two and finishes frame 3
    assert [s.split(" in ")[0] for s in two["segments"]] == [
        "segment 0 (process 0) computed frames [0, 3) (windows 0-0)",
        "segment 1 (process 1) computed frames [3, 10) (windows 1-2)"]
