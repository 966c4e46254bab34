"""`accelerate launch --num_processes N` without `--multi_gpu`: vsrkit starts the N processes itself.

On a machine with fewer GPUs than N and no accelerate config file, accelerate's simple launcher
starts one process (it only sets MASTER_ADDR); vsrkit reads N from the launcher's command line.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from launch_helpers import decode, env, run

from vsrkit.engine.distributed import requested_processes


@pytest.mark.parametrize("cmdline, expected", [
    (["python", "-m", "accelerate.commands.launch", "--num_processes", "2", "-m", "vsrkit.cli", "infer"], 2),
    (["accelerate", "launch", "--num-processes=3", "-m", "vsrkit.cli"], 3),
    (["accelerate", "launch", "-m", "vsrkit.cli", "infer"], 1),          # not given: one process
    (["bash", "run.sh", "--num_processes", "4"], 1),                      # not an accelerate launch
    (["accelerate", "launch", "--num_processes", "x"], 1),
])
def test_requested_processes_reads_the_launch_command(cmdline, expected):
    assert requested_processes(cmdline) == expected


@pytest.mark.slow
def test_plain_accelerate_launch_on_cpu_splits_the_clip(real_data, tmp_path):
    clip = real_data / "sczhou_Upscale-A-Video" / "old_animation_1.mp4"
    common = ["method=bicubic", "scale=2", f"input={clip}", "io.codec=ffv1", "max_frames=36",
              "engine.window=16", "engine.overlap=4"]
    one = run([sys.executable, "-m", "vsrkit.cli", "infer", *common, f"output={tmp_path / 'one.mkv'}"], tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    # As users (and the README) type it: no --multi_gpu, no config file.
    two = run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "-m", "vsrkit.cli", "infer",
               *common, f"output={tmp_path / 'two.mkv'}"], tmp_path, ACCELERATE_USE_CPU="true")
    log = two.stdout + two.stderr
    assert two.returncode == 0, log[-3000:]
    assert "vsrkit starts the 2 processes itself" in log
    assert "segment 1 on process 1" in log
    a, b = decode(tmp_path / "one.mkv")[0], decode(tmp_path / "two.mkv")[0]
    assert a.shape == b.shape == (36, 480, 640, 3) and np.array_equal(a, b)
