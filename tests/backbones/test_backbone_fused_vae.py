"""Fused GroupNorm kernels and the fused CogVideoX VAE compute what diffusers' modules compute.

The Triton kernels run on CPU through Triton's interpreter (``TRITON_INTERPRET=1``, set before
Triton is imported, hence the subprocesses); the GPU test compares bf16 outputs at real width.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from vsrkit.backbones import BackboneConfig, build_backbone  # noqa: E402
from vsrkit.backbones.kernels import nearest_index  # noqa: E402


def run_interpreted(code: str) -> str:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_group_norm_kernels_match_reference():
    # Small blocks make every path run: several splits per row, masked tails, time-padded `out`,
    # full-size and low-resolution (index-mapped) modulation. Offset data tests the variance.
    out = run_interpreted("""
        import torch, torch.nn.functional as F
        import vsrkit.backbones.kernels as K
        K.STATS_BLOCK, K.APPLY_BLOCK = 16, 32
        torch.manual_seed(0)
        worst = 0.0
        for shape, groups in [((2, 8, 3, 5, 7), 4), ((1, 4, 5, 7), 2), ((1, 8, 9, 6, 4), 2)]:
            x = torch.randn(shape) * 3 + 50
            w, b = torch.randn(shape[1]), torch.randn(shape[1])
            s, t = torch.randn(shape), torch.randn(shape)
            assert K.fused_path_applies(x)
            for kw in [{}, dict(silu=True), dict(scale=s, shift=t, silu=True)]:
                y = K.group_norm(x, groups, w, b, 1e-6, **kw)
                r = F.group_norm(x, groups, w, b, 1e-6)
                if "scale" in kw:
                    r = r * s + t
                if kw.get("silu"):
                    r = F.silu(r)
                worst = max(worst, (y - r).abs().max().item())
            if len(shape) == 5:
                zs, zt = torch.randn(shape[0], shape[1], 3, 2, 3), torch.randn(shape[0], shape[1], 3, 2, 3)
                index = tuple(K.nearest_index(i, o) for i, o in zip(zs.shape[2:], shape[2:]))
                buf = torch.full((shape[0], shape[1], shape[2] + 2, *shape[3:]), 7.0)
                K.group_norm(x, groups, w, b, 1e-6, scale=zs, shift=zt, index=index, out=buf[:, :, 2:])
                r = F.group_norm(x, groups, w, b, 1e-6) * F.interpolate(zs, size=shape[2:]) \\
                    + F.interpolate(zt, size=shape[2:])
                worst = max(worst, (buf[:, :, 2:] - r).abs().max().item())
                assert (buf[:, :, :2] == 7.0).all(), "wrote outside `out`"
        print(worst)
    """)
    assert float(out.strip()) < 5e-5


@pytest.mark.slow
def test_fused_vae_matches_diffusers_on_cpu():
    # fp32, tiny preset with random non-trivial weights. 17 frames = two encoder frame batches and
    # three decoder ones, so the conv_cache hand-over and the odd-frame SpatialNorm rule both run.
    out = run_interpreted("""
        import copy, torch
        from diffusers import AutoencoderKLCogVideoX
        from vsrkit.backbones.presets import get_preset
        from vsrkit.backbones.cogvideox_fused import fuse_vae, FusedResnetBlock3D
        cfg = {k: v for k, v in get_preset("cogvideox1.5-5b-i2v-tiny").vae.items() if not k.startswith("_")}
        torch.manual_seed(0)
        vae = AutoencoderKLCogVideoX(**cfg).eval()
        for p in vae.parameters():
            p.data.normal_(0, 0.2 if p.dim() > 1 else 0.5)
        fast = copy.deepcopy(vae)
        switched = fuse_vae(fast)
        assert switched > 0 and any(isinstance(m, FusedResnetBlock3D) for m in fast.modules())
        assert list(fast.state_dict()) == list(vae.state_dict())
        x = torch.rand(1, 3, 17, 16, 16) * 2 - 1
        with torch.no_grad():
            za, zb = vae.encode(x).latent_dist.mode(), fast.encode(x).latent_dist.mode()
            da, db = vae.decode(za).sample, fast.decode(za).sample
        worst = max((za - zb).abs().max().item() / za.abs().max().item(),
                    (da - db).abs().max().item() / da.abs().max().item())
        # With gradients the fused blocks run diffusers' forward: bit-identical.
        z = za[:, :, :2].clone().requires_grad_(True)
        assert torch.equal(vae.decode(z).sample, fast.decode(z).sample)
        print(worst)
    """)
    assert float(out.strip()) < 1e-5


def test_spatial_norm_index_follows_diffusers_interpolation():
    from vsrkit.backbones.cogvideox_fused import spatial_norm_index

    # Gathering a coordinate-valued zq through the maps must reproduce the interpolation that
    # CogVideoXSpatialNorm3D.forward applies (first frame apart when the frame count is odd).
    for z_size, f_size in [((3, 4, 5), (9, 32, 40)), ((2, 4, 5), (8, 16, 20)), ((2, 3, 3), (4, 7, 9)),
                           ((1, 2, 2), (1, 16, 16)), ((3, 5, 7), (5, 13, 21))]:
        zq = torch.arange(float(torch.Size(z_size).numel())).view(1, 1, *z_size)
        f = torch.zeros(1, 1, *f_size)
        if f.shape[2] > 1 and f.shape[2] % 2 == 1:
            expected = torch.cat([torch.nn.functional.interpolate(zq[:, :, :1], size=(1, *f_size[1:])),
                                  torch.nn.functional.interpolate(zq[:, :, 1:], size=(f_size[0] - 1, *f_size[1:]))], 2)
        else:
            expected = torch.nn.functional.interpolate(zq, size=f_size)
        it, ih, iw = spatial_norm_index(z_size, f_size)
        gathered = zq[:, :, it][:, :, :, ih][:, :, :, :, iw]
        assert torch.equal(gathered, expected), (z_size, f_size)
    assert nearest_index(3, 7).tolist() == [0, 0, 0, 1, 1, 2, 2]


def test_vae_kernels_switch(tiny_cogvideox):
    from vsrkit.backbones.cogvideox_fused import FusedResnetBlock3D

    assert any(isinstance(m, FusedResnetBlock3D) for m in tiny_cogvideox.vae.model.modules())
    from backbone_helpers import tiny_config

    native = build_backbone(tiny_config("cogvideox", vae_kernels="native"))
    assert not any(isinstance(m, FusedResnetBlock3D) for m in native.vae.model.modules())
    # On CPU without the interpreter the fused modules run diffusers' forward: identical outputs.
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    assert torch.equal(native.vae.encode(x), tiny_cogvideox.vae.encode(x))


def test_vae_kernels_fused_is_cogvideox_and_wan_only():
    with pytest.raises(ValueError, match="CogVideoX and Wan VAEs only"):
        BackboneConfig(preset="ltx-video-2b-tiny", family="ltx", vae_kernels="fused")
    BackboneConfig(preset="wan2.1-t2v-1.3b-tiny", family="wan", vae_kernels="fused")
    with pytest.raises(ValueError, match="vae_kernels"):
        BackboneConfig(vae_kernels="triton")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fused_vae_on_gpu_is_as_close_to_fp32_as_diffusers_bf16():
    # The real CogVideoX1.5 VAE architecture (random weights): against an fp32 run of diffusers'
    # modules, the fused bf16 path must be at least as close as diffusers' own bf16 path (it
    # rounds once where the modules round after each op).
    import copy

    from diffusers import AutoencoderKLCogVideoX

    from vsrkit.backbones.cogvideox_fused import fuse_vae
    from vsrkit.backbones.presets import get_preset

    cfg = {k: v for k, v in get_preset("cogvideox1.5-5b-i2v").vae.items() if not k.startswith("_")}
    torch.manual_seed(0)
    reference = AutoencoderKLCogVideoX(**cfg).to("cuda").eval()
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
    print(errors)
    for part, (native_err, fused_err) in errors.items():
        assert fused_err <= 1.1 * native_err + 1e-3, (part, native_err, fused_err)


def test_first_launch_failure_falls_back_to_reference():
    # A Triton toolchain problem (e.g. no C compiler) on the first launch must not end the run:
    # the process warns once and computes the same function with PyTorch.
    out = run_interpreted("""
        import torch, torch.nn.functional as F
        import vsrkit.backbones.kernels as K
        def broken(*args, **kwargs):
            raise RuntimeError("Failed to find C compiler")
        K._triton_group_norm = broken
        x = torch.randn(1, 4, 3, 5, 5)
        y = K.group_norm(x, 2, None, None, 1e-6, silu=True)
        assert torch.allclose(y, F.silu(F.group_norm(x, 2, eps=1e-6)))
        assert not K.triton_available() and not K.fused_path_applies(x)
        print("ok")
    """)
    assert out.strip() == "ok"
