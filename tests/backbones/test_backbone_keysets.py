"""Full-size key sets without downloads: every real preset is built on the meta device, a state
dict with the released checkpoint's key names and shapes is generated, and the real loader must
accept it with no missing or unexpected key.

Where the released key set is known exactly, the generated one is checked against it:
DiffSynth-Studio identifies the original Wan2.1 files by an MD5 of their key names and shapes
(``diffsynth/configs/model_configs.py``: DiT ``9269f8db...``, ``Wan2.1_VAE.pth`` ``ccc42284...``),
and the CogVideoX1.5-5B-I2V shard index states ``total_size`` 11,143,189,760 bytes (bf16).
"""

from __future__ import annotations

import pytest
import torch

from vsrkit.backbones import convert, loading, runtime
from vsrkit.backbones.build import diffusers_class, load_component
from vsrkit.backbones.presets import get_preset
from vsrkit.errors import WeightsError


def meta_model(preset_name: str, kind: str, **overrides):
    preset = get_preset(preset_name)
    cls = diffusers_class(preset.transformer_class if kind == "transformer" else preset.vae_class)
    config = {**(preset.transformer if kind == "transformer" else preset.vae), **overrides}
    return runtime.build_empty(cls, config)


def meta_state_dict(model) -> dict:
    return {k: torch.empty(v.shape, device="meta", dtype=v.dtype) for k, v in model.state_dict().items()}


def assert_loaded_on_meta(model):
    # assign=True put the checkpoint's (meta) tensors into every parameter: nothing left behind.
    assert all(p.device.type == "meta" for p in model.parameters())
    assert len(list(model.parameters())) > 0


# --- CogVideoX1.5-5B-I2V (diffusers format: the SparkVSR release and the base model) ----------------

# Key names from zai-org/CogVideoX1.5-5B-I2V transformer/diffusion_pytorch_model.safetensors.index.json.
COGVIDEOX_RELEASED_KEYS = [
    "patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.text_proj.weight", "patch_embed.text_proj.bias",
    "ofs_embedding.linear_1.weight", "ofs_embedding.linear_2.bias", "time_embedding.linear_1.weight",
    "transformer_blocks.0.attn1.norm_k.weight", "transformer_blocks.0.attn1.to_out.0.bias",
    "transformer_blocks.0.norm1.linear.weight", "transformer_blocks.0.norm2.norm.bias",
    "transformer_blocks.41.ff.net.2.weight", "norm_final.weight", "norm_out.linear.weight", "norm_out.norm.bias",
    "proj_out.weight",
]


def test_cogvideox_i2v_diffusers_key_set_loads_on_meta():
    model = meta_model("cogvideox1.5-5b-i2v", "transformer")
    sd = meta_state_dict(model)
    for key in COGVIDEOX_RELEASED_KEYS:
        assert key in sd, key
    # 32 input channels: the patch embedding is Linear(32 * 2 * 2 * 2 -> 3072) (sparkvsr.md §2).
    assert tuple(sd["patch_embed.proj.weight"].shape) == (3072, 256)
    # The release's shard index: total_size 11,143,189,760 bytes of bf16 = 5,571,594,880 parameters.
    assert sum(t.numel() for t in sd.values()) * 2 == 11_143_189_760
    assert len(sd) == 1028
    load_component(model, sd, "CogVideoX1.5-5B-I2V/transformer", "transformer", "cogvideox", "transformer")
    assert_loaded_on_meta(model)


def test_cogvideox_vae_key_set_loads_on_meta():
    vae = meta_model("cogvideox1.5-5b-i2v", "vae")
    sd = meta_state_dict(vae)
    assert tuple(sd["encoder.conv_in.conv.weight"].shape) == (128, 3, 3, 3, 3)
    assert "decoder.up_blocks.3.resnets.0.norm1.norm_layer.weight" in sd  # spatial norm of the decoder
    load_component(vae, sd, "CogVideoX1.5-5B-I2V/vae", "vae", "cogvideox", "vae")
    assert_loaded_on_meta(vae)


def test_cogvideox_t2v_checkpoint_is_rejected_with_the_key_named():
    # A 16-channel (T2V, DOVE) transformer given to the I2V preset: one WeightsError, naming the file and key.
    t2v = meta_model("cogvideox1.5-5b-i2v", "transformer", in_channels=16, ofs_embed_dim=None)
    model = meta_model("cogvideox1.5-5b-i2v", "transformer")
    with pytest.raises(WeightsError) as err:
        load_component(model, meta_state_dict(t2v), "dove/transformer", "transformer", "cogvideox", "transformer")
    message = str(err.value)
    assert "`dove/transformer`" in message
    assert "missing key `ofs_embedding.linear_1.bias`" in message
    assert "key `patch_embed.proj.weight` has shape (3072, 128), expected (3072, 256)" in message
    assert "\n" not in message


