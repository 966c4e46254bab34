"""Training engine behaviour on CPU: folders, checkpoints, pruning, EMA, accumulation, optimizers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import train_toy as toy  # this folder is on sys.path (pytest prepend import mode)
from safetensors.torch import load_file

from vsrkit.engine import checkpoint as ckpt
from vsrkit.engine.ema import EMA
from vsrkit.engine.optim import lr_lambda
from vsrkit.engine.sampler import ResumableSampler
from vsrkit.engine.train import run_training
from vsrkit.engine.train_config import TrainConfig
from vsrkit.errors import UserError




def _config(out: Path, **overrides) -> TrainConfig:
    values = dict(output_dir=str(out), max_steps=3, batch_size=2, num_workers=0, mixed_precision="no",
                  checkpoint_every=0, lr_warmup_steps=0, lr_scheduler="constant", log_every=1,
                  progress_bar=False, tensorboard=False, optimizer={"lr": 1e-2})
    values.update(overrides)
    return TrainConfig(**values)


def _train(out: Path, method=None, dataset=None, **overrides):
    method = method or toy.ToyMethod()
    result = run_training(method, dataset or toy.ToyClips(n=8), _config(out, **overrides), seed=0,
                          run_config={"method": {"name": "toy"}, "train": {"max_steps": overrides.get("max_steps", 3)}})
    return method, result


# --- run folder ----------------------------------------------------------------------------


def test_non_empty_output_dir_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"`train.output_dir` .*run is not empty\. Pass train.resume=true"):
        _train(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["notes.txt"]


def test_resume_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"`train.resume=true` but `train.output_dir` .* holds no complete checkpoint"):
        _train(tmp_path / "absent", resume=True)
    (tmp_path / "run" / "checkpoints" / ".tmp-step-00000002").mkdir(parents=True)  # interrupted save only
    with pytest.raises(UserError, match="holds no complete checkpoint"):
        _train(tmp_path / "run", resume=True)


def test_empty_existing_output_dir_is_accepted(tmp_path):
    (tmp_path / "run").mkdir()
    _, result = _train(tmp_path / "run", max_steps=1)
    assert result.step == 1 and (tmp_path / "run" / "export" / "toy.safetensors").is_file()


# --- checkpoints ---------------------------------------------------------------------------


def test_checkpoint_contents(tmp_path):
    method, result = _train(tmp_path / "run", max_steps=3, checkpoint_every=2, keep_last=5)
    found = ckpt.list_checkpoints(tmp_path / "run")
    assert [step for step, _ in found] == [2, 3]  # periodic at 2, final at 3
    directory = found[0][1]
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["step"] == 2 and meta["reason"] == "periodic" and meta["groups"] == ["main"]
    assert meta["data"] == {"epoch": 0, "batch_in_epoch": 2}  # 8 samples / batch 2 = 4 batches per epoch
    assert meta["config"] == {"method": {"name": "toy"}, "train": {"max_steps": 3}}
    assert meta["train"]["batch_size"] == 2 and meta["world_size"] == 1
    weights = load_file(str(directory / "model.safetensors"))
    assert sorted(weights) == sorted(method.state_dict())
    assert not any(k.startswith(("module.", "_orig_mod.")) or ".module." in k for k in weights)
    state = torch.load(directory / "training_state.pt", weights_only=True)
    assert state["optimizers"]["main"]["state"][0]["step"].item() == 2.0
    assert state["schedulers"]["main"]["last_epoch"] == 2
    assert (directory / "rng" / "rank-00000.pt").is_file()
    assert result.checkpoint == found[-1][1]
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))


def test_keep_last_prunes_oldest(tmp_path):
    _train(tmp_path / "run", max_steps=5, checkpoint_every=1, keep_last=2)
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path / "run")] == [4, 5]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000004", "step-00000005"]


def test_newest_checkpoint_comes_from_meta_not_folder_name(tmp_path):
    _train(tmp_path / "run", max_steps=2, checkpoint_every=1, keep_last=5)
    root = tmp_path / "run" / "checkpoints"
    (root / "step-00000001").rename(root / "zzz-renamed")  # sorts last by name, holds step 1
    assert ckpt.latest_checkpoint(tmp_path / "run") == root / "step-00000002"


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = ckpt.capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(1)
    ckpt.restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


# --- EMA -----------------------------------------------------------------------------------


def test_ema_follows_the_recursion_and_is_exported(tmp_path):
    method = toy.ToyMethod(record=True)
    _, result = _train(tmp_path / "run", method=method, max_steps=3, ema_decay=0.5)
    raw_final = {k: v.detach().clone() for k, v in method.net.state_dict().items()}
    # snapshots[i] = weights before step i; ema_0 = initial weights
    weights = method.snapshots + [raw_final]
    expected = {k: v.clone() for k, v in weights[0].items()}
    for w in weights[1:]:
        for k in expected:
            expected[k] = 0.5 * expected[k] + 0.5 * w[k]
    exported = load_file(str(result.export_dir / "toy.safetensors"))
    for k in expected:
        torch.testing.assert_close(exported[k], expected[k], rtol=0, atol=1e-6)
        assert not torch.equal(exported[k], raw_final[k])  # the average lags the weights
    # the method itself keeps its raw weights after the export
    assert all(torch.equal(method.net.state_dict()[k], raw_final[k]) for k in raw_final)
    assert (result.checkpoint / "ema.safetensors").is_file()


def test_ema_start_step_copies_before_averaging():
    p = torch.nn.Parameter(torch.zeros(3))
    ema = EMA([p], decay=0.9, start_step=2)
    with torch.no_grad():
        p.fill_(1.0)
    ema.update(1)
    assert torch.equal(ema.shadow[0], torch.ones(3))
    with torch.no_grad():
        p.fill_(2.0)
    ema.update(2)
    torch.testing.assert_close(ema.shadow[0], torch.full((3,), 1.1))
    with ema.swapped_in():
        assert torch.equal(p.detach(), ema.shadow[0])
    assert torch.equal(p.detach(), torch.full((3,), 2.0))


# --- gradient accumulation -----------------------------------------------------------------


def test_accumulation_equals_larger_batch(tmp_path):
    def one_step(out, batch_size, accum):
        method = toy.ToyMethod(kind="linear")
        _train(out, method=method, max_steps=1, batch_size=batch_size, gradient_accumulation_steps=accum,
               max_grad_norm=0.0)
        return {k: v.detach().clone() for k, v in method.net.state_dict().items()}

    big = one_step(tmp_path / "b2", 2, 1)
    accumulated = one_step(tmp_path / "b1a2", 1, 2)
    single = one_step(tmp_path / "b1", 1, 1)
    for k in big:
        torch.testing.assert_close(accumulated[k], big[k], rtol=1e-5, atol=1e-6)
    assert any((single[k] - big[k]).abs().max() > 1e-4 for k in big)  # the second sample mattered


# --- several optimizers ----------------------------------------------------------------------


def test_two_optimizer_groups_step_on_their_schedule(tmp_path):
    # the engine seeds with set_seed(0 + process index) right before setup_training: replicate the init
    reference = toy.ToyCriticMethod(critic_every=2)
    torch.manual_seed(0)
    reference.setup_training("cpu")
    critic_before = {k: v.clone() for k, v in reference.critic_net.state_dict().items()}
    method2, result = _train(tmp_path / "run", method=toy.ToyCriticMethod(critic_every=2, record=True), max_steps=4)
    assert all(torch.equal(method2.snapshots[0][k], v) for k, v in reference.net.state_dict().items())
    assert method2.calls == [(0, "generator"), (0, "critic"), (1, "generator"), (2, "generator"), (2, "critic"),
                             (3, "generator")]
    state = torch.load(result.checkpoint / "training_state.pt", weights_only=True)
    assert state["optimizers"]["generator"]["state"][0]["step"].item() == 4.0
    assert state["optimizers"]["critic"]["state"][0]["step"].item() == 2.0
    assert state["optimizers"]["critic"]["param_groups"][0]["lr"] == 1e-2
    assert any(not torch.equal(method2.critic_net.state_dict()[k], critic_before[k]) for k in critic_before)


def test_a_repeated_group_steps_several_times_on_the_same_batch(tmp_path):
    # PS-SR's draft: one optimizer, one step per draft timestep of the same clip (repeat=3).
    from vsrkit.methods.protocol import OptimizerGroup

    class Repeated(toy.ToyMethod):
        def optimizer_groups(self):
            return [OptimizerGroup("draft", list(self.net.parameters()), repeat=3)]

        def training_step(self, batch, optimizer_name="main"):
            self.calls.append((batch["step"], batch["repeat"], tuple(int(i) for i in batch["index"])))
            self.snapshots.append({k: v.detach().clone() for k, v in self.net.state_dict().items()})
            pred, loss = self._generator_loss(batch)
            return loss, {f"mse_{batch['repeat']}": float(loss.detach())}

    method, result = _train(tmp_path / "run", method=Repeated(kind="linear"), max_steps=2, lr_scheduler="linear")
    assert [(s, r) for s, r, _ in method.calls] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert len({i for _, _, i in method.calls[:3]}) == 1 and method.calls[0][2] != method.calls[3][2]
    # Each repeat sees the weights its predecessor's optimizer step left.
    for before, after in zip(method.snapshots, method.snapshots[1:]):
        assert any(not torch.equal(before[k], after[k]) for k in before)
    state = torch.load(result.checkpoint / "training_state.pt", weights_only=True)
    assert state["optimizers"]["draft"]["state"][0]["step"].item() == 6.0
    # The lr schedule counts optimizer steps: linear decay over 2 x 3 of them.
    assert state["schedulers"]["draft"]["last_epoch"] == 6
    assert state["optimizers"]["draft"]["param_groups"][0]["lr"] == pytest.approx(0.0)


def test_overlapping_groups_are_refused(tmp_path):
    from vsrkit.methods.protocol import OptimizerGroup

    class Overlap(toy.ToyCriticMethod):
        def optimizer_groups(self):
            shared = list(self.net.parameters())
            return [OptimizerGroup("a", shared), OptimizerGroup("b", shared[:1])]

    with pytest.raises(UserError, match="a parameter appears in optimizer group `b` and in an earlier group"):
        _train(tmp_path / "run", method=Overlap())


# --- validation, layout checks, schedules, sampler ------------------------------------------


def test_validation_hook_runs_every_n_steps(tmp_path):
    seen = []

    def validate(method, step):
        seen.append((step, torch.is_grad_enabled()))
        return {"psnr": 20.0 + step}

    run_training(toy.ToyMethod(), toy.ToyClips(n=8), _config(tmp_path / "run", max_steps=4, validate_every=2),
                 validate=validate)
    assert seen == [(2, False), (4, False)]


def test_batch_outside_range_is_a_user_error(tmp_path):
    class Bright(toy.ToyClips):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            item["hq"] = item["hq"] * 255
            return item

    with pytest.raises(UserError, match=r"batch `hq` must lie in \[-1, 1\]"):
        _train(tmp_path / "run", dataset=Bright(n=8))


def test_tensorboard_scalars_are_written(tmp_path):
    _train(tmp_path / "run", max_steps=2, tensorboard=True, progress_bar=True)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "mse", "lr/main", "time/step_s", "grad_norm/main"} <= tags
    assert [e.step for e in events.Scalars("loss")] == [1, 2]


def test_lr_schedules():
    warm = lr_lambda("constant_with_warmup", 100, 1000)
    assert [warm(0), warm(50), warm(100), warm(900)] == [0.0, 0.5, 1.0, 1.0]
    linear = lr_lambda("linear", 10, 110)
    assert [linear(5), linear(10), linear(60), linear(110)] == [0.5, 1.0, 0.5, 0.0]
    cosine = lr_lambda("cosine", 0, 100)
    assert cosine(0) == 1.0 and abs(cosine(50) - 0.5) < 1e-12 and abs(cosine(100)) < 1e-12


def test_sampler_shards_and_resumes():
    ranks = [ResumableSampler(10, batch_size=2, num_replicas=2, rank=r, seed=1) for r in (0, 1)]
    epoch = [s.epoch_indices(0) for s in ranks]
    assert len(epoch[0]) == len(epoch[1]) == 4  # 10 // (2*2) = 2 batches of 2 per rank
    assert not set(epoch[0]) & set(epoch[1])
    assert ranks[0].epoch_indices(1) != epoch[0]  # reshuffled per epoch
    ranks[0].set_position(0, 1)
    assert list(iter(ranks[0])) == epoch[0][2:]


def test_train_config_rejects_bad_values():
    with pytest.raises(UserError, match=r"`train.mixed_precision` must be one of \['no', 'fp16', 'bf16'\]\. Got fp8\."):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(UserError, match=r"`train.ema_decay` must be in \(0, 1\) or null\. Got 1\.0\."):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(UserError, match=r"`train.optimizer.betas` must be two numbers"):
        TrainConfig(optimizer={"betas": [0.9]})


def test_dataset_smaller_than_a_batch_is_refused_before_setup(tmp_path):
    method = toy.ToyMethod()
    with pytest.raises(UserError, match=r"The training dataset has 1 samples; one batch needs train.batch_size x "
                                         r"processes = 2 x 1"):
        _train(tmp_path / "run", method=method, dataset=toy.ToyClips(n=1))
    assert method.net is None  # nothing was built
    assert not (tmp_path / "run").exists()


def test_resume_warns_about_changed_config(tmp_path, caplog):
    _train(tmp_path / "run", max_steps=1)
    with caplog.at_level("WARNING", logger="vsrkit.engine.train"):
        run_training(toy.ToyMethod(), toy.ToyClips(n=8), _config(tmp_path / "run", max_steps=2, resume=True),
                     run_config={"method": {"name": "other"}, "train": {"max_steps": 2}})
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["The config differs from the checkpoint's in 1 key(s): method.name: toy -> other"]
