"""The released SparkVSR folder layout (JiongzeYu/SparkVSR: a CogVideoX1.5-5B-I2V diffusers pipeline
whose transformer was fine-tuned) loads key for key, on the meta device (no weights, no download)."""

from __future__ import annotations

import json

import pytest
import torch

from vsrkit.backbones import BackboneConfig
from vsrkit.errors import WeightsError
from vsrkit.methods.sparkvsr.config import SparkVSRConfig
from vsrkit.methods.sparkvsr.method import SparkVSRMethod

# The transformer key set of the released checkpoint. SparkVSR's `prepare_sft_ckpt.py` swaps the
# weights of CogVideoX1.5-5B-I2V's transformer folder and keeps its config (sparkvsr.md §8.4), so
# the keys are those of that model's shard index (smthemex/ComfyUI_SparkVSR_SM @ 7b842a1,
# CogVideoX1.5-5B-I2V/transformer/diffusion_pytorch_model.safetensors.index.json: 1028 keys, total
# 11,143,189,760 bytes in bf16): 20 top-level keys and 24 per block, 42 blocks.
RELEASE_TOP_KEYS = [
    "norm_final.bias", "norm_final.weight", "norm_out.linear.bias", "norm_out.linear.weight",
    "norm_out.norm.bias", "norm_out.norm.weight", "ofs_embedding.linear_1.bias", "ofs_embedding.linear_1.weight",
    "ofs_embedding.linear_2.bias", "ofs_embedding.linear_2.weight", "patch_embed.proj.bias",
    "patch_embed.proj.weight", "patch_embed.text_proj.bias", "patch_embed.text_proj.weight", "proj_out.bias",
    "proj_out.weight", "time_embedding.linear_1.bias", "time_embedding.linear_1.weight",
    "time_embedding.linear_2.bias", "time_embedding.linear_2.weight",
]
RELEASE_BLOCK_KEYS = [
    "attn1.norm_k.bias", "attn1.norm_k.weight", "attn1.norm_q.bias", "attn1.norm_q.weight", "attn1.to_k.bias",
    "attn1.to_k.weight", "attn1.to_out.0.bias", "attn1.to_out.0.weight", "attn1.to_q.bias", "attn1.to_q.weight",
    "attn1.to_v.bias", "attn1.to_v.weight", "ff.net.0.proj.bias", "ff.net.0.proj.weight", "ff.net.2.bias",
    "ff.net.2.weight", "norm1.linear.bias", "norm1.linear.weight", "norm1.norm.bias", "norm1.norm.weight",
    "norm2.linear.bias", "norm2.linear.weight", "norm2.norm.bias", "norm2.norm.weight",
]
RELEASE_MODEL_INDEX = {
    "_class_name": "CogVideoXImageToVideoPipeline", "_diffusers_version": "0.32.0.dev0",
    "scheduler": ["diffusers", "CogVideoXDDIMScheduler"], "text_encoder": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "T5Tokenizer"], "transformer": ["diffusers", "CogVideoXTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLCogVideoX"],
}


def release_keys() -> list[str]:
    keys = list(RELEASE_TOP_KEYS)
    keys += [f"transformer_blocks.{i}.{k}" for i in range(42) for k in RELEASE_BLOCK_KEYS]
    return keys


def _fake_release_folder(root, preset):
    """The release's folder layout with configs and the transformer shard index (no shards)."""
    (root / "model_index.json").write_text(json.dumps(RELEASE_MODEL_INDEX))
    for part, config, name in (("transformer", preset.transformer, "config.json"),
                               ("vae", preset.vae, "config.json"),
                               ("scheduler", preset.scheduler, "scheduler_config.json")):
        (root / part).mkdir()
        (root / part / name).write_text(json.dumps({"_class_name": RELEASE_MODEL_INDEX[part][1], **config}))
    weight_map = {k: f"diffusion_pytorch_model-0000{1 + i % 3}-of-00003.safetensors"
                  for i, k in enumerate(release_keys())}
    (root / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 11143189760}, "weight_map": weight_map}))
    return root


def test_release_transformer_keys_load_on_meta_without_missing_or_unexpected(tmp_path):
    from vsrkit.backbones import loading, runtime
    from vsrkit.backbones.build import diffusers_class, load_component
    from vsrkit.backbones.presets import get_preset

    preset = get_preset("cogvideox1.5-5b-i2v")
    folder = _fake_release_folder(tmp_path, preset)
    layout = loading.resolve_layout(str(folder))
    assert layout.transformer.path == folder / "transformer"
    assert layout.scheduler_config["prediction_type"] == "v_prediction"
    cls = diffusers_class(preset.transformer_class)
    model = runtime.build_empty(cls, loading.model_config(cls, preset.transformer, layout.transformer))
    assert next(model.parameters()).device.type == "meta"
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    keys = release_keys()
    assert len(keys) == 1028 and len(shapes) == 1028
    sd = {k: torch.empty(shapes.get(k, (1,)), device="meta") for k in keys}
    load_component(model, sd, str(folder / "transformer"), "transformer of the SparkVSR release", "cogvideox",
                   "transformer")  # raises WeightsError on any missing / unexpected key
    # 32 input channels x patch 2 x 2 x 2 = 256 (prepare_sft_ckpt.py's in_channels check: 256 / 8 = 32).
    assert model.patch_embed.proj.in_features == 256 and model.config.in_channels == 32
    assert shapes["ofs_embedding.linear_1.weight"] == (512, 512)


def test_release_check_rejects_a_transformer_without_the_i2v_layout():
    t2v_like = BackboneConfig(preset="cogvideox1.5-5b-i2v-tiny", family="cogvideox", dtype="fp32",
                              transformer_overrides={"in_channels": 16})
    method = SparkVSRMethod(SparkVSRConfig(), backbone=t2v_like, scale=4)
    with pytest.raises(WeightsError, match="in/out channels 16/16; SparkVSR needs the I2V layout 32/16"):
        method.load(torch.device("cpu"), torch.float32)
