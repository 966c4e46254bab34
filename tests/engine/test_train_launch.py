"""Training in real processes: two-process DDP through `accelerate launch`, and SIGTERM mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from vsrkit.engine import checkpoint as ckpt

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TOY = HERE / "train_toy.py"


def _env() -> dict:
    env = dict(os.environ)
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_accelerate_launch_two_processes_ddp(tmp_path):
    """`accelerate launch` with 2 CPU processes: DDP over gloo, gradients all-reduced, ranks agree.

    accelerate 1.x's ``--cpu`` flag sends several processes through mpirun only (with a hostfile);
    on one machine two CPU processes come from the torchrun launcher of the DDP preset with
    ``ACCELERATE_USE_CPU=true``, which is what this runs.
    """
    out = tmp_path / "run"
    env = _env()
    env["ACCELERATE_USE_CPU"] = "true"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "conf/accelerate/ddp.yaml"),
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--main_process_port", str(_free_port()),
           str(TOY), "--out", str(out), "--max-steps", "2", "--checkpoint-every", "1", "--steps-file",
           str(tmp_path / "steps"), "--dump-params", "--samples", "16"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "on 2 process(es) (DistributedType.MULTI_CPU" in log
    # each rank read its own, disjoint samples ...
    seen = {}
    for rank in (0, 1):
        lines = (tmp_path / f"steps.rank{rank}").read_text().split()
        seen[rank] = {int(i) for token in lines[2::3] for i in token.split(",")}
    assert len(seen[0]) == len(seen[1]) == 4 and not seen[0] & seen[1]
    # ... yet both hold the same weights: the gradients were all-reduced
    p0, p1 = (torch.load(out / f"params-rank{r}.pt", weights_only=True) for r in (0, 1))
    assert p0.keys() == p1.keys() and all(torch.equal(p0[k], p1[k]) for k in p0)
    directory = ckpt.latest_checkpoint(out)
    meta = ckpt.read_meta(directory)
    assert meta["step"] == 2 and meta["world_size"] == 2
    assert sorted(p.name for p in (directory / "rng").iterdir()) == ["rank-00000.pt", "rank-00001.pt"]
    saved = ckpt.load_tensors(directory / "model.safetensors")
    assert sorted(saved) == sorted(p0) and not any(k.startswith("module.") for k in saved)
    assert all(torch.equal(saved[k], p0[k]) for k in saved)
    assert (out / "export" / "toy.safetensors").is_file()


def test_sigterm_saves_and_resume_loses_no_step(tmp_path):
    out, steps = tmp_path / "run", tmp_path / "steps"
    cmd = [sys.executable, str(TOY), "--out", str(out), "--max-steps", "1000", "--checkpoint-every", "4",
           "--sleep", "0.15", "--steps-file", str(steps)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    started = lambda: len(steps.with_name("steps.rank0").read_text().splitlines()) if steps.with_name("steps.rank0").exists() else 0  # noqa: E731
    while started() < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started() >= 6, "training did not start in time"
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, log[-4000:]

    done = started()  # every step that started was finished before saving
    latest = ckpt.latest_checkpoint(out)
    assert latest is not None
    saved_step = ckpt.read_meta(latest)["step"]
    assert saved_step == done >= 6
    assert f"Stopped by SIGTERM after step {saved_step}" in log
    assert not (out / "export").exists()

    resume = [sys.executable, str(TOY), "--out", str(out), "--max-steps", str(saved_step + 2), "--resume",
              "--steps-file", str(steps)]
    again = subprocess.run(resume, env=_env(), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert f"Resuming from checkpoint step {saved_step} (" in again.stdout
    steps_run = [int(line.split()[0]) for line in steps.with_name("steps.rank0").read_text().splitlines()]
    assert steps_run == list(range(saved_step)) + [saved_step, saved_step + 1]  # nothing repeated, nothing lost
    assert (out / "export" / "toy.safetensors").is_file()