# --- Wan2.1-T2V-1.3B ----------------------------------------------------------------------------------


def diffsynth_wan_dit_meta():
    from diffsynth.models.wan_video_dit import WanModel

    with torch.device("meta"):
        return WanModel(has_image_input=False, patch_size=[1, 2, 2], in_dim=16, dim=1536, ffn_dim=8960, freq_dim=256,
                        text_dim=4096, out_dim=16, num_heads=12, num_layers=30, eps=1e-6)


def test_wan_original_key_set_is_the_released_file_and_loads():
    from diffsynth.core.loader.file import hash_state_dict_keys

    original = diffsynth_wan_dit_meta().state_dict()
    # DiffSynth's fingerprint of Wan-AI/Wan2.1-T2V-1.3B diffusion_pytorch_model.safetensors.
    assert hash_state_dict_keys(original) == "9269f8db9040a9d860eaca435be61814"
    for key, shape in {"head.modulation": (1, 2, 1536), "blocks.29.modulation": (1, 6, 1536),
                       "patch_embedding.weight": (1536, 16, 1, 2, 2), "blocks.0.norm3.weight": (1536,),
                       "text_embedding.0.weight": (1536, 4096), "blocks.0.self_attn.norm_q.weight": (1536,)}.items():
        assert tuple(original[key].shape) == shape, key
    model = meta_model("wan2.1-t2v-1.3b", "transformer")
    load_component(model, dict(original), "Wan2.1-T2V-1.3B/diffusion_pytorch_model.safetensors", "transformer",
                   "wan", "transformer")
    assert_loaded_on_meta(model)


def test_wan_reverse_conversion_reproduces_the_original_key_set():
    from diffsynth.core.loader.file import hash_state_dict_keys
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    model = meta_model("wan2.1-t2v-1.3b", "transformer")
    original = convert.convert_wan_to_original(meta_state_dict(model))
    assert hash_state_dict_keys(original) == "9269f8db9040a9d860eaca435be61814"
    assert infer_diffusers_model_type(original) == "wan-t2v-1.3B"
    # diffusers' own converter agrees with ours key for key.
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    theirs = convert_wan_transformer_to_diffusers(dict(original))
    ours, unknown = convert.convert_wan_to_diffusers(original)
    assert unknown == [] and set(theirs) == set(ours) == set(model.state_dict())


@pytest.mark.parametrize("prefix", ["model.diffusion_model.", "diffusion_model.", "dit."])
def test_wan_prefixed_original_files_load(prefix):
    original = {prefix + k: v for k, v in diffsynth_wan_dit_meta().state_dict().items()}
    model = meta_model("wan2.1-t2v-1.3b", "transformer")
    load_component(model, original, "repack.safetensors", "transformer", "wan", "transformer")
    assert_loaded_on_meta(model)


def test_wan_diffusers_key_set_loads():
    model = meta_model("wan2.1-t2v-1.3b", "transformer")
    sd = meta_state_dict(model)
    assert "condition_embedder.time_proj.weight" in sd and "blocks.0.attn1.to_out.0.weight" in sd
    load_component(model, sd, "Wan2.1-T2V-1.3B-Diffusers/transformer", "transformer", "wan", "transformer")
    assert_loaded_on_meta(model)


def test_wan_original_vae_key_set_is_the_released_file_and_loads():
    from diffsynth.core.loader.file import hash_state_dict_keys
    from diffsynth.models.wan_video_vae import WanVideoVAE

    with torch.device("meta"):
        vae_ds = WanVideoVAE()
    original = {k[len("model."):]: v for k, v in vae_ds.state_dict().items()}
    assert hash_state_dict_keys(original) == "ccc42284ea13e1ad04693284c7a09be6"  # Wan2.1_VAE.pth
    vae = meta_model("wan2.1-t2v-1.3b", "vae")
    load_component(vae, original, "Wan2.1_VAE.pth", "vae", "wan", "vae")
    assert_loaded_on_meta(vae)


def test_pssr_widened_patch_embedding_needs_the_override():
    original = dict(diffsynth_wan_dit_meta().state_dict())
    original["patch_embedding.weight"] = torch.empty(1536, 32, 1, 2, 2, device="meta")
    with pytest.raises(WeightsError, match="patch_embedding.weight` has shape \\(1536, 32, 1, 2, 2\\)"):
        load_component(meta_model("wan2.1-t2v-1.3b", "transformer"), dict(original), "base.safetensors",
                       "transformer", "wan", "transformer")
    widened = meta_model("wan2.1-t2v-1.3b", "transformer", in_channels=32)
    load_component(widened, original, "base.safetensors", "transformer", "wan", "transformer")
    assert_loaded_on_meta(widened)


# --- LTX-Video 2B 0.9.1 single file -------------------------------------------------------------------


