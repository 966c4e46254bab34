"""TurboVSR's modules on the tiny LTX transformer: the forward loop against diffusers' own forward,
cross normalisation, where the condition enters, and the step-size embedding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vsrkit.backbones import BackboneConfig, build_backbone
from vsrkit.backbones.runtime import deterministic_init_
from vsrkit.methods.turbovsr.model import (
    CrossNormalization,
    StepSizeEmbedding,
    TurboVSRAdapter,
    TurboVSRTransformer,
    pack_latents,
)

TINY = BackboneConfig(preset="ltx-video-2b-tiny", family="ltx", dtype="fp32")
ROPE = (8 / 25, 32, 32)


@pytest.fixture(scope="module")
def backbone():
    return build_backbone(TINY, "cpu", torch.float32)


def _model(backbone, cond_block=0, merge="sqrt2", zero_step=True):
    tr = backbone.transformer
    dim = tr.config.num_attention_heads * tr.config.attention_head_dim
    adapter = TurboVSRAdapter(tr.config.in_channels, dim)
    deterministic_init_(adapter, seed=5)
    if zero_step:
        with torch.no_grad():
            adapter.step_embed.embedder.linear_2.weight.zero_()
            adapter.step_embed.embedder.linear_2.bias.zero_()
    return TurboVSRTransformer(tr, adapter, CrossNormalization(1.0, merge), cond_block).eval()


def _inputs(backbone, b=2, f=3, h=2, w=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = backbone.transformer.config.in_channels
    x = torch.randn(b, c, f, h, w, generator=g)
    lr = torch.randn(b, c, f, h, w, generator=g) * 3 + 1
    embeds, mask = backbone.prompt_embeds("a prompt")
    mask = mask.clone()
    mask[:, -2:] = 0  # some padding, so the mask path is exercised
    return x, lr, embeds, mask


def _stock(backbone, x, timestep, embeds, mask):
    """diffusers' LTXVideoTransformer3DModel.forward on packed tokens."""
    b, c, f, h, w = x.shape
    out = backbone.transformer(hidden_states=pack_latents(x), encoder_hidden_states=embeds.expand(b, -1, -1),
                               timestep=timestep, encoder_attention_mask=mask.expand(b, -1), num_frames=f, height=h,
                               width=w, rope_interpolation_scale=ROPE, return_dict=False)[0]
    return out.transpose(1, 2).reshape(b, c, f, h, w)


@torch.no_grad()
def test_plain_forward_is_diffusers_forward_bit_exactly(backbone):
    model = _model(backbone)
    x, _, embeds, mask = _inputs(backbone)
    sigma = torch.tensor([0.9, 0.3])
    ours = model(x, sigma, embeds, mask, rope_scale=ROPE)
    assert torch.equal(ours, _stock(backbone, x, sigma * 1000, embeds, mask))


@torch.no_grad()
def test_clean_first_frame_is_per_token_timestep_zero(backbone):
    model = _model(backbone)
    x, _, embeds, mask = _inputs(backbone)
    b, _, f, h, w = x.shape
    sigma = torch.tensor([0.75, 0.5])
    first_clean = torch.tensor([True, False])
    ours = model(x, sigma, embeds, mask, first_clean=first_clean, rope_scale=ROPE)
    per_token = (sigma * 1000)[:, None].repeat(1, f * h * w)
    per_token[0, : h * w] = 0.0  # sample 0: latent frame 0 is clean
    stock = _stock(backbone, x, per_token, embeds, mask)
    assert torch.allclose(ours, stock, atol=1e-5)
    plain = _stock(backbone, x, sigma * 1000, embeds, mask)
    assert not torch.allclose(ours[0], plain[0], atol=1e-4)
    assert torch.allclose(ours[1], plain[1], atol=1e-5)


def test_cross_normalised_condition_has_the_hidden_states_mean_and_variance():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(3, 40, 16, generator=g) * 0.7 + 0.2
    hidden[1] = hidden[1] * 5 - 3  # per-sample statistics differ
    cond = torch.randn(3, 40, 16, generator=g) * 11 + 4
    normed = CrossNormalization().normalize(cond, hidden).numpy().reshape(3, -1)
    h = hidden.numpy().reshape(3, -1).astype(np.float64)
    assert np.allclose(normed.mean(axis=1), h.mean(axis=1), atol=1e-4)
    assert np.allclose(normed.var(axis=1, ddof=1), h.var(axis=1, ddof=1), rtol=1e-4)
    # The merge: (h + c~) / sqrt(2); a dropped sample passes through untouched.
    keep = torch.tensor([True, False, True])
    merged = CrossNormalization(merge="sqrt2")(hidden, cond, keep).numpy()
    c = cond.numpy().reshape(3, -1).astype(np.float64)
    expected = (h + (c - c.mean(1, keepdims=True)) / c.std(1, ddof=1, keepdims=True) * h.std(1, ddof=1, keepdims=True)
                + h.mean(1, keepdims=True)) / math.sqrt(2)
    assert np.allclose(merged.reshape(3, -1)[[0, 2]], expected[[0, 2]], atol=1e-5)
    assert np.array_equal(merged[1], hidden[1].numpy())
    plain = CrossNormalization(merge="none", scale=0.5)(hidden, cond).numpy().reshape(3, -1)
    assert np.allclose(plain, h + 0.5 * (expected * math.sqrt(2) - h), atol=1e-4)


