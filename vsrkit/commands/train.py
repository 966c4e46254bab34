"""``vsrkit train``: train a method on a data preset (single process or ``accelerate launch``)."""

from __future__ import annotations

import signal
import sys

from vsrkit.errors import UserError


def run(cfg) -> None:
    from omegaconf import OmegaConf

    from vsrkit.data import build_train_dataset
    from vsrkit.engine.build import build_method, hydra_choice, to_dataclass
    from vsrkit.engine.train import run_training

    method_name, backbone_name = hydra_choice("method"), hydra_choice("backbone")
    data_name, degradation_name = hydra_choice("data"), hydra_choice("degradation")
    train_cfg = to_dataclass(cfg.train, "train")
    data_cfg = to_dataclass(cfg.data, f"data `{data_name}`")
    degradation_cfg = to_dataclass(cfg.degradation, f"degradation `{degradation_name}`")
    validation = to_dataclass(cfg.validation, "validation")
    method = build_method(cfg, method_name, backbone_name, cfg.scale)
    if not callable(getattr(method, "training_step", None)):
        raise UserError(f"method `{method_name}` has nothing to train (it has no training_step).")
    clip = method.training_data_spec() if callable(getattr(method, "training_data_spec", None)) else \
        {"num_frames": 1, "hr_size": (64, 64), "frame_multiple": 1, "frame_offset": 0}
    dataset = build_train_dataset(data_cfg, degradation_cfg, scale=cfg.scale, seed=cfg.seed, **clip)
    validate = None
    if validation.lq is not None:
        from vsrkit.engine.run_infer import validation_hook

        validate = validation_hook(validation, cfg.scale, spec=method.window_spec())
        if not train_cfg.validate_every:
            raise UserError("`validation.lq` is set but `train.validate_every` is 0; set train.validate_every=N.")
    result = run_training(method, dataset, train_cfg, seed=cfg.seed, run_config=OmegaConf.to_container(cfg, resolve=True),
                          validate=validate)
    if result.interrupted:
        # Saved, but not done: a scheduler or a shell loop must not take this for a finished run.
        name = signal.Signals(result.signal).name
        print(f"stopped by {name} after step {result.step}; resume with train.resume=true (checkpoint "
              f"{result.checkpoint})")
        sys.exit(128 + result.signal)
    else:
        print(f"trained {result.step} steps; checkpoint {result.checkpoint}; exported weights {result.export_dir}")
