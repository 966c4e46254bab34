"""Released weights without downloads: key sets on the meta device, DAPE merge, encoder preprocessing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vsrkit.backbones import runtime
from vsrkit.backbones.visual import (
    DAPE_SCALE,
    VisualPromptEncoder,
    build_tiny,
    load_weights,
    merge_dape,
    ram_state_dict,
)
from vsrkit.errors import WeightsError


def test_released_dit_key_set_loads_on_meta_with_text_dim_512():
    # InfVSR.ckpt = DiffSynth WanModel(text_dim=512, 1.3B geometry) state dict in original names
    # (release diffsynth_wan/config.json); the loader must take it into diffusers' model with text_dim 512.
    from diffsynth.models.wan_video_dit import WanModel

    from vsrkit.backbones.build import diffusers_class, load_component
    from vsrkit.backbones.presets import get_preset

    with torch.device("meta"):
        release = WanModel(has_image_input=False, patch_size=[1, 2, 2], in_dim=16, dim=1536, ffn_dim=8960,
                           freq_dim=256, text_dim=512, out_dim=16, num_heads=12, num_layers=30, eps=1e-6)
    sd = release.state_dict()
    assert tuple(sd["text_embedding.0.weight"].shape) == (1536, 512)
    assert tuple(sd["blocks.29.self_attn.norm_k.weight"].shape) == (1536,)
    preset = get_preset("wan2.1-t2v-1.3b")
    model = runtime.build_empty(diffusers_class(preset.transformer_class), {**preset.transformer, "text_dim": 512})
    load_component(model, dict(sd), "InfVSR.ckpt", "transformer", "wan", "transformer")
    assert all(p.device.type == "meta" for p in model.parameters())
    # ~1.42 B parameters: the "2.63 GiB" bf16 checkpoint of the HF card.
    assert abs(sum(t.numel() for t in sd.values()) * 2 / 2**30 - 2.63) < 0.02


def _ram_meta_keys() -> dict:
    model = runtime.build_empty(
        lambda: VisualPromptEncoder(__import__("vsrkit.backbones.swin", fromlist=["SwinTransformer"]).SwinTransformer(
            384, 4, 192, (2, 2, 18, 2), (6, 12, 24, 48), 12), 384), {})
    return model, {k: torch.empty(v.shape, device="meta") for k, v in model.state_dict().items()}


def test_ram_swin_l_key_set():
    # Key names of RAM's ram_swin_large_14m.pth under `visual_encoder.` (Microsoft Swin names) and `image_proj`.
    model, sd = _ram_meta_keys()
    expected = {
        "visual_encoder.patch_embed.proj.weight": (192, 3, 4, 4),
        "visual_encoder.patch_embed.norm.weight": (192,),
        "visual_encoder.layers.0.blocks.0.attn.relative_position_bias_table": (23 * 23, 6),
        "visual_encoder.layers.0.blocks.1.attn.qkv.weight": (576, 192),
        "visual_encoder.layers.0.downsample.reduction.weight": (384, 768),
        "visual_encoder.layers.2.blocks.17.mlp.fc2.weight": (768, 3072),
        "visual_encoder.layers.3.blocks.1.attn.proj.weight": (1536, 1536),
        "visual_encoder.norm.weight": (1536,),
        "image_proj.weight": (512, 1536),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "visual_encoder.layers.3.downsample.reduction.weight" not in sd
    assert not any(k.endswith(("relative_position_index", "attn_mask")) for k in sd)
    # timm lists swin_large_patch4_window12_384 at 196.74 M parameters with its 1000-class head
    # (1536 * 1000 + 1000): 195.20 M without it, plus the 1536 -> 512 projection (786,944).
    total = sum(t.numel() for t in sd.values())
    assert abs(total - (196_740_000 - 1_537_000 + 786_944)) < 10_000
    # A RAM-style checkpoint (extra text-side keys, index buffers) filters down to exactly this set.
    ram = {**{k: v for k, v in sd.items()}, "visual_encoder.layers.0.blocks.0.attn.relative_position_index":
           torch.empty(144, 144), "tagging_head.bert.weight": torch.empty(3)}
    load_weights(model, ram_state_dict(ram, None), "ram_swin_large_14m.pth")


def test_dape_merge_is_the_releases_grouped_conv():
    g = torch.Generator().manual_seed(0)
    dim, r = 6, 2
    weight = torch.randn(3 * dim, dim, generator=g)
    a, b = torch.randn(2 * r, dim, generator=g), torch.randn(2 * dim, r, generator=g)
    merged = merge_dape({"x.attn.qkv.weight": weight}, {"x.attn.qkv.lora_A": a, "x.attn.qkv.lora_B": b})
    delta = F.conv1d(a.unsqueeze(0), b.unsqueeze(-1), groups=2).squeeze(0)  # the release's formula
    want = weight.clone()
    want[:dim] += delta[:dim] / 8
    want[2 * dim:] += delta[dim:] / 8
    torch.testing.assert_close(merged["x.attn.qkv.weight"], want)
    assert DAPE_SCALE == 1 / 8
    torch.testing.assert_close(merged["x.attn.qkv.weight"][dim:2 * dim], weight[dim:2 * dim], rtol=0, atol=0)
    with pytest.raises(WeightsError, match="do not fit"):
        merge_dape({"x.attn.qkv.weight": weight}, {"x.attn.qkv.lora_A": a[:, :3], "x.attn.qkv.lora_B": b})


def test_tiny_encoder_tokens_and_preprocessing():
    from torchvision import transforms

    enc = build_tiny(None, None, torch.device("cpu"), torch.float32)
    image = torch.rand(2, 3, 20, 28, generator=torch.Generator().manual_seed(1))
    tokens = enc(image)
    assert tokens.shape == (2, 5, 512)
    # Preprocessing = the release's torchvision Resize((S, S), bilinear) + Normalize(ImageNet).
    ref = transforms.Compose([transforms.Resize((64, 64), interpolation=transforms.InterpolationMode.BILINEAR),
                              transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])(image)
    torch.testing.assert_close(enc.image_proj(enc.visual_encoder(ref)), tokens, rtol=1e-5, atol=1e-5)


def test_wrong_encoder_weights_name_the_file_and_key(tmp_path):
    path = tmp_path / "ram.pth"
    torch.save({"model": {"visual_encoder.norm.weight": torch.ones(3)}}, path)
    with pytest.raises(WeightsError, match=r"`.*ram.pth` do not fit the encoder: missing key"):
        build_tiny(str(path), None, torch.device("cpu"), torch.float32)
