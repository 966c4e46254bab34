"""Conformance with DiffSynth-Studio, the Wan implementation PS-SR and InfVSR were trained with.

On the tiny Wan config, DiffSynth's ``WanModel`` (original key names) and our diffusers-based
wrapper loaded through our key conversion give the same velocity within float32 rounding; the
same holds for the VAE, where DiffSynth returns normalised latents ``(mu - mean) / std`` and
diffusers raw ones (pssr.md §7.5).
"""

from __future__ import annotations

import pytest
import torch
from backbone_helpers import clip, tiny_config

pytest.importorskip("diffsynth")

from vsrkit.backbones import build_backbone, convert, runtime  # noqa: E402
from vsrkit.backbones.build import load_component  # noqa: E402
from vsrkit.backbones.presets import get_preset  # noqa: E402
from vsrkit.backbones.wan import WanBackbone  # noqa: E402


def diffsynth_tiny_dit():
    from diffsynth.models.wan_video_dit import WanModel

    t = get_preset("wan2.1-t2v-1.3b-tiny").transformer
    model = WanModel(has_image_input=False, patch_size=list(t["patch_size"]), in_dim=t["in_channels"],
                     dim=t["num_attention_heads"] * t["attention_head_dim"], ffn_dim=t["ffn_dim"],
                     freq_dim=t["freq_dim"], text_dim=t["text_dim"], out_dim=t["out_channels"],
                     num_heads=t["num_attention_heads"], num_layers=t["num_layers"], eps=t["eps"])
    return runtime.deterministic_init_(model, seed=7).eval()


def our_tiny_wan_from(original_state_dict) -> WanBackbone:
    bb = build_backbone(tiny_config("wan"))
    load_component(bb.transformer, {k: v.clone() for k, v in original_state_dict.items()}, "diffsynth",
                   "transformer", "wan", "transformer")
    return bb


@torch.no_grad()
def test_dit_matches_diffsynth_in_fp32():
    # DiffSynth 2.x runs the DiT through `model_fn_wan_video` (WanModel.forward is not its inference path).
    from diffsynth.pipelines.wan_video import model_fn_wan_video

    ds = diffsynth_tiny_dit()
    bb = our_tiny_wan_from(ds.state_dict())
    x = clip(9, 32, 32)[:, :1].repeat(1, 16, 1, 1, 1)[:, :, :3, :4, :6] * 0.8  # (1, 16, 3, 4, 6) latents
    x = x + torch.linspace(-0.5, 0.5, 16).view(1, -1, 1, 1, 1)
    context = runtime.deterministic_values((1, 8, 16), "context")
    for t in (400.0, 700.0):
        ref = model_fn_wan_video(dit=ds, latents=x, timestep=torch.tensor([t]), context=context)
        ours = bb.predict(x, t, context)
        assert ours.shape == ref.shape == (1, 16, 3, 4, 6)
        torch.testing.assert_close(ours, ref.float(), rtol=1e-4, atol=2e-5)
        assert ref.abs().mean() > 0.1  # a real signal, not two zero outputs


@torch.no_grad()
def test_dit_conversion_round_trips_to_diffsynth_names():
    ds = diffsynth_tiny_dit()
    bb = our_tiny_wan_from(ds.state_dict())
    back = convert.convert_wan_to_original(bb.transformer.state_dict())
    assert set(back) == set(ds.state_dict())
    for key, value in ds.state_dict().items():
        torch.testing.assert_close(back[key], value, rtol=0, atol=0)


@torch.no_grad()
def test_vae_normalised_latents_match_diffsynth():
    from diffsynth.models.wan_video_vae import VideoVAE_, WanVideoVAE

    v = get_preset("wan2.1-t2v-1.3b-tiny").vae
    ds = WanVideoVAE()
    ds.model = VideoVAE_(dim=v["base_dim"], z_dim=v["z_dim"], dim_mult=v["dim_mult"],
                         num_res_blocks=v["num_res_blocks"], attn_scales=v["attn_scales"],
                         temperal_downsample=v["temperal_downsample"])
    runtime.deterministic_init_(ds.model, seed=3)
    ds.eval()

    bb = build_backbone(tiny_config("wan"))
    load_component(bb.vae.model, dict(ds.model.state_dict()), "Wan2.1_VAE.pth", "vae", "wan", "vae")

    video = clip(9, 32, 32)
    ref = ds.encode([video[0]], device="cpu")  # DiffSynth: normalised latents
    ours = bb.vae.encode(video)
    assert ours.shape == ref.shape == (1, 16, 3, 4, 4)
    torch.testing.assert_close(ours, ref.float(), rtol=1e-4, atol=1e-5)
    # diffusers' VAE alone returns the raw mean, which is not what DiffSynth-trained models expect.
    raw = bb.vae.model.encode(video).latent_dist.mode()
    assert (raw - ref).abs().max() > 0.1

    ref_video = ds.decode([ref[0]], device="cpu")
    torch.testing.assert_close(bb.vae.decode(ours), ref_video.float(), rtol=1e-4, atol=1e-4)
