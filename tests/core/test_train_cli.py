"""`vsrkit train` as users type it: tiny SparkVSR on the real demo clips, resume, validation."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

TINY = ["method=sparkvsr", "backbone=cogvideox1.5-5b-i2v-tiny", "data=demo", "method.train_frames=5"]


def vsrkit(*args, cwd):
    return subprocess.run([sys.executable, "-m", "vsrkit.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_train_resume_and_validation(real_data, tmp_path):
    for folder, size in (("gt", (32, 32)), ("lq", (8, 8))):
        (tmp_path / folder).mkdir()
        for i in range(3):
            frame = np.full((*size, 3), 40 * (i + 1), np.uint8)
            Image.fromarray(frame).save(tmp_path / folder / f"{i:03d}.png")
    first = vsrkit("train", *TINY, f"data.root={real_data}", "train.max_steps=2", "train.output_dir=run",
                   "validation.lq=lq", "validation.gt=gt", "train.validate_every=2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "validation step 2: psnr=" in first.stdout + first.stderr
    # SparkVSR takes keyframes: validation is conditioned on gt's frames at the release's
    # _select_indices of the 3 frames padded to 9 (4 and 8 show frame 2).
    assert "validation: keyframes from gt at frames [0, 4, 8]" in first.stdout + first.stderr
    assert (tmp_path / "run" / "export").is_dir()
    refused = vsrkit("train", *TINY, f"data.root={real_data}", "train.max_steps=4", "train.output_dir=run", cwd=tmp_path)
    assert refused.returncode == 2 and "train.resume=true" in refused.stderr
    second = vsrkit("train", *TINY, f"data.root={real_data}", "train.max_steps=4", "train.output_dir=run",
                    "train.resume=true", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Resuming from checkpoint step 2" in second.stdout + second.stderr
    assert "trained 4 steps" in second.stdout


def test_validation_needs_both_clips(tmp_path):
    out = vsrkit("train", *TINY, "train.max_steps=1", "train.output_dir=run", "validation.lq=x", cwd=tmp_path)
    assert out.returncode == 2
    assert "`validation.lq` and `validation.gt` go together" in out.stderr


def test_validation_keyframe_settings_are_checked_before_training(tmp_path):
    out = vsrkit("train", *TINY, "train.max_steps=1", "train.output_dir=run", "validation.lq=x",
                 "validation.gt=y", "validation.keyframes=manual", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: validation: `validation.keyframe_indices` must list frames for `validation.keyframes=manual`. Got []."]
