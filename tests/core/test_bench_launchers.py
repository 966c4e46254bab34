"""`vsrkit bench -m` through Hydra's joblib launcher (local processes) and submitit's local
executor (what SLURM runs, on this machine); a failed job is recorded and the sweep goes on."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def _bicubic_psnr_first_frames(calendar, n: int) -> float:
    """PIL bicubic x4 of the first ``n`` LR frames, RGB PSNR per frame (numpy), mean."""
    scores = []
    for lr_path in sorted((calendar / "LR_BDx4").glob("*.png"))[:n]:
        lr = Image.open(lr_path).convert("RGB")
        up = np.asarray(lr.resize((lr.width * 4, lr.height * 4), Image.BICUBIC), dtype=np.float64)
        gt = np.asarray(Image.open(calendar / "GT" / lr_path.name).convert("RGB"), dtype=np.float64)
        scores.append(10 * np.log10(255.0**2 / np.mean((up - gt) ** 2)))
    assert len(scores) == n
    return float(np.mean(scores))


def _bench(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "vsrkit.cli", "bench", "-m", "max_frames=2", "progress=false",
                           "save_outputs=false", *args], capture_output=True, text=True, cwd=tmp_path, timeout=900)


def _results(tmp_path):
    files = sorted(tmp_path.glob("outputs/bench/*/*/results.json"))
    return files[0].parent.parent if files else None, [json.loads(f.read_text()) for f in files]


def test_joblib_sweep_records_a_failed_job_and_finishes_the_others(real_data, tmp_path):
    calendar = real_data / "yhjo09_VSR-DUF_Vid4/calendar"
    missing = tmp_path / "no-such-dataset"
    out = _bench(tmp_path, "method=bicubic,lanczos", "data=vid4-calendar", f"data.root={calendar},{missing}",
                 "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert out.returncode == 1, (out.stdout + out.stderr)[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in out.stdout + out.stderr  # the jobs ran in joblib's worker processes
    assert "error: 2 of 4 bench jobs failed" in out.stderr and str(missing) in out.stderr
    sweep, results = _results(tmp_path)
    assert len(results) == 4
    failed = [r for r in results if r["status"] == "failed"]
    done = {r["method"]: r for r in results if r["status"] == "ok"}
    assert sorted(r["method"] for r in failed) == ["bicubic", "lanczos"]
    assert all(str(missing) in r["error"] for r in failed)
    assert set(done) == {"bicubic", "lanczos"} and done["bicubic"]["frames"] == 2
    assert abs(done["bicubic"]["scores"]["psnr"] - _bicubic_psnr_first_frames(calendar, 2)) < 0.02
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert len(rows) == 4
    assert sorted(r["note"].startswith("FAILED: ") for r in rows) == [False, False, True, True]
    assert "4 job(s), 2 FAILED (see the note column)" in (sweep / "summary.md").read_text()


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                    reason="hydra-submitit-launcher (the `slurm` extra) is not installed")
def test_submitit_local_executor_runs_each_job_in_its_own_process(real_data, tmp_path):
    calendar = real_data / "yhjo09_VSR-DUF_Vid4/calendar"
    out = _bench(tmp_path, "method=bicubic,lanczos", "data=vid4-calendar", f"data.root={calendar}",
                 "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    sweep, results = _results(tmp_path)
    assert sorted(r["method"] for r in results) == ["bicubic", "lanczos"]
    assert all(r["status"] == "ok" and r["frames"] == 2 for r in results)
    assert len({r["pid"] for r in results}) == 2  # one submitit job process each
    by_method = {r["method"]: r for r in results}
    assert abs(by_method["bicubic"]["scores"]["psnr"] - _bicubic_psnr_first_frames(calendar, 2)) < 0.02
    assert len(list(sweep.glob(".submitit/*/*_log.out"))) == 2  # submitit's per-job logs
    assert [r["method"] for r in csv.DictReader(open(sweep / "summary.csv"))] == ["bicubic", "lanczos"]
