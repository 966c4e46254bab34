"""conf/train.yaml composes into TrainConfig; the accelerate presets load in accelerate."""

from __future__ import annotations

from pathlib import Path

import pytest

from vsrkit.engine.train_config import TrainConfig, register_train_schema

REPO = Path(__file__).resolve().parents[2]


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_module
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    from vsrkit.commands.hydra_app import store_schemas
    from vsrkit.plugins import setup_registries

    setup_registries()
    store_schemas()
    register_train_schema(ConfigStore.instance())
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="vsrkit.conf", version_base="1.3"):
            # data/degradation presets are another package's; this test is about the train node
            return compose(config_name="train", overrides=["method=bicubic", "~data", "~degradation", *overrides])
    finally:
        GlobalHydra.instance().clear()


def test_train_yaml_composes_into_train_config():
    from omegaconf import OmegaConf

    cfg = _compose(["train.max_steps=2", "train.output_dir=/tmp/run", "train.resume=true", "train.optimizer.lr=1e-4"])
    train = OmegaConf.to_object(cfg.train)
    assert isinstance(train, TrainConfig)
    assert (train.max_steps, train.output_dir, train.resume, train.optimizer.lr) == (2, "/tmp/run", True, 1e-4)
    assert cfg.seed == 0
    first_line = (REPO / "conf" / "train.yaml").read_text().splitlines()[0]
    assert first_line.startswith("# vsrkit train method=")


@pytest.mark.parametrize("override", ["train.max_stepz=2", "train.max_steps=abc"])
def test_train_yaml_rejects_unknown_keys_and_bad_types(override):
    from omegaconf.errors import ConfigKeyError, ValidationError
    from hydra.errors import ConfigCompositionException

    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)):
        _compose([override])


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed_zero2", "DEEPSPEED")])
def test_accelerate_presets_load(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    path = REPO / "conf" / "accelerate" / f"{name}.yaml"
    assert path.read_text().startswith("# accelerate launch --config_file conf/accelerate/")
    config = load_config_from_file(str(path))
    assert config.distributed_type.name == kind
    assert config.mixed_precision == "bf16"
    if name == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 1 and config.fsdp_config["fsdp_use_orig_params"] is True
    if name == "deepspeed_zero2":
        assert config.deepspeed_config["zero_stage"] == 2