@pytest.mark.parametrize("cond_block", [0, 1])
@torch.no_grad()
def test_condition_is_added_after_the_configured_block(backbone, cond_block):
    model = _model(backbone, cond_block=cond_block)
    x, lr, embeds, mask = _inputs(backbone)
    seen = {}
    blocks = backbone.transformer.transformer_blocks
    hooks = [blocks[i].register_forward_hook(lambda m, a, k, out, i=i: seen.__setitem__(f"out{i}", out.clone()),
                                             with_kwargs=True) for i in range(len(blocks))]
    hooks += [blocks[i].register_forward_pre_hook(
        lambda m, a, k, i=i: seen.__setitem__(f"in{i}", k["hidden_states"].clone()), with_kwargs=True)
        for i in range(len(blocks))]
    try:
        model(x, torch.tensor([0.5, 0.5]), embeds, mask, condition=lr, rope_scale=ROPE)
    finally:
        for hook in hooks:
            hook.remove()
    projected = model.adapter.cond_proj(pack_latents(lr))
    merged = model.cross_norm(seen[f"out{cond_block}"], projected)
    if cond_block + 1 < len(blocks):
        assert torch.allclose(seen[f"in{cond_block + 1}"], merged, atol=1e-6)
        assert not torch.allclose(seen[f"in{cond_block + 1}"], seen[f"out{cond_block}"], atol=1e-3)
    for i in range(cond_block):
        assert torch.equal(seen[f"in{i + 1}"], seen[f"out{i}"])  # nothing added before


def test_step_embedding_uses_the_timestep_sinusoid_of_1000_d(backbone):
    from diffusers.models.embeddings import get_timestep_embedding

    embed = StepSizeEmbedding(16)
    d = torch.tensor([1 / 128, 0.25, 1.0])
    reference = get_timestep_embedding(d * 1000, 256, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert torch.allclose(embed.proj(d * 1000), reference)
    # "copy" init: the step embedder computes exactly what LTX's timestep embedder computes.
    time_embedder = backbone.transformer.time_embed.emb.timestep_embedder
    embed = StepSizeEmbedding(time_embedder.linear_2.out_features)
    embed.embedder.load_state_dict(time_embedder.state_dict())
    with torch.no_grad():
        assert torch.allclose(embed(d, torch.float32), time_embedder(reference))


@torch.no_grad()
def test_step_size_joins_the_embedded_timestep_before_the_adaln(backbone, monkeypatch):
    model = _model(backbone, zero_step=False)
    x, _, embeds, mask = _inputs(backbone)
    sigma, d = torch.tensor([0.9, 0.4]), torch.tensor([0.25, 1 / 16])
    ours = model(x, sigma, embeds, mask, step_size=d, rope_scale=ROPE)
    # Reference: diffusers' forward with its embedded timestep shifted by the step embedding.
    emb = backbone.transformer.time_embed.emb
    original = emb.forward
    extra = model.adapter.step_embed(d, torch.float32)
    monkeypatch.setattr(emb, "forward", lambda *a, **k: original(*a, **k) + extra)
    assert torch.allclose(ours, _stock(backbone, x, sigma * 1000, embeds, mask), atol=1e-5)
    monkeypatch.undo()
    assert not torch.allclose(ours, model(x, sigma, embeds, mask, rope_scale=ROPE), atol=1e-4)
    # Zero-initialised last layer: the pretrained model is unchanged at the start of training.
    zero = _model(backbone, zero_step=True)
    assert torch.equal(zero(x, sigma, embeds, mask, step_size=d, rope_scale=ROPE),
                       zero(x, sigma, embeds, mask, rope_scale=ROPE))


def test_gradient_checkpointing_gives_the_same_gradients(backbone):
    model = _model(backbone, zero_step=False)
    x, lr, embeds, mask = _inputs(backbone)
    model.requires_grad_(True)
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            backbone.transformer.enable_gradient_checkpointing()
        model.zero_grad()
        out = model(x, torch.tensor([0.5, 0.2]), embeds, mask, step_size=torch.tensor([0.5, 0.5]), condition=lr,
                    first_clean=torch.tensor([True, True]), rope_scale=ROPE)
        out.square().mean().backward()
        grads.append(model.adapter.cond_proj.weight.grad.clone())
    backbone.transformer.disable_gradient_checkpointing()
    model.requires_grad_(False)
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
