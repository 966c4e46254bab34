"""Wan2.1 wrapper on the tiny preset: latent normalisation, streaming VAE, flow-match grid, forward."""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import clip

from vsrkit.backbones.presets import WAN_LATENTS_MEAN, WAN_LATENTS_STD


def test_encode_returns_per_channel_normalised_mean(tiny_wan):
    x = clip(9, 32, 32)
    z = tiny_wan.vae.encode(x)
    assert z.shape == (1, 16, 3, 4, 4)
    mu = tiny_wan.vae.model.encode(x).latent_dist.mode()
    mean = torch.tensor(WAN_LATENTS_MEAN).view(1, -1, 1, 1, 1)
    std = torch.tensor(WAN_LATENTS_STD).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(z, (mu - mean) / std)
    assert WAN_LATENTS_MEAN[0] == -0.7571 and WAN_LATENTS_STD[0] == 2.8184  # pssr.md §7.5


def test_decode_inverts_the_normalisation(tiny_wan):
    z = tiny_wan.vae.encode(clip(5, 16, 16))
    y = tiny_wan.vae.decode(z)
    assert y.shape == (1, 3, 5, 16, 16)
    mean = torch.tensor(WAN_LATENTS_MEAN).view(1, -1, 1, 1, 1)
    std = torch.tensor(WAN_LATENTS_STD).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(y, tiny_wan.vae.model.decode(z * std + mean).sample)


def test_stream_encode_and_decode_equal_whole_clip(tiny_wan):
    vae = tiny_wan.vae
    x = clip(21, 16, 16)  # InfVSR's chunks: 9 frames, then 12
    whole = vae.encode(x)
    enc = vae.encode_stream()
    parts = [enc.push(x[:, :, :9]), enc.push(x[:, :, 9:21])]
    assert [p.shape[2] for p in parts] == [3, 3]
    torch.testing.assert_close(torch.cat(parts, 2), whole, rtol=0, atol=0)

    video = vae.decode(whole)
    dec = vae.decode_stream()
    first = dec.push(whole[:, :, :3])
    cache_size = sum(c.numel() for c in dec.cache if torch.is_tensor(c))
    second = dec.push(whole[:, :, 3:])
    assert (first.shape[2], second.shape[2]) == (9, 12)
    torch.testing.assert_close(torch.cat([first, second], 2), video, rtol=0, atol=0)
    # Memory does not grow with length: the causal cache keeps the same size.
    assert sum(c.numel() for c in dec.cache if torch.is_tensor(c)) == cache_size > 0


def test_stream_rejects_misaligned_chunks(tiny_wan):
    enc = tiny_wan.vae.encode_stream()
    with pytest.raises(ValueError, match="4k\\+1 frames. Got 8"):
        enc.push(clip(8, 16, 16))


def test_flow_match_grid_matches_diffsynth_values(tiny_wan):
    # pssr.md §3.2: bf16 timesteps 700/600/500/400 -> sigma 0.69982, 0.60031, 0.50060, 0.40082.
    for t, sigma in ((699, 0.69982), (599, 0.60031), (499, 0.50060), (399, 0.40082)):
        assert tiny_wan.sigma(t, bf16_round=True) == pytest.approx(sigma, abs=5e-6)
    assert tiny_wan.sigma(399) == pytest.approx(0.3985, abs=1e-4)
    assert tiny_wan.timesteps.shape == (1000,)
    assert tiny_wan.sigmas[0] == 1.0


def test_predict_shape_and_timestep_dependence(tiny_wan):
    z = tiny_wan.vae.encode(clip(5, 16, 16))
    emb = tiny_wan.prompt_embeds("")
    assert emb.shape == (1, 8, 16)
    v1 = tiny_wan.predict(z, 400.0, emb)
    v2 = tiny_wan.predict(z, 700.0, emb)
    assert v1.shape == z.shape
    assert not torch.allclose(v1, v2)


def test_diffusers_tiling_is_switchable(tiny_wan):
    vae = tiny_wan.vae
    x = clip(5, 64, 64)
    full = vae.encode(x)
    vae.enable_tiling(tile=32, overlap=16)
    try:
        assert vae.model.use_tiling and vae.model.tile_sample_stride_height == 16
        tiled = vae.encode(x)
    finally:
        vae.disable_tiling()
    assert tiled.shape == full.shape
    assert not torch.equal(tiled, full)  # tiles see less context: close, not identical


def test_tiled_stream_blends_to_the_untiled_result_for_a_pointwise_coder():
    from vsrkit.backbones.streaming import TiledStream

    class Upsample8:  # a pointwise "decoder": nearest x8 of a per-pixel function, no spatial context
        def push(self, z):
            return torch.nn.functional.interpolate(torch.tanh(z), scale_factor=(1, 8, 8), mode="nearest")

    z = torch.linspace(-2, 2, 2 * 3 * 13 * 17).reshape(1, 2, 3, 13, 17)
    tiled = TiledStream(Upsample8, tile=6, overlap=2, scale=8)
    torch.testing.assert_close(tiled.push(z), Upsample8().push(z))
    assert len(tiled.streams) == 3 * 4


def test_tiled_stream_keeps_one_causal_cache_per_tile(tiny_wan):
    vae = tiny_wan.vae
    x = clip(9, 32, 48)
    single = vae.encode_stream(tile=64)  # one tile covers the frame: identical to no tiling
    torch.testing.assert_close(single.push(x), vae.encode(x), rtol=0, atol=0)
    tiled = vae.encode_stream(tile=32, overlap=16)
    z = torch.cat([tiled.push(x[:, :, :5]), tiled.push(x[:, :, 5:])], dim=2)
    assert z.shape == (1, 16, 3, 4, 6) and torch.isfinite(z).all()
    assert len(tiled.streams) == 2
    dec = vae.decode_stream(tile=32, overlap=16)
    y = torch.cat([dec.push(z[:, :, :1]), dec.push(z[:, :, 1:])], dim=2)
    assert y.shape == (1, 3, 9, 32, 48)
    with pytest.raises(ValueError, match="one tile grid"):
        dec.push(z[:, :, :1, :, :4])
