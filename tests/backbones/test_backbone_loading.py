"""Loading real files (written by the tests from tiny models): diffusers pipeline folders, sharded
safetensors, original Wan single files and folders, LTX single files, LoRA files; and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from backbone_helpers import clip, tiny_config
from safetensors.torch import save_file

from vsrkit.backbones import build_backbone, convert, loading
from vsrkit.errors import UserError, WeightsError


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def save_pipeline_folder(bb, root, shard: str = "20KB", scheduler_overrides: dict | None = None):
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXImageToVideoPipeline"}))
    bb.transformer.save_pretrained(root / "transformer", max_shard_size=shard)
    bb.vae.model.save_pretrained(root / "vae")
    (root / "scheduler").mkdir()
    sched = {"_class_name": "CogVideoXDDIMScheduler", **bb.scheduler_config, **(scheduler_overrides or {})}
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    return root


@pytest.fixture(scope="module")
def source_cogvideox():
    return build_backbone(tiny_config("cogvideox", seed=5))


def test_diffusers_pipeline_folder_with_sharded_transformer(tmp_path, source_cogvideox):
    root = save_pipeline_folder(source_cogvideox, tmp_path / "SparkVSR", scheduler_overrides={"snr_shift_scale": 2.0})
    assert (root / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    loaded = build_backbone(tiny_config("cogvideox", path=str(root)))
    assert same_weights(loaded.transformer, source_cogvideox.transformer)
    assert same_weights(loaded.vae.model, source_cogvideox.vae.model)
    # The folder's scheduler config wins over the preset's.
    assert loaded.scheduler_config["snr_shift_scale"] == 2.0
    x = torch.cat([source_cogvideox.vae.encode(clip(9, 16, 16))] * 2, dim=1)[:, :, :2]
    emb = source_cogvideox.prompt_embeds("")
    torch.testing.assert_close(loaded.predict(x, 399, emb), source_cogvideox.predict(x, 399, emb))


def test_missing_shard_names_the_file_and_a_key(tmp_path, source_cogvideox):
    root = save_pipeline_folder(source_cogvideox, tmp_path / "broken")
    index = json.loads((root / "transformer" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (root / "transformer" / victim).unlink()
    with pytest.raises(WeightsError, match=f"Shard `.*{victim}` listed in .* \\(holding key `"):
        build_backbone(tiny_config("cogvideox", path=str(root)))


def test_pipeline_folder_without_vae_is_one_clear_error(tmp_path, source_cogvideox):
    root = save_pipeline_folder(source_cogvideox, tmp_path / "novae")
    (root / "vae" / "config.json").unlink()
    with pytest.raises(WeightsError, match="no `vae/config.json`"):
        build_backbone(tiny_config("cogvideox", path=str(root)))


def test_transformer_path_overrides_with_a_single_diffusers_file(tmp_path, source_cogvideox):
    file = tmp_path / "SparkVSR-S2-F32.safetensors"
    save_file({k: v.contiguous() for k, v in source_cogvideox.transformer.state_dict().items()}, str(file))
    loaded = build_backbone(tiny_config("cogvideox", transformer_path=str(file)))
    assert same_weights(loaded.transformer, source_cogvideox.transformer)
    assert not same_weights(loaded.vae.model, source_cogvideox.vae.model)  # VAE stays the random init (seed 0)


def test_wrong_model_file_is_rejected(tmp_path):
    wan = build_backbone(tiny_config("wan"))
    file = tmp_path / "wan.safetensors"
    save_file({k: v.contiguous() for k, v in wan.transformer.state_dict().items()}, str(file))
    with pytest.raises(WeightsError) as err:
        build_backbone(tiny_config("cogvideox", transformer_path=str(file)))
    assert f"`{file}` does not match the transformer of preset `cogvideox1.5-5b-i2v-tiny`" in str(err.value)


def test_missing_and_corrupt_paths(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        build_backbone(tiny_config("wan", path=str(tmp_path / "nope")))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="Could not read weights file"):
        build_backbone(tiny_config("wan", path=str(bad)))


def test_wan_original_single_file_with_prefix(tmp_path, tiny_wan):
    source = build_backbone(tiny_config("wan", seed=9))
    original = convert.convert_wan_to_original(source.transformer.state_dict())
    file = tmp_path / "wan2.1_t2v_1.3B_repack.safetensors"
    save_file({"model.diffusion_model." + k: v.contiguous() for k, v in original.items()}, str(file))
    loaded = build_backbone(tiny_config("wan", path=str(file)))
    assert same_weights(loaded.transformer, source.transformer)


def test_wan_original_release_folder(tmp_path):
    from diffsynth.models.wan_video_vae import VideoVAE_

    from vsrkit.backbones import runtime
    from vsrkit.backbones.presets import get_preset

    source = build_backbone(tiny_config("wan", seed=11))
    folder = tmp_path / "Wan2.1-T2V-1.3B"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in convert.convert_wan_to_original(source.transformer.state_dict()).items()},
              str(folder / "diffusion_pytorch_model.safetensors"))
    v = get_preset("wan2.1-t2v-1.3b-tiny").vae
    ds_vae = runtime.deterministic_init_(VideoVAE_(dim=v["base_dim"], z_dim=16), seed=4)
    torch.save(ds_vae.state_dict(), folder / "Wan2.1_VAE.pth")
    loaded = build_backbone(tiny_config("wan", path=str(folder)))
    assert same_weights(loaded.transformer, source.transformer)
    # The VAE came from the .pth (DiffSynth/original names), converted.
    assert torch.equal(loaded.vae.model.encoder.conv_in.weight, ds_vae.encoder.conv1.weight)


def test_ltx_single_file_loads_transformer_and_vae(tmp_path):
    source = build_backbone(tiny_config("ltx", seed=13))
    sd = {convert.ltx_transformer_key_to_original(k): v for k, v in source.transformer.state_dict().items()}
    sd.update({convert.ltx_vae091_key_to_original(k): v for k, v in source.vae.model.state_dict().items()})
    file = tmp_path / "ltx-video-2b-v0.9.1.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(file))
    loaded = build_backbone(tiny_config("ltx", path=str(file)))
    assert same_weights(loaded.transformer, source.transformer)
    assert same_weights(loaded.vae.model, source.vae.model)


def test_unknown_transformer_override_is_a_user_error():
    with pytest.raises(UserError, match="transformer_overrides` has keys \\['in_dim'\\]"):
        build_backbone(tiny_config("wan", transformer_overrides={"in_dim": 32}))


# --- LoRA ----------------------------------------------------------------------------------------------


def _lora_pair(out_f: int, in_f: int, rank: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rank, in_f, generator=g), torch.randn(out_f, rank, generator=g)


def test_lora_diffsynth_naming_with_extra_full_tensors(tmp_path, tiny_wan):
    # PS-SR's base.safetensors: peft names on original Wan modules + full patch_embedding / head.head.
    w_q = tiny_wan.transformer.blocks[0].attn1.to_q.weight.clone()
    a, b = _lora_pair(*w_q.shape)
    head = torch.full_like(tiny_wan.transformer.proj_out.weight, 0.5)
    file = tmp_path / "base.safetensors"
    save_file({"blocks.0.self_attn.q.lora_A.default.weight": a, "blocks.0.self_attn.q.lora_B.default.weight": b,
               "head.head.weight": head}, str(file))
    bb = build_backbone(tiny_config("wan", lora_paths=[str(file)], lora_scale=0.5))
    torch.testing.assert_close(bb.transformer.blocks[0].attn1.to_q.weight, w_q + 0.5 * b @ a)
    torch.testing.assert_close(bb.transformer.proj_out.weight, head)
    untouched = tiny_wan.transformer.blocks[1].attn1.to_q.weight
    torch.testing.assert_close(bb.transformer.blocks[1].attn1.to_q.weight, untouched)


def test_lora_diffusers_and_kohya_naming(tmp_path, tiny_wan):
    w_k = tiny_wan.transformer.blocks[1].attn2.to_k.weight.clone()
    w_ffn = tiny_wan.transformer.blocks[0].ffn.net[2].weight.clone()
    a1, b1 = _lora_pair(*w_k.shape, rank=2, seed=1)
    a2, b2 = _lora_pair(*w_ffn.shape, rank=4, seed=2)
    diffusers_file, kohya_file = tmp_path / "d.safetensors", tmp_path / "k.safetensors"
    save_file({"transformer.blocks.1.attn2.to_k.lora_A.weight": a1,
               "transformer.blocks.1.attn2.to_k.lora_B.weight": b1}, str(diffusers_file))
    save_file({"diffusion_model.blocks.0.ffn.2.lora_down.weight": a2,
               "diffusion_model.blocks.0.ffn.2.lora_up.weight": b2,
               "diffusion_model.blocks.0.ffn.2.alpha": torch.tensor(2.0)}, str(kohya_file))
    bb = build_backbone(tiny_config("wan", lora_paths=[str(diffusers_file), str(kohya_file)]))
    torch.testing.assert_close(bb.transformer.blocks[1].attn2.to_k.weight, w_k + b1 @ a1)
    torch.testing.assert_close(bb.transformer.blocks[0].ffn.net[2].weight, w_ffn + (2.0 / 4) * b2 @ a2)


def test_lora_errors_name_the_module(tmp_path):
    file = tmp_path / "odd.safetensors"
    a, b = _lora_pair(4, 4)
    save_file({"blocks.0.nonexistent.lora_A.weight": a, "blocks.0.nonexistent.lora_B.weight": b}, str(file))
    with pytest.raises(WeightsError, match="LoRA module `blocks.0.nonexistent` has no counterpart"):
        build_backbone(tiny_config("wan", lora_paths=[str(file)]))
    half = tmp_path / "half.safetensors"
    save_file({"blocks.0.self_attn.q.lora_A.weight": a}, str(half))
    with pytest.raises(WeightsError, match="only one of its two matrices"):
        build_backbone(tiny_config("wan", lora_paths=[str(half)]))


def _refuse_to_build(monkeypatch):
    from vsrkit.backbones import runtime

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the weights were checked")

    monkeypatch.setattr(runtime, "build_empty", refuse)


@pytest.mark.parametrize("preset,family", [("cogvideox1.5-5b-i2v", "cogvideox"), ("wan2.1-t2v-1.3b", "wan"),
                                           ("ltx-video-2b", "ltx")])
def test_real_preset_without_weights_fails_before_building(monkeypatch, preset, family):
    from vsrkit.backbones import BackboneConfig

    _refuse_to_build(monkeypatch)
    with pytest.raises(WeightsError) as err:
        build_backbone(BackboneConfig(preset=preset, family=family))
    message = str(err.value)
    assert f"preset `{preset}` has no weights: set `backbone.path` to a diffusers folder with `model_index.json`" in message
    assert "`backbone.random_weights=true`" in message and "\n" not in message


def test_real_preset_with_a_transformer_but_no_vae_names_vae_path(monkeypatch, tmp_path):
    from vsrkit.backbones import BackboneConfig

    _refuse_to_build(monkeypatch)
    dit = tmp_path / "diffusion_pytorch_model.safetensors"
    dit.write_bytes(b"")
    with pytest.raises(WeightsError, match=r"hold a transformer but no VAE; set `backbone.vae_path` to a diffusers "
                                           r"`vae/` folder or `Wan2.1_VAE.pth`"):
        build_backbone(BackboneConfig(preset="wan2.1-t2v-1.3b", family="wan", path=str(tmp_path)))


def test_random_weights_switch_is_loud_and_tiny_presets_say_they_are_random(caplog):
    import logging

    from vsrkit.backbones.presets import get_preset

    with caplog.at_level(logging.INFO, logger="vsrkit.backbones.loading"):
        assert loading.check_weights_given(get_preset("wan2.1-t2v-1.3b"), loading.Layout(), True) == ["transformer", "vae"]
        assert loading.check_weights_given(get_preset("wan2.1-t2v-1.3b-tiny"), loading.Layout(), False) == \
            ["transformer", "vae"]
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert ("WARNING", "preset wan2.1-t2v-1.3b: RANDOM transformer and vae weights (backbone.random_weights=true): "
                       "outputs are noise, for speed benchmarks only") in records
    assert ("INFO", "preset wan2.1-t2v-1.3b-tiny: random transformer and vae weights (a tiny test preset: its "
                    "outputs are noise)") in records
    full = loading.Layout(transformer=loading.Source(Path("t")), vae=loading.Source(Path("v")))
    assert loading.check_weights_given(get_preset("wan2.1-t2v-1.3b"), full, True) == []


def test_random_weights_give_noise_prompts_without_a_cache(tmp_path):
    from vsrkit.backbones.presets import get_preset
    from vsrkit.backbones.text import PromptEncoder

    preset = get_preset("cogvideox1.5-5b-i2v")
    with pytest.raises(WeightsError, match="No cached prompt embedding"):
        PromptEncoder(preset, tmp_path)("")
    embeds, mask = PromptEncoder(preset, tmp_path, random=True)("")
    assert tuple(embeds.shape) == (1, 226, 4096) and int(mask.sum()) == 226
    assert not any(tmp_path.iterdir())  # nothing cached: noise is not an embedding


def test_empty_weights_folder_is_called_empty_and_names_the_family_layout(tmp_path):
    with pytest.raises(WeightsError) as err:
        loading.resolve_layout(str(tmp_path), family="cogvideox")
    assert str(err.value) == (f"`backbone.path={tmp_path}` is an empty folder; expected a diffusers folder with "
                              f"`model_index.json`, `transformer/` and `vae/` (the SparkVSR release JiongzeYu/SparkVSR, "
                              f"or zai-org/CogVideoX1.5-5B-I2V).")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(WeightsError, match=r"holds no `model_index.json`.*\(it holds `notes.txt`\)"):
        loading.resolve_layout(str(tmp_path), family="cogvideox")
