"""PS-SR at full model size on a GPU (random weights): one window through the bf16 pipeline with
the fused and the native Wan VAE kernels. Never run in CI (``gpu`` marker)."""

from __future__ import annotations

import time

import pytest
import torch

from vsrkit.backbones import BackboneConfig
from vsrkit.methods.protocol import WindowContext
from vsrkit.methods.pssr.config import PSSRConfig
from vsrkit.methods.pssr.method import PSSRMethod

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _real(**fields) -> BackboneConfig:
    # Random weights at the real size (speed and plumbing only); issue 9's opt-in flag when present.
    if "random_weights" in BackboneConfig.__dataclass_fields__:
        fields["random_weights"] = True
    return BackboneConfig(preset="wan2.1-t2v-1.3b", family="wan", dtype="bf16", **fields)


def test_full_size_window_runs_in_bf16_with_both_vae_kernels():
    lq = torch.rand(1, 3, 17, 64, 112, generator=torch.Generator().manual_seed(0)).cuda() * 2 - 1
    outs, report = {}, {}
    for kernels in ("native", "fused"):
        method = PSSRMethod(PSSRConfig(), backbone=_real(vae_kernels=kernels), scale=4)
        method.load(torch.device("cuda"))
        assert len(method.draft.blocks) == 10 and method.kept == list(range(2, 30, 3))
        assert method.draft.fc_layers[0].weight.dtype == torch.bfloat16
        emb = torch.randn(1, 512, 4096, generator=torch.Generator().manual_seed(1)).to("cuda", torch.bfloat16)
        method._embed = lambda text: emb  # no umT5 on the GPU box: a fixed random prompt embedding
        stages = []
        context = WindowContext(generator=torch.Generator("cuda").manual_seed(0),
                                on_stage=lambda *a: (torch.cuda.synchronize(), stages.append((a[0], time.perf_counter()))))
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            method.upscale(lq, context)  # warm-up
            stages.clear()
            start = time.perf_counter()
            out = method.upscale(lq, context)
            torch.cuda.synchronize()
        report[kernels] = {"seconds": time.perf_counter() - start,
                           "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                           "stages": [name for name, _ in stages]}
        assert out.shape == (1, 3, 17, 256, 448) and out.dtype == torch.float32
        assert torch.isfinite(out).all() and out.min() >= -1 and out.max() <= 1
        outs[kernels] = out.cpu()
        del method
        torch.cuda.empty_cache()
    print(report)
    assert report["fused"]["stages"] == ["encode", "denoise", "denoise", "denoise", "denoise", "decode", "decode", "fdu"]
    mse = (outs["fused"] - outs["native"]).pow(2).mean().item()
    print("fused vs native PSNR", 10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))).item())
