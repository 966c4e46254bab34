"""CogVideoX1.5 wrapper on the tiny preset: scheduler constants, VAE normalisation and streaming,
RoPE, transformer forward (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import clip

from vsrkit.backbones.presets import get_preset


def test_scheduler_constants_come_from_the_checkpoint_config(tiny_cogvideox):
    # sparkvsr.md §4.3: zero-SNR rescale, v-prediction, snr_shift 1.0 -> sqrt(abar_399) = 0.62733.
    assert tiny_cogvideox.alpha_bar(399) ** 0.5 == pytest.approx(0.62733, abs=5e-6)
    assert (1 - tiny_cogvideox.alpha_bar(399)) ** 0.5 == pytest.approx(0.77875, abs=5e-6)
    assert tiny_cogvideox.alpha_bar(999) == pytest.approx(0.0, abs=1e-12)  # zero terminal SNR
    sched = tiny_cogvideox.scheduler()
    assert sched.config.prediction_type == "v_prediction"
    assert sched.config.snr_shift_scale == 1.0


def test_diffusers_default_scheduler_would_be_wrong():
    # The pitfall the preset exists for: class defaults give other constants.
    from diffusers import CogVideoXDPMScheduler

    default = CogVideoXDPMScheduler().alphas_cumprod[399].item() ** 0.5
    assert abs(default - 0.62733) > 0.01
    real = CogVideoXDPMScheduler.from_config(get_preset("cogvideox1.5-5b-i2v").scheduler)
    assert real.alphas_cumprod[399].item() ** 0.5 == pytest.approx(0.62733, abs=5e-6)


def test_vae_encode_is_posterior_mean_times_0_7(tiny_cogvideox):
    vae = tiny_cogvideox.vae
    x = clip(9, 32, 48)
    z = vae.encode(x)
    assert z.shape == (1, 16, 3, 4, 6)
    assert z.dtype == torch.float32
    raw = vae.model.encode(x).latent_dist.mode()
    torch.testing.assert_close(z, raw * 0.7)
    assert vae.scaling_factor == 0.7


def test_vae_sample_uses_the_generator(tiny_cogvideox):
    x = clip(5, 16, 16)
    a = tiny_cogvideox.vae.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
    b = tiny_cogvideox.vae.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
    c = tiny_cogvideox.vae.encode(x, sample=True, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


def test_vae_decode_undoes_the_scaling_and_clamps(tiny_cogvideox):
    vae = tiny_cogvideox.vae
    z = vae.encode(clip(9, 16, 16))
    y = vae.decode(z)
    assert y.shape == (1, 3, 9, 16, 16)
    raw = vae.model.decode(z / 0.7).sample.clamp(-1, 1)
    torch.testing.assert_close(y, raw)
    assert y.min() >= -1 and y.max() <= 1


def test_vae_round_trip_length_needs_8k_plus_1_frames(tiny_cogvideox):
    # diffusers' CogVideoX decoder turns an even number of latent frames into 4 frames each.
    z = tiny_cogvideox.vae.encode(clip(5, 16, 16))
    assert z.shape[2] == 2
    assert tiny_cogvideox.vae.decode(z).shape[2] == 8


def test_latent_frames_rule(tiny_cogvideox):
    assert tiny_cogvideox.vae.latent_frames(33) == 9
    with pytest.raises(ValueError, match="4k\\+1 frames. Got 8"):
        tiny_cogvideox.vae.latent_frames(8)


def test_stream_encode_equals_whole_clip(tiny_cogvideox):
    vae = tiny_cogvideox.vae
    x = clip(25, 16, 16)
    whole = vae.encode(x)
    stream = vae.encode_stream()
    parts = [stream.push(x[:, :, :9]), stream.push(x[:, :, 9:17]), stream.push(x[:, :, 17:])]
    assert [p.shape[2] for p in parts] == [3, 2, 2]
    torch.testing.assert_close(torch.cat(parts, 2), whole, rtol=0, atol=0)


def test_stream_decode_equals_whole_and_keeps_memory_bounded(tiny_cogvideox):
    vae = tiny_cogvideox.vae
    z = vae.encode(clip(25, 16, 16))  # 7 latent frames
    whole = vae.decode(z)
    stream = vae.decode_stream()
    parts = [stream.push(z[:, :, :3]), stream.push(z[:, :, 3:5])]
    cache_after_two = sum(c.numel() for c in _tensors(stream.cache))
    parts.append(stream.push(z[:, :, 5:]))
    assert [p.shape[2] for p in parts] == [9, 8, 8]
    torch.testing.assert_close(torch.cat(parts, 2), whole, rtol=0, atol=0)
    # The causal cache is a fixed number of frames per conv: it does not grow with length.
    assert sum(c.numel() for c in _tensors(stream.cache)) == cache_after_two > 0


def test_stream_rejects_misaligned_chunks(tiny_cogvideox):
    stream = tiny_cogvideox.vae.encode_stream()
    stream.push(clip(9, 16, 16))
    with pytest.raises(ValueError, match="multiple of 8 frames. Got 4"):
        stream.push(clip(4, 16, 16))


def test_rotary_matches_the_diffusers_pipeline(tiny_cogvideox):
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    cos, sin = tiny_cogvideox.rotary_pos_embed(4, 8, 6)
    ref_cos, ref_sin = get_3d_rotary_pos_embed(embed_dim=16, crops_coords=None, grid_size=(4, 3), temporal_size=2,
                                               grid_type="slice", max_size=(8, 8))
    assert cos.shape == (2 * 4 * 3, 16)
    torch.testing.assert_close(cos, ref_cos)
    torch.testing.assert_close(sin, ref_sin)
    # A grid larger than the model's base size still works (table grown as SparkVSR does).
    big_cos, _ = tiny_cogvideox.rotary_pos_embed(2, 40, 40)
    assert big_cos.shape == (1 * 20 * 20, 16)


def test_predict_runs_channels_first_and_uses_ofs(tiny_cogvideox):
    bb = tiny_cogvideox
    z = bb.vae.encode(clip(5, 16, 16))  # (1, 16, 2, 2, 2)
    x = torch.cat([z, torch.zeros_like(z)], dim=1)
    emb = bb.prompt_embeds("")
    v = bb.predict(x, 399, emb)
    assert v.shape == (1, 16, 2, 2, 2)
    assert torch.isfinite(v).all()
    v_ofs = bb.predict(x, 399, emb, ofs=1.0)
    assert not torch.allclose(v, v_ofs)
    v_t = bb.predict(x, 200, emb)
    assert not torch.allclose(v, v_t)


def test_predict_rejects_odd_latent_frames(tiny_cogvideox):
    x = torch.zeros(1, 32, 3, 2, 2)
    with pytest.raises(ValueError, match="multiple of 2"):
        tiny_cogvideox.predict(x, 399, tiny_cogvideox.prompt_embeds(""))


def test_tiny_prompt_embeds_are_deterministic_per_text(tiny_cogvideox):
    a, b, c = (tiny_cogvideox.prompt_embeds(t) for t in ("", "", "a cat"))
    assert a.shape == (1, 8, 32)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def test_keyframe_encoding_of_4_repeated_frames_gives_one_latent(tiny_cogvideox):
    image = clip(1, 16, 16)
    z = tiny_cogvideox.vae.encode(image.repeat(1, 1, 4, 1, 1))  # SparkVSR's keyframe encoding
    assert z.shape == (1, 16, 1, 2, 2)
    with pytest.raises(ValueError, match="4k or 4k\\+1 frames. Got 6"):
        tiny_cogvideox.vae.encode(clip(6, 16, 16))


def test_decode_with_grad_reaches_the_latents(tiny_cogvideox):
    z = tiny_cogvideox.vae.encode(clip(9, 16, 16)).requires_grad_(True)
    y = tiny_cogvideox.vae.decode(z, grad=True)
    y.square().mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_cogvideox.vae.model.parameters())  # frozen decoder
    with torch.no_grad():
        assert not tiny_cogvideox.vae.decode(z, grad=True).requires_grad  # caller's no_grad wins
    assert not tiny_cogvideox.vae.decode(z).requires_grad
