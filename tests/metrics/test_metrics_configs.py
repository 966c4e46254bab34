"""Every conf/metric/*.yaml composes through Hydra (multi-select) and builds its dataclass."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vsrkit.builtins import register_builtins
from vsrkit.registry import METRICS

CONF = Path(__file__).resolve().parents[2] / "conf" / "metric"


def _yaml_names() -> list[str]:
    names = sorted(p.stem for p in CONF.rglob("*.yaml"))
    assert len(names) >= 13
    return names


@pytest.fixture(scope="module")
def compose():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from vsrkit.commands.hydra_app import store_schemas

    register_builtins()
    store_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="vsrkit.conf", version_base="1.3"):
        yield lambda overrides: hydra_compose(config_name=None, overrides=overrides)
    GlobalHydra.instance().clear()


def test_every_registered_metric_has_a_yaml_and_back():
    register_builtins()
    assert _yaml_names() == METRICS.names()


@pytest.mark.parametrize("name", _yaml_names())
def test_yaml_composes_and_builds_its_dataclass(compose, name):
    cfg = compose([f"+metric=[{name}]"])
    assert list(cfg.metric) == [name]
    config_cls = METRICS.get_config(name)
    assert set(cfg.metric[name]) == {f.name for f in dataclasses.fields(config_cls)}
    built = OmegaConf.to_object(cfg.metric[name])
    assert built == config_cls()  # the YAML repeats the dataclass defaults, nothing else
    first_line = (CONF / f"{name}.yaml").read_text().splitlines()[0]
    assert first_line.startswith("# vsrkit eval ") and f"metric=[{name}]" in first_line


def test_multi_select_and_overrides(compose):
    cfg = compose(["+metric=[psnr,ssim,tof]", "metric.psnr.crop_border=8", "metric.psnr.test_y_channel=true"])
    assert list(cfg.metric) == ["psnr", "ssim", "tof"]
    psnr = OmegaConf.to_object(cfg.metric.psnr)
    assert (psnr.crop_border, psnr.test_y_channel) == (8, True)
    with pytest.raises(Exception, match="crop_bordr"):
        compose(["+metric=[psnr]", "metric.psnr.crop_bordr=8"])
    with pytest.raises(Exception, match="crop_border"):
        compose(["+metric=[psnr]", "metric.psnr.crop_border=wide"])


def test_every_metric_class_declares_the_protocol_attributes():
    register_builtins()
    for name in METRICS.names():
        cls = METRICS.get(name)
        for attr in ("higher_is_better", "needs_gt", "temporal"):
            assert isinstance(getattr(cls, attr), bool), (name, attr)
        assert isinstance(cls.name, str) and cls.name == name


@pytest.mark.parametrize("name", ["psnr", "psnry", "ssim", "ssimc", "tof", "ewarp"])
def test_weight_free_metrics_build_from_defaults_and_follow_the_protocol(name):
    import torch

    from vsrkit.metrics.aggregate import build_metric
    from vsrkit.metrics.protocol import Metric

    metric = build_metric(name)
    assert isinstance(metric, Metric)
    frames = torch.rand(3, 3, 64, 64)
    scores = metric(frames, frames.clone())
    assert scores.dtype == torch.float64
    assert scores.shape == ((2,) if metric.temporal else (3,))
