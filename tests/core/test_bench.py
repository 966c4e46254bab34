"""`vsrkit bench -m` sweep on Vid4 calendar, checked against an independent PSNR."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def _independent_bicubic_psnr(calendar) -> float:
    """PIL bicubic x4 of each LR frame, RGB PSNR per frame with numpy, mean over frames."""
    scores = []
    for lr_path in sorted((calendar / "LR_BDx4").glob("*.png")):
        lr = Image.open(lr_path).convert("RGB")
        up = np.asarray(lr.resize((lr.width * 4, lr.height * 4), Image.BICUBIC), dtype=np.float64)
        gt = np.asarray(Image.open(calendar / "GT" / lr_path.name).convert("RGB"), dtype=np.float64)
        scores.append(10 * np.log10(255.0**2 / np.mean((up - gt) ** 2)))
    assert len(scores) == 20
    return float(np.mean(scores))


@pytest.mark.slow
def test_bench_sweep_writes_results_and_summary(real_data, tmp_path):
    calendar = real_data / "yhjo09_VSR-DUF_Vid4/calendar"
    out = subprocess.run([sys.executable, "-m", "vsrkit.cli", "bench", "-m", "method=bicubic,lanczos",
                          "data=vid4-calendar", f"data.root={calendar}", "progress=false", "save_outputs=false"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    results = sorted(tmp_path.glob("outputs/bench/*/*/results.json"))
    assert len(results) == 2
    by_method = {r["method"]: r for r in (json.loads(p.read_text()) for p in results)}
    assert set(by_method) == {"bicubic", "lanczos"}
    assert by_method["bicubic"]["frames"] == 20 and by_method["bicubic"]["seconds_per_frame"] > 0
    assert [v["name"] for v in by_method["bicubic"]["videos"]] == ["calendar"]
    sweep = results[0].parent.parent
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert [r["method"] for r in rows] == ["bicubic", "lanczos"]
    assert {"psnr", "ssim", "ms/frame", "peak GiB"} <= set(rows[0])
    assert "| bicubic |" in (sweep / "summary.md").read_text()
    assert (sweep / "summary.png").stat().st_size > 1000
    # Our bicubic (PIL kernel, float pipeline) against PIL's own 8-bit bicubic: within 0.02 dB.
    ours = float(rows[0]["psnr"])
    assert abs(ours - _independent_bicubic_psnr(calendar)) < 0.02
    assert abs(ours - 17.19) < 0.01  # SOURCES.md's published figure for this clip


@pytest.mark.slow
def test_failing_job_is_recorded_and_the_sweep_goes_on(real_data, tmp_path):
    calendar = real_data / "yhjo09_VSR-DUF_Vid4/calendar"
    # scale=0 passes the up-front check (it looks at the first value of each sweep) and fails in its job.
    out = subprocess.run([sys.executable, "-m", "vsrkit.cli", "bench", "-m", "scale=2,0,4", "method=bicubic",
                          "data=vid4-calendar", f"data.root={calendar}", "progress=false", "save_outputs=false",
                          "max_frames=2"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "error: job `scale=0 method=bicubic" in out.stderr and "`scale` must be an integer >= 1. Got 0." in out.stderr
    assert "Traceback" not in out.stderr
    results = {json.loads(p.read_text())["scale"]: json.loads(p.read_text())
               for p in tmp_path.glob("outputs/bench/*/*/results.json")}
    assert sorted(results) == [0, 2, 4]  # the job after the failure ran
    assert results[0]["status"] == "failed" and results[0]["error"] == "`scale` must be an integer >= 1. Got 0."
    assert results[2]["status"] == results[4]["status"] == "ok"
    sweep = next(tmp_path.glob("outputs/bench/*/*/results.json")).parent.parent
    rows = {r["scale"]: r for r in csv.DictReader(open(sweep / "summary.csv"))}
    assert rows["0"]["note"] == "FAILED: `scale` must be an integer >= 1. Got 0." and rows["0"]["psnr"] == "nan"
    assert rows["4"]["note"] == "" and abs(float(rows["4"]["psnr"]) - 17.19) < 0.5  # 2 frames of SOURCES.md's clip
    assert rows["2"]["peak GiB"] == "n/a"  # no GPU: no memory figure, not 0.0000
    assert "3 job(s), 1 FAILED" in (sweep / "summary.md").read_text()