def ltx_single_file_keys() -> dict:
    transformer = meta_model("ltx-video-2b", "transformer")
    vae = meta_model("ltx-video-2b", "vae")
    sd = {convert.ltx_transformer_key_to_original(k): v for k, v in meta_state_dict(transformer).items()}
    sd.update({convert.ltx_vae091_key_to_original(k): v for k, v in meta_state_dict(vae).items()})
    # The single file also stores these per-channel statistics, dropped by the converter.
    for extra in ("channel", "mean-of-stds", "mean-of-stds_over_std-of-means", "mean-of-means"):
        sd.setdefault(f"vae.per_channel_statistics.{extra}", torch.empty(128, device="meta"))
    sd["vae.decoder.timestep_scale_multiplier"] = torch.empty((), device="meta")
    return sd


def test_ltx_single_file_key_set_is_recognised_and_loads():
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    sd = ltx_single_file_keys()
    for key in ("model.diffusion_model.patchify_proj.weight",
                "model.diffusion_model.transformer_blocks.27.scale_shift_table",
                "model.diffusion_model.adaln_single.linear.weight", "vae.decoder.last_scale_shift_table",
                "vae.decoder.last_time_embedder.timestep_embedder.linear_1.weight", "vae.encoder.conv_in.conv.bias",
                "vae.per_channel_statistics.std-of-means"):
        assert key in sd, key
    assert infer_diffusers_model_type(sd) == "ltx-video-0.9.1"
    transformer = meta_model("ltx-video-2b", "transformer")
    load_component(transformer, dict(sd), "ltx-video-2b-v0.9.1.safetensors", "transformer", "ltx", "transformer")
    assert_loaded_on_meta(transformer)
    vae = meta_model("ltx-video-2b", "vae")
    load_component(vae, dict(sd), "ltx-video-2b-v0.9.1.safetensors", "vae", "ltx", "vae")
    assert_loaded_on_meta(vae)


def test_ltx_diffusers_key_set_loads():
    transformer = meta_model("ltx-video-2b", "transformer")
    assert sum(p.numel() for p in transformer.parameters()) == pytest.approx(1.923e9, rel=1e-3)  # §A.2
    load_component(transformer, meta_state_dict(transformer), "LTX-Video/transformer", "transformer", "ltx",
                   "transformer")
    assert_loaded_on_meta(transformer)


def test_check_state_dict_reports_unmapped_original_keys():
    model = meta_model("wan2.1-t2v-1.3b", "transformer")
    original = dict(diffsynth_wan_dit_meta().state_dict())
    original["blocks.0.fc_layers.weight"] = torch.empty(3, device="meta")  # a PS-SR draft extra
    with pytest.raises(WeightsError, match="unexpected key `blocks.0.fc_layers.weight`"):
        load_component(model, original, "draft.safetensors", "transformer", "wan", "transformer")


def test_loading_module_reads_no_files_for_meta_dicts():
    # The meta path must never touch the disk: resolve_layout with nothing configured finds nothing.
    layout = loading.resolve_layout(None)
    assert layout.transformer is None and layout.vae is None and layout.scheduler_config is None


# --- full-size FLOPs on meta (no memory, no compute) --------------------------------------------------


@pytest.mark.parametrize("preset_name,latent,tflop", [
    # turbovsr_and_speed.md §B.4, measured there with FlopCounterMode at 33 x 1088 x 1920:
    ("ltx-video-2b", (5, 34, 60), 57.8),
    ("wan2.1-t2v-1.3b", (9, 136, 240), 1184.9),
    ("cogvideox1.5-5b-i2v", (10, 136, 240), 1259.0),  # 9 latent frames + the prepended one
])
def test_full_size_forward_flops_match_the_reference(preset_name, latent, tflop):
    from torch.utils.flop_counter import FlopCounterMode

    from vsrkit.backbones import BackboneConfig, backbone_class
    from vsrkit.backbones.build import BuiltModels

    p = get_preset(preset_name)
    transformer = meta_model(preset_name, "transformer").to("meta")
    vae = meta_model(preset_name, "vae").to("meta")
    built = BuiltModels(p, transformer, vae, dict(p.scheduler), None, "auto", torch.device("meta"), torch.float32,
                        torch.float32)
    bb = backbone_class(p.family)(BackboneConfig(preset=preset_name, family=p.family), built)
    latents = torch.empty(1, transformer.config.in_channels, *latent, device="meta")
    emb = torch.empty(1, p.text.max_length, p.text.dim, device="meta")
    with FlopCounterMode(display=False) as counter:
        out = bb.predict(latents, 400.0, emb)
    assert out.shape == (1, transformer.config.out_channels, *latent)
    assert counter.get_total_flops() / 1e12 == pytest.approx(tflop, abs=0.1)
