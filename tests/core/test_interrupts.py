"""Ctrl-C and SIGTERM: one line, the usual status (130 / 143), no partial output left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import pytest


def _start(*args, cwd=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vsrkit.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)


def _wait_for(condition, proc, seconds=90):
    deadline = time.monotonic() + seconds
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"ended early: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("signum,status,line", [
    (signal.SIGINT, 130, "error: interrupted (Ctrl-C); partial outputs were removed, finished ones kept."),
    (signal.SIGTERM, 143, "error: stopped by SIGTERM; partial outputs were removed, finished ones kept."),
])
def test_infer_interrupted_cleans_up_and_says_so(real_data, tmp_path, signum, status, line):
    out = tmp_path / "out"
    out.mkdir()
    proc = _start("infer", "method=bicubic", "scale=2", "engine.window=4", f"input={real_data / 'xinntao_Real-ESRGAN/onepiece_demo.mp4'}",
                  f"output={out / 'o.mp4'}")
    _wait_for(lambda: any(".partial-" in p.name for p in out.iterdir()), proc)
    time.sleep(0.5)  # inside the first windows
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, stderr[-2000:]
    lines = [text for text in stderr.splitlines() if text.strip()]
    assert lines[-1] == line and "Traceback" not in stderr and "%|" not in stderr, stderr[-2000:]
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_train_stopped_by_sigterm_saves_and_exits_non_zero(real_data, tmp_path):
    proc = _start("train", "method=sparkvsr", "backbone=cogvideox1.5-5b-i2v-tiny", "data=demo", "method.train_frames=5",
                  f"data.root={real_data}", "train.max_steps=1000", "train.output_dir=run", "train.checkpoint_every=1",
                  cwd=tmp_path)
    checkpoints = tmp_path / "run" / "checkpoints"
    _wait_for(lambda: checkpoints.is_dir() and any(p.name.startswith("step-") for p in checkpoints.iterdir()), proc,
              seconds=180)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert "stopped by SIGTERM after step" in stdout and "resume with train.resume=true" in stdout
    assert not (tmp_path / "run" / "export").exists()
