"""TurboVSR on a CUDA device (never in CI): bf16, regional compile and pinned attention kernels run
through the method's own transformer loop and agree with the eager path.

    python -m pytest -q -m gpu tests/methods/turbovsr/test_turbovsr_gpu.py
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vsrkit.backbones import BackboneConfig
from vsrkit.methods.protocol import WindowContext
from vsrkit.methods.turbovsr.config import TurboVSRConfig
from vsrkit.methods.turbovsr.method import TurboVSRMethod

pytestmark = pytest.mark.gpu

TINY = BackboneConfig(preset="ltx-video-2b-tiny", family="ltx", dtype="bf16")


def _run(backbone: BackboneConfig, lq: torch.Tensor, **options) -> torch.Tensor:
    method = TurboVSRMethod(TurboVSRConfig(**options), backbone=backbone, scale=4)
    method.load(torch.device("cuda"))
    context = WindowContext(frame_start=0, num_valid=lq.shape[2],
                            generator=torch.Generator(device="cuda").manual_seed(1))
    return method.upscale(lq.cuda(), context)


@pytest.fixture(scope="module")
def lq():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.rand(1, 3, 17, 32, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_regional_compile_matches_eager(lq):
    eager = _run(TINY, lq)
    compiled = _run(dataclasses.replace(TINY, compile="regional"), lq)
    assert eager.shape == (1, 3, 17, 128, 256)
    assert (compiled - eager).abs().mean() < 2e-2


@pytest.mark.parametrize("kernel", ["cudnn", "efficient"])  # flash takes no mask (the text mask)
def test_pinned_attention_kernels_run_the_masked_cross_attention(lq, kernel):
    eager = _run(TINY, lq)
    pinned = _run(dataclasses.replace(TINY, attention=kernel), lq)
    assert (pinned - eager).abs().mean() < 2e-2


def test_tiles_and_segments_on_the_device(lq):
    out = _run(TINY, lq, tile=64, tile_overlap=32, segment=17, segment_overlap=9)
    assert out.shape == (1, 3, 17, 128, 256) and torch.isfinite(out).all()
