"""Every shipped YAML composes and builds its dataclass (no weights are loaded)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from vsrkit.commands.hydra_app import store_schemas
from vsrkit.engine.build import to_dataclass
from vsrkit.plugins import setup_registries
from vsrkit.presets import preset_names
from vsrkit.registry import BACKBONES, METHODS

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture(scope="module", autouse=True)
def _schemas():
    setup_registries()
    store_schemas()


def _compose(config_name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="vsrkit.conf", version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)


def _combos():
    combos = [("infer", "method", m, ["input=a", "output=b"]) for m in preset_names("method")]
    combos += [("infer", "backbone", b, ["input=a", "output=b"]) for b in preset_names("backbone")]
    combos += [("bench", "data", d, ["data.root=/nowhere"]) for d in preset_names("data")]
    combos += [("train", "degradation", d, ["method=bicubic"]) for d in preset_names("degradation")]
    combos += [("eval", "metric", m, ["pred=a"]) for m in preset_names("metric")]
    return combos


@pytest.mark.parametrize("primary,group,option,extra", _combos())
def test_preset_composes_and_builds(primary, group, option, extra):
    override = f"metric=[{option}]" if group == "metric" else f"{group}={option}"
    cfg = _compose(primary, [override, *extra])
    if group != "metric":  # a multi-select group records no single choice
        assert cfg.hydra.runtime.choices[group] == option
    else:
        assert list(cfg.metric) == [option]
    node = cfg.metric[option] if group == "metric" else cfg[group]
    built = to_dataclass(node, f"{group} `{option}`")
    if option != "none":
        assert built is not None and type(built).__name__.endswith("Config")


def test_every_yaml_file_is_covered():
    groups = {"method", "backbone", "data", "degradation", "metric"}
    files = {p.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml")}
    primaries = {"infer.yaml", "train.yaml", "bench.yaml", "eval.yaml"}
    accelerate = {f for f in files if f.startswith("accelerate/")}  # accelerate's own files, tested in tests/engine
    grouped = {f for f in files if f.split("/")[0] in groups}
    assert files == primaries | accelerate | grouped
    assert len(grouped) == sum(len(preset_names(g)) for g in groups)


def test_every_method_default_backbone_is_compatible():
    for name in preset_names("method"):
        cfg = _compose("infer", [f"method={name}", "input=a", "output=b"])
        family = METHODS.entry(name).meta.get("family")
        backbone = cfg.hydra.runtime.choices["backbone"]
        if family is None:
            assert backbone == "none"
        else:
            assert BACKBONES.entry(backbone).meta.get("family") == family


def test_unknown_key_in_a_preset_override_is_rejected():
    with pytest.raises(Exception, match="nonexistent"):
        _compose("infer", ["method=bicubic", "method.nonexistent=1", "input=a", "output=b"])
