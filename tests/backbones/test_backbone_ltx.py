"""LTX-Video wrapper on the tiny preset: normalisation, timestep-conditioned decode, framewise tiling,
token packing and forward."""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import clip


def test_tiny_vae_keeps_the_real_compression(tiny_ltx):
    assert (tiny_ltx.vae.spatial_compression, tiny_ltx.vae.temporal_compression) == (32, 8)
    z = tiny_ltx.vae.encode(clip(9, 64, 64))
    assert z.shape == (1, 8, 2, 2, 2)


def test_normalisation_uses_the_per_channel_statistics(tiny_ltx):
    vae = tiny_ltx.vae
    x = clip(9, 32, 32)
    mean = torch.linspace(-1, 1, 8)
    std = torch.linspace(0.5, 2, 8)
    old = vae.model.latents_mean.clone(), vae.model.latents_std.clone()
    vae.model.latents_mean.copy_(mean)
    vae.model.latents_std.copy_(std)
    try:
        z = vae.encode(x)
        mu = vae.model.encode(x).latent_dist.mode()
        torch.testing.assert_close(z, (mu - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1))
        torch.testing.assert_close(vae.denormalize(z), mu)
    finally:
        vae.model.latents_mean.copy_(old[0])
        vae.model.latents_std.copy_(old[1])


def test_decode_timestep_and_noise_matter(tiny_ltx):
    vae = tiny_ltx.vae
    assert (vae.decode_timestep, vae.decode_noise_scale) == (0.05, 0.025)
    z = vae.encode(clip(9, 32, 32))
    a = vae.decode(z, generator=torch.Generator().manual_seed(0))
    b = vae.decode(z, generator=torch.Generator().manual_seed(0))
    c = vae.decode(z, timestep=0.5, noise_scale=0.0)
    assert a.shape == (1, 3, 9, 32, 32)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_framewise_decode_bounds_the_frames_per_call(tiny_ltx):
    vae = tiny_ltx.vae
    z = vae.encode(clip(33, 32, 32))  # 5 latent frames
    seen = []
    hook = vae.model.decoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[2]))
    vae.enable_framewise(tile_frames=16, overlap_frames=8)
    try:
        y = vae.decode(z, noise_scale=0.0)
    finally:
        vae.disable_tiling()
        hook.remove()
    assert y.shape == (1, 3, 33, 32, 32)
    assert len(seen) > 1 and max(seen) <= 3  # 16 frames = 2 latent frames (+1 shared)


def test_framewise_rejects_bad_tiles(tiny_ltx):
    with pytest.raises(ValueError, match="multiples of 8"):
        tiny_ltx.vae.enable_framewise(tile_frames=12, overlap_frames=4)


def test_pack_matches_the_pipeline_and_round_trips(tiny_ltx):
    from diffusers import LTXPipeline

    z = torch.arange(2 * 8 * 2 * 3 * 4, dtype=torch.float32).reshape(2, 8, 2, 3, 4)
    tokens = tiny_ltx.pack(z)
    torch.testing.assert_close(tokens, LTXPipeline._pack_latents(z))
    torch.testing.assert_close(tiny_ltx.unpack(tokens, 2, 3, 4), z)


def test_predict_with_mask_and_per_token_timesteps(tiny_ltx):
    z = tiny_ltx.vae.encode(clip(9, 64, 64))
    emb, mask = tiny_ltx.prompt_embeds("")
    assert emb.shape == (1, 8, 16) and mask.shape == (1, 8)
    v = tiny_ltx.predict(z, 500.0, emb, mask)
    assert v.shape == z.shape and torch.isfinite(v).all()
    per_token = torch.full((1, 8), 500.0)
    torch.testing.assert_close(tiny_ltx.predict(z, per_token, emb, mask), v)
    per_token[0, 0] = 0.0  # a clean conditioning token (LTXConditionPipeline's trick)
    assert not torch.allclose(tiny_ltx.predict(z, per_token, emb, mask), v)
