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


def test_moving_content_is_one_shot_for_the_scene_detector():
    # The "moving" input is a pan: InfVSR's scene chunker sees one scene and refreshes its reference
    # once, where i.i.d. noise makes it refresh every min_scene_len frames.
    import torch

    from vsrkit.methods.infvsr.config import InfVSRConfig
    from vsrkit.methods.infvsr.method import CHUNK, FIRST_CHUNK, REFERENCE_GAP
    from vsrkit.methods.scenes import SceneChunker

    spec = importlib.util.spec_from_file_location("bench_method", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    c = InfVSRConfig()
    counts = {}
    for content in ("noise", "moving"):
        frames = tool.input_frames(content, 120, 48, 64)
        assert frames.shape == (120, 48, 64, 3) and frames.dtype.name == "uint8"
        chunker = SceneChunker(FIRST_CHUNK, CHUNK, detect=True, scene_threshold=c.scene_threshold,
                               reference_threshold=c.reference_threshold, min_scene_len=c.min_scene_len,
                               reference_gap=REFERENCE_GAP)
        plans = list(chunker.push(torch.from_numpy(frames).permute(0, 3, 1, 2))) + list(chunker.finish())
        counts[content] = (sum(p.new_scene for p in plans), sum(p.update_reference for p in plans))
    assert counts["moving"] == (1, 1)
    assert counts["noise"][1] > 3
