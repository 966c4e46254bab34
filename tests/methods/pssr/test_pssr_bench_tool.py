"""tools/bench_method.py times PS-SR per stage and reloads the backbone for a backbone.* sweep (CPU, tiny)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[3] / "tools" / "bench_method.py"


@pytest.mark.slow
def test_bench_method_reports_pssr_stages_for_native_and_fused_kernels(tmp_path, capsys, monkeypatch):
    from vsrkit.backbones import text

    # --random-prompts patches the prompt encoder for the process: undo it after this test.
    monkeypatch.setattr(text.PromptEncoder, "__call__", text.PromptEncoder.__call__)
    spec = importlib.util.spec_from_file_location("bench_method", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "pssr.json"
    assert tool.main(["--method", "pssr", "--backbone", "wan2.1-t2v-1.3b-tiny", "--lr", "8x16", "--frames", "5",
                      "--device", "cpu", "--dtype", "fp32", "--repeats", "1", "--method-tiles", "--random-prompts",
                      "--sweep", "backbone.vae_kernels=native,fused", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["options"][0] for r in rows] == ["backbone.vae_kernels=native", "backbone.vae_kernels=fused"]
    assert capsys.readouterr().out.count("loaded pssr on wan2.1-t2v-1.3b-tiny") == 2  # one build per kernel choice
    for row in rows:
        stages = row["stages_seconds"]
        assert list(stages) == ["encode", "denoise[0]", "denoise[1]", "denoise[2]", "denoise[3]", "decode", "fdu"]
        assert all(v > 0 for v in stages.values())
        assert sum(stages.values()) <= row["seconds"]
        assert row["hr"] == [32, 64] and "method_tiles" in row["options"]
