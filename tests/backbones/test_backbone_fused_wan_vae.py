"""The fused Wan VAE (``backbone.vae_kernels``) computes what diffusers' ``AutoencoderKLWan`` computes.

The Triton kernel runs on CPU through Triton's interpreter (``TRITON_INTERPRET=1``, set before
Triton is imported, hence the subprocesses); the GPU test compares bf16 outputs of the real
architecture with an fp32 run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from vsrkit.backbones import build_backbone  # noqa: E402


def run_interpreted(code: str) -> str:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_rms_norm_kernel_matches_the_reference_for_any_strides():
    out = run_interpreted("""
        import torch, torch.nn.functional as F
        import vsrkit.backbones.kernels as K
        K.RMS_BLOCK = 32
        K.RMS_TILE = 32  # 4 positions x 8 (6 channels padded): several programs, masked channels
        torch.manual_seed(0)
        worst = 0.0
        x = torch.randn(2, 6, 3, 5, 7) * 3 + 1
        gain = torch.rand(6) + 0.5
        for silu in (False, True):
            ref = F.normalize(x, dim=1) * gain.view(1, -1, 1, 1, 1)
            ref = F.silu(ref) if silu else ref
            assert K.fused_path_applies(x)
            worst = max(worst, (K.rms_norm(x, gain, silu=silu) - ref).abs().max().item())
            # Into a time-padded buffer (the causal conv's input), leaving its front frames alone.
            buf = torch.full((2, 6, 5, 5, 7), 7.0)
            K.rms_norm(x, gain, silu=silu, out=buf[:, :, 2:])
            worst = max(worst, (buf[:, :, 2:] - ref).abs().max().item())
            assert (buf[:, :, :2] == 7.0).all(), "wrote outside `out`"
            # A permuted (frames-major) input, as WanResample hands over, and a 4-D input.
            perm = x.permute(0, 2, 1, 3, 4).contiguous().permute(0, 2, 1, 3, 4)
            worst = max(worst, (K.rms_norm(perm, gain, silu=silu) - ref).abs().max().item())
            worst = max(worst, (K.rms_norm(x[:, :, 0], gain, silu=silu) - ref[:, :, 0]).abs().max().item())
            # Channels-last in and out (the fused VAE's layout), also into a time-padded buffer.
            last = x.contiguous(memory_format=torch.channels_last_3d)
            y = K.rms_norm(last, gain, silu=silu)
            assert y.is_contiguous(memory_format=torch.channels_last_3d)
            worst = max(worst, (y - ref).abs().max().item())
            buf = torch.full((2, 6, 5, 5, 7), 7.0).contiguous(memory_format=torch.channels_last_3d)
            K.rms_norm(last, gain, silu=silu, out=buf[:, :, 2:])
            worst = max(worst, (buf[:, :, 2:] - ref).abs().max().item())
            assert (buf[:, :, :2] == 7.0).all(), "wrote outside `out`"
            # ... and into the interior of a spatially padded channels-last buffer (other row strides).
            big = torch.full((2, 6, 3, 7, 9), 7.0).contiguous(memory_format=torch.channels_last_3d)
            K.rms_norm(last, gain, silu=silu, out=big[:, :, :, 1:6, 1:8])
            worst = max(worst, (big[:, :, :, 1:6, 1:8] - ref).abs().max().item())
            border = big.clone()
            border[:, :, :, 1:6, 1:8] = 7.0
            assert (border == 7.0).all(), "wrote outside `out`"
            last4 = x[:, :, 1].contiguous(memory_format=torch.channels_last)
            worst = max(worst, (K.rms_norm(last4, gain, silu=silu) - ref[:, :, 1]).abs().max().item())
            # Channels-first in, channels-last out and back: the general kernel.
            worst = max(worst, (K.rms_norm(x, gain, silu=silu, out=torch.empty_like(last)) - ref).abs().max().item())
            # A convolution's bias folded in: norm(x + bias), every kernel.
            bias = torch.randn(6)
            ref_b = F.normalize(x + bias.view(1, -1, 1, 1, 1), dim=1) * gain.view(1, -1, 1, 1, 1)
            ref_b = F.silu(ref_b) if silu else ref_b
            for inp in (x, last, perm):
                worst = max(worst, (K.rms_norm(inp, gain, silu=silu, bias=bias) - ref_b).abs().max().item())
        # y + bias + h in one pass (channels-last, in place) and the PyTorch fallback.
        K.RESIDUAL_BLOCK = 64
        y, h, bias = torch.randn(1, 6, 3, 5, 7), torch.randn(1, 6, 3, 5, 7), torch.randn(6)
        ref_r = y + bias.view(1, -1, 1, 1, 1) + h
        yl = y.contiguous(memory_format=torch.channels_last_3d)
        out = K.add_bias_residual(yl, bias, h.contiguous(memory_format=torch.channels_last_3d))
        assert out.data_ptr() == yl.data_ptr()
        worst = max(worst, (out - ref_r).abs().max().item(), (K.add_bias_residual(y.clone(), bias, h) - ref_r).abs().max().item())
        zero = torch.zeros(1, 4, 1, 2, 2)
        assert torch.equal(K.rms_norm(zero, torch.ones(4)), zero)  # the norm's lower bound: no NaN
        print(worst)
    """)
    assert float(out.strip()) < 5e-6


@pytest.mark.slow
def test_fused_wan_vae_matches_diffusers_on_cpu():
    # fp32, the tiny preset's architecture with random non-trivial weights. 9 frames: the encoder
    # runs 1 + 4 + 4 frames and the decoder three latent frames, so every causal cache is handed
    # over; the streams (InfVSR's chunked coding) go through the fused modules too.
    out = run_interpreted("""
        import copy, torch
        from diffusers import AutoencoderKLWan
        from vsrkit.backbones.presets import get_preset
        from vsrkit.backbones.wan_fused import (fuse_vae, FusedResidualBlock, FusedCausalConv3d, FusedDecoder3d,
                                                FusedEncoder3d, FusedUpsample)
        from vsrkit.backbones.wan import WanVAE
        cfg = {k: v for k, v in get_preset("wan2.1-t2v-1.3b-tiny").vae.items() if not k.startswith("_")}
        torch.manual_seed(0)
        vae = AutoencoderKLWan(**cfg).eval()
        for p in vae.parameters():
            p.data.normal_(0, 0.2 if p.dim() > 1 else 0.5)
        fast = copy.deepcopy(vae)
        switched = fuse_vae(fast)
        kinds = {type(m) for m in fast.modules()}
        assert {FusedResidualBlock, FusedCausalConv3d, FusedDecoder3d, FusedEncoder3d, FusedUpsample} <= kinds
        assert list(fast.state_dict()) == list(vae.state_dict())
        assert fast._cached_conv_counts == vae._cached_conv_counts
        x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
        with torch.no_grad():
            za, zb = vae.encode(x).latent_dist.mode(), fast.encode(x).latent_dist.mode()
            da, db = vae.decode(za).sample, fast.decode(za).sample
            wrapped = WanVAE(fast, torch.float32)
            enc = wrapped.encode_stream()
            zs = torch.cat([enc.push(x[:, :, :5]), enc.push(x[:, :, 5:])], 2)
            dec = wrapped.decode_stream()
            zn = wrapped.normalize(za)
            ds = torch.cat([dec.push(zn[:, :, :1]), dec.push(zn[:, :, 1:])], 2)
        rel = lambda a, b: (a - b).abs().max().item() / b.abs().max().item()
        worst = max(rel(zb, za), rel(db, da), rel(wrapped.normalize(za), zs), rel(ds, da.clamp(-1, 1)))
        # With gradients the fused modules run diffusers' forward (the Triton kernel has no
        # backward): the same values (weights now channels-last, so not bit for bit) and a gradient.
        z = za[:, :, :2].clone().requires_grad_(True)
        out = fast.decode(z).sample
        assert rel(out.detach(), vae.decode(z).sample.detach()) < 1e-5
        out.square().mean().backward()
        assert z.grad is not None and z.grad.abs().sum() > 0
        print(switched, worst)
    """)
    switched, worst = out.split()
    assert int(switched) > 20 and float(worst) < 1e-5


def test_wan_vae_kernels_switch(tiny_wan):
    from backbone_helpers import clip, tiny_config

    from vsrkit.backbones.wan_fused import FusedResidualBlock

    assert any(isinstance(m, FusedResidualBlock) for m in tiny_wan.vae.model.modules())  # auto = fused
    native = build_backbone(tiny_config("wan", vae_kernels="native"))
    assert not any(isinstance(m, FusedResidualBlock) for m in native.vae.model.modules())
    # On CPU without the interpreter the fused modules run diffusers' forward: identical outputs.
    x = clip(5, 16, 16)
    z = native.vae.encode(x)
    assert torch.equal(z, tiny_wan.vae.encode(x))
    assert torch.equal(native.vae.decode(z), tiny_wan.vae.decode(z))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fused_wan_vae_on_gpu_is_as_close_to_fp32_as_diffusers_bf16():
    # The real Wan2.1 VAE architecture (random weights), 17 frames at 256x192: against an fp32 run of
    # diffusers' modules, the fused bf16 path must be at least as close as diffusers' own bf16 path.
    import copy
    import time

    from diffusers import AutoencoderKLWan

    from vsrkit.backbones.presets import get_preset
    from vsrkit.backbones.wan_fused import fuse_vae

    cfg = {k: v for k, v in get_preset("wan2.1-t2v-1.3b").vae.items() if not k.startswith("_")}
    torch.manual_seed(0)
    reference = AutoencoderKLWan(**cfg).to("cuda").eval()
    native = copy.deepcopy(reference).to(torch.bfloat16)
    fused = copy.deepcopy(native)
    assert fuse_vae(fused) > 0
    x = torch.rand(1, 3, 17, 192, 256, device="cuda") * 2 - 1

    def rel_rms(value, ref):
        return ((value.float() - ref).pow(2).mean() / ref.pow(2).mean()).sqrt().item()

    with torch.no_grad():
        z_ref = reference.encode(x).latent_dist.mode()
        errors = {"encode": [rel_rms(m.encode(x.bfloat16()).latent_dist.mode(), z_ref) for m in (native, fused)]}
        d_ref = reference.decode(z_ref).sample
        errors["decode"] = [rel_rms(m.decode(z_ref.bfloat16()).sample, d_ref) for m in (native, fused)]
        seconds = {}
        for name, m in (("native", native), ("fused", fused)):
            m.decode(z_ref.bfloat16())
            torch.cuda.synchronize()
            start = time.perf_counter()
            m.decode(z_ref.bfloat16())
            torch.cuda.synchronize()
            seconds[name] = time.perf_counter() - start
    print(errors, seconds)
    for part, (native_err, fused_err) in errors.items():
        assert fused_err <= 1.1 * native_err + 1e-3, (part, native_err, fused_err)
