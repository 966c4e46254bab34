"""BackboneConfig, presets, registry entries and the shipped YAML presets."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vsrkit.backbones.config import BackboneConfig
from vsrkit.backbones.presets import PRESETS

CONF = Path(__file__).resolve().parents[2] / "conf" / "backbone"
REAL = ["cogvideox1.5-5b-i2v", "wan2.1-t2v-1.3b", "ltx-video-2b"]


@pytest.mark.parametrize("field,value,message", [
    ("dtype", "int8", "`dtype` must be one of ['fp32', 'bf16', 'fp16']. Got 'int8'."),
    ("attention", "fast", "`attention` must be one of"),
    ("cpu_offload", "disk", "`cpu_offload` must be one of ['none', 'model', 'sequential', 'group']. Got 'disk'."),
    ("compile", "full", "`compile` must be one of ['off', 'regional']. Got 'full'."),
    ("family", "sdxl", "`family` must be one of ['cogvideox', 'wan', 'ltx']. Got 'sdxl'."),
    ("lora_scale", -1.0, "`lora_scale` must be >= 0. Got -1.0."),
])
def test_bad_values_are_named(field, value, message):
    with pytest.raises(ValueError) as err:
        BackboneConfig(**{field: value})
    assert message in str(err.value)


def test_family_must_match_the_preset():
    with pytest.raises(ValueError, match="`family` must be `wan` for preset `wan2.1-t2v-1.3b`. Got 'ltx'."):
        BackboneConfig(preset="wan2.1-t2v-1.3b", family="ltx")


def test_docstring_lists_exactly_the_fields():
    doc = BackboneConfig.__doc__
    args = re.findall(r"^        (\w+):", doc.split("Args:")[1], flags=re.M)
    assert args == [f.name for f in dataclasses.fields(BackboneConfig)]


def test_six_presets_each_real_with_a_tiny_twin():
    assert sorted(PRESETS) == sorted(REAL + [f"{n}-tiny" for n in REAL])
    for name in REAL:
        real, tiny = PRESETS[name], PRESETS[f"{name}-tiny"]
        assert (real.tiny, tiny.tiny) == (False, True)
        assert (real.transformer_class, real.vae_class) == (tiny.transformer_class, tiny.vae_class)
        assert tiny.transformer.get("num_layers") == 2
        assert tiny.transformer.get("num_attention_heads") == 2


def test_registry_lists_all_presets_without_importing_torch():
    code = ("import sys; from vsrkit.builtins import register_builtins; register_builtins();"
            "from vsrkit.registry import BACKBONES; import vsrkit.backbones;"
            "print(','.join(BACKBONES.names())); print(BACKBONES.entry('ltx-video-2b').meta['family']);"
            "print([m for m in ('torch', 'diffusers', 'av') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].split(",") == sorted(PRESETS)
    assert out[1] == "ltx"
    assert out[2] == "[]"


def test_registry_entries_resolve():
    from vsrkit.builtins import register_builtins
    from vsrkit.registry import BACKBONES

    register_builtins()
    for name in PRESETS:
        wrapper = BACKBONES.get(name)
        assert wrapper.family == PRESETS[name].family
        assert BACKBONES.get_config(name) is BackboneConfig
        assert BACKBONES.entry(name).meta["tiny"] is PRESETS[name].tiny


def test_every_yaml_composes_into_a_config():
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from vsrkit.builtins import register_builtins
    from vsrkit.commands.hydra_app import store_schemas

    register_builtins()
    store_schemas()
    files = sorted(CONF.glob("*.yaml"))
    assert len(files) == 7  # six presets + none
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="vsrkit.conf", version_base="1.3"):
        for file in files:
            cfg = compose(config_name="infer", overrides=[f"backbone={file.stem}", "input=a", "output=b"])
            if file.stem == "none":
                assert cfg.backbone is None
                continue
            obj = OmegaConf.to_object(cfg.backbone)
            assert isinstance(obj, BackboneConfig)
            assert obj.preset == file.stem and obj.family == PRESETS[file.stem].family
            assert file.read_text().splitlines()[1].startswith("# vsrkit ")  # usage line first
        cfg = compose(config_name="infer", overrides=["backbone=wan2.1-t2v-1.3b", "backbone.attention=cudnn",
                                                      "backbone.lora_paths=[a.safetensors]", "input=a", "output=b"])
        obj = OmegaConf.to_object(cfg.backbone)
        assert (obj.attention, obj.lora_paths) == ("cudnn", ["a.safetensors"])
        with pytest.raises(Exception, match="nonsense"):
            compose(config_name="infer", overrides=["backbone=wan2.1-t2v-1.3b", "backbone.nonsense=1",
                                                    "input=a", "output=b"])
    GlobalHydra.instance().clear()
