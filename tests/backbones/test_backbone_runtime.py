"""Runtime switches and model building helpers (CPU-checkable parts)."""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import clip, tiny_config

from vsrkit.backbones import build_backbone, runtime
from vsrkit.errors import UserError


def test_deterministic_values_are_golden():
    # Integer hashing only: these numbers must not change with torch versions or platforms.
    # Regenerate (only after an intended change of the hash) by printing the same call.
    values = runtime.deterministic_values((2, 4), "blocks.0.attn1.to_q.weight", seed=0).flatten().tolist()
    expected = [0.09739236533641815, 0.30653613805770874, -0.2688623070716858, 0.38626953959465027,
                -1.0511925220489502, -0.8799726963043213, -1.1187281608581543, -0.31354233622550964]
    assert values == pytest.approx(expected, abs=1e-7)
    big = runtime.deterministic_values((100_000,), "x", seed=1)
    assert abs(big.mean().item()) < 0.01 and big.std().item() == pytest.approx(1.0, abs=0.01)


def test_deterministic_init_depends_on_seed_only():
    a = build_backbone(tiny_config("wan", seed=1)).transformer.state_dict()
    b = build_backbone(tiny_config("wan", seed=1)).transformer.state_dict()
    c = build_backbone(tiny_config("wan", seed=2)).transformer.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.attn1.to_q.weight"], c["blocks.0.attn1.to_q.weight"])
    w = a["blocks.0.ffn.net.0.proj.weight"]  # (32, 24): std 1/sqrt(24)
    assert w.std().item() == pytest.approx(24 ** -0.5, rel=0.2)


def test_bf16_keeps_the_models_fp32_modules():
    bb = build_backbone(tiny_config("wan", dtype="bf16"))
    sd = dict(bb.transformer.named_parameters())
    assert sd["blocks.0.attn1.to_q.weight"].dtype == torch.bfloat16
    assert sd["blocks.0.norm2.weight"].dtype == torch.float32  # `_keep_in_fp32_modules` (norm2)
    assert sd["scale_shift_table"].dtype == torch.float32
    assert bb.vae.model.encoder.conv_in.weight.dtype == torch.bfloat16
    z = bb.vae.encode(clip(5, 16, 16))
    assert torch.isfinite(bb.predict(z, 400.0, bb.prompt_embeds(""))).all()


def test_vae_dtype_can_differ():
    bb = build_backbone(tiny_config("cogvideox", dtype="bf16", vae_dtype="fp32"))
    assert bb.transformer.patch_embed.proj.weight.dtype == torch.bfloat16
    assert bb.vae.model.encoder.conv_in.conv.weight.dtype == torch.float32


@pytest.mark.parametrize("family", ["cogvideox", "wan", "ltx"])
def test_math_kernel_matches_auto_and_restriction_is_enforced(family, request):
    auto = request.getfixturevalue(f"tiny_{family}")
    bb = build_backbone(tiny_config(family, attention="math"))
    assert "MATH" in bb.attention
    video = clip(9, 64, 64)
    z = auto.vae.encode(video)
    emb = auto.prompt_embeds("") if family != "ltx" else auto.prompt_embeds("")[0]
    if family == "cogvideox":
        z = torch.cat([z, z], 1)[:, :, :2]
    torch.testing.assert_close(bb.predict(z, 300, emb), auto.predict(z, 300, emb), rtol=1e-4, atol=1e-5)
    # The efficient-attention kernel does not exist on CPU: a forced choice fails instead of falling back.
    forced = build_backbone(tiny_config(family, attention="efficient"))
    with pytest.raises(RuntimeError):
        forced.predict(z, 300, emb)
    # The restriction only lives inside the model's forward.
    q = torch.randn(1, 2, 4, 8)
    torch.nn.functional.scaled_dot_product_attention(q, q, q)


def test_dispatch_backend_refused_where_the_processor_cannot_use_it():
    with pytest.raises(UserError, match="attention=flash-attn` is not supported by CogVideoXTransformer3DModel"):
        build_backbone(tiny_config("cogvideox", attention="flash-attn"))
    assert "PyTorch SDPA" in build_backbone(tiny_config("cogvideox", attention="native")).attention


def test_unavailable_dispatch_backend_is_a_user_error():
    try:
        import sageattention  # noqa: F401
        pytest.skip("sageattention is installed")
    except ImportError:
        pass
    with pytest.raises(UserError, match="attention=sage"):
        build_backbone(tiny_config("wan", attention="sage"))


def test_native_dispatch_backend_runs(tiny_wan):
    bb = build_backbone(tiny_config("wan", attention="native"))
    assert "native" in bb.attention
    z = tiny_wan.vae.encode(clip(5, 16, 16))
    torch.testing.assert_close(bb.predict(z, 400.0, bb.prompt_embeds("")),
                               tiny_wan.predict(z, 400.0, tiny_wan.prompt_embeds("")), rtol=1e-5, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for flag in (False, True):
        bb = build_backbone(tiny_config("wan", gradient_checkpointing=flag))
        assert bb.transformer.is_gradient_checkpointing is flag
        bb.transformer.train().requires_grad_(True)
        z = torch.linspace(-1, 1, 16 * 2 * 4 * 4).reshape(1, 16, 2, 4, 4)
        bb.predict(z, 500.0, bb.prompt_embeds("")).square().mean().backward()
        grads.append(bb.transformer.blocks[0].attn1.to_q.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_regional_compile_wraps_each_block(tiny_ltx):
    bb = build_backbone(tiny_config("ltx"))
    count = runtime.apply_compile(bb.transformer, "regional", backend="eager")
    assert count == 2
    assert all(block._compiled_call_impl is not None for block in bb.transformer.transformer_blocks)
    z = tiny_ltx.vae.encode(clip(9, 64, 64))
    emb, mask = tiny_ltx.prompt_embeds("")
    torch.testing.assert_close(bb.predict(z, 500.0, emb, mask), tiny_ltx.predict(z, 500.0, emb, mask))


def test_regional_compile_knows_cogvideox_blocks(tiny_cogvideox):
    bb = build_backbone(tiny_config("cogvideox"))
    assert runtime.apply_compile(bb.transformer, "regional", backend="eager") == 2  # diffusers declares none


@pytest.mark.parametrize("mode", ["model", "sequential", "group"])
def test_cpu_offload_needs_cuda(mode):
    with pytest.raises(UserError, match=f"cpu_offload={mode}` needs a CUDA device"):
        build_backbone(tiny_config("wan", cpu_offload=mode))


def test_vae_tiling_and_slicing_from_config():
    bb = build_backbone(tiny_config("wan", vae_tiling=True, vae_tile_size=64, vae_tile_overlap=16, vae_slicing=True))
    assert bb.vae.model.use_tiling and bb.vae.model.use_slicing
    assert (bb.vae.model.tile_sample_min_height, bb.vae.model.tile_sample_stride_height) == (64, 48)
