"""tools/bench_speed.py runs on CPU with a tiny preset and writes JSON and Markdown."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bench_speed.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("bench_speed", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_tool_tiny_run_and_merge(tmp_path, capsys):
    tool = load_tool()
    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    assert tool.main(["--preset", "ltx-video-2b-tiny", "--frames", "9", "--height", "64", "--width", "60",
                      "--warmup", "0", "--repeats", "1", "--out-json", str(out_json), "--out-md", str(out_md)]) == 0
    data = json.loads(out_json.read_text())
    records = data["records"]
    assert [r["part"] for r in records] == ["transformer", "vae encode", "vae decode"]
    first = records[0]
    assert (first["width"], first["height"]) == (64, 64)  # rounded up to LTX's multiple of 32
    assert first["tokens"] == 2 * 2 * 2 and first["flops"] > 0 and first["ms"] > 0
    assert first["tflops_per_s"] == first["flops"] / (first["ms"] / 1e3) / 1e12
    assert data["environment"]["device"] == "cpu"
    assert "| ltx-video-2b-tiny | 64x64x9 | transformer |" in out_md.read_text()
    assert tool.main(["--from-json", str(out_json), str(out_json)]) == 0
    assert capsys.readouterr().out.count("| ltx-video-2b-tiny | 64x64x9 | vae decode |") >= 2


def test_bench_method_builds_real_presets_with_random_weights():
    spec = importlib.util.spec_from_file_location("bench_method", TOOL.parent / "bench_method.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.compose("sparkvsr", None, []).backbone.random_weights is True
    assert tool.compose("sparkvsr", None, ["backbone.random_weights=false"]).backbone.random_weights is False
    assert tool.compose("bicubic", None, []).backbone is None
