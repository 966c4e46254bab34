"""Exact resume: N steps straight == k steps, stop, resume, N-k steps (bit-exact on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import train_toy as toy  # this folder is on sys.path (pytest prepend import mode)

from vsrkit.engine import checkpoint as ckpt
from vsrkit.engine.train import run_training
from vsrkit.engine.train_config import TrainConfig




def _config(out: Path, **overrides) -> TrainConfig:
    values = dict(output_dir=str(out), max_steps=4, batch_size=2, num_workers=0, mixed_precision="no",
                  checkpoint_every=2, lr_warmup_steps=1, log_every=1, progress_bar=False, tensorboard=False,
                  optimizer={"lr": 1e-2})
    values.update(overrides)
    return TrainConfig(**values)


def _train(out: Path, method_factory, dataset_factory=lambda: toy.ToyClips(n=6), **overrides):
    method = method_factory()
    # 6 samples / batch 2 = 3 batches per epoch: the 4 steps cross an epoch boundary.
    result = run_training(method, dataset_factory(), _config(out, **overrides), seed=3, run_config={"run": "x"})
    return method, result


def _params(method) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in method.state_dict().items()}


CASES = {
    "single_optimizer": (lambda: toy.ToyMethod(), {}),
    "two_optimizers_accum2": (lambda: toy.ToyCriticMethod(critic_every=2), {"gradient_accumulation_steps": 2}),
    "ema": (lambda: toy.ToyMethod(), {"ema_decay": 0.9}),
    # image and video batches mixed by ratio through the dataset's own resumable batch sampler
    "image_video_batches": (lambda: toy.ToyMethod(), {"dataset_factory": lambda: toy.ToyImageVideoClips()}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_resume_is_bit_exact(tmp_path, case):
    factory, overrides = CASES[case]
    overrides = dict(overrides)
    straight, result = _train(tmp_path / "straight", factory, **overrides)
    assert result.step == 4 and not result.interrupted

    first, result = _train(tmp_path / "split", factory, max_steps=2, **overrides)
    assert result.step == 2
    resumed, result = _train(tmp_path / "split", factory, max_steps=4, resume=True, **overrides)
    assert resumed.batch_kinds == straight.batch_kinds[len(first.batch_kinds):]
    assert result.step == 4
    # the resumed run did only steps 2 and 3
    assert sorted({s for s, _ in resumed.calls}) == [2, 3]
    if case == "image_video_batches":  # every batch is all images or all videos, and both kinds occur
        assert all(len(set(kinds)) == 1 for kinds in straight.batch_kinds)
        assert {kinds[0] for kinds in straight.batch_kinds} == {True, False}

    a, b = _params(straight), _params(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the weights did move, so equality is not trivial
    assert any(not torch.equal(a[k], _params(first)[k]) for k in a)
    # the exports agree too (EMA weights in the "ema" case)
    from safetensors.torch import load_file

    ea = load_file(str(tmp_path / "straight" / "export" / "toy.safetensors"))
    eb = load_file(str(tmp_path / "split" / "export" / "toy.safetensors"))
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


def test_resume_without_rng_restore_differs(tmp_path, monkeypatch):
    """Negative control: the bit-exact test depends on the RNG states being restored."""
    straight, _ = _train(tmp_path / "straight", toy.ToyMethod)
    _train(tmp_path / "split", toy.ToyMethod, max_steps=2)
    monkeypatch.setattr(ckpt, "load_rng", lambda directory, rank: True)
    resumed, _ = _train(tmp_path / "split", toy.ToyMethod, max_steps=4, resume=True)
    a, b = _params(straight), _params(resumed)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_sigterm_in_step_saves_and_resume_is_exact(tmp_path):
    """SIGTERM during step 3 (0-based 2): the step finishes, is saved, and the resumed run matches."""
    straight, _ = _train(tmp_path / "straight", toy.ToyMethod, checkpoint_every=0)
    interrupted, result = _train(tmp_path / "split", lambda: toy.ToyMethod(signal_at_step=2), checkpoint_every=0)
    assert result.interrupted and result.step == 3 and result.export_dir is None
    assert ckpt.read_meta(result.checkpoint)["step"] == 3
    assert ckpt.read_meta(result.checkpoint)["reason"] == "interrupt"
    assert not (tmp_path / "split" / "export").exists()
    resumed, result = _train(tmp_path / "split", toy.ToyMethod, checkpoint_every=0, resume=True)
    assert result.step == 4 and not result.interrupted
    assert [s for s, _ in resumed.calls] == [3]
    a, b = _params(straight), _params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_logs_the_step(tmp_path, caplog):
    _train(tmp_path / "run", toy.ToyMethod, max_steps=2)
    with caplog.at_level("INFO", logger="vsrkit.engine.train"):
        _train(tmp_path / "run", toy.ToyMethod, max_steps=4, resume=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "vsrkit.engine.train"]
    expected = f"Resuming from checkpoint step 2 ({tmp_path / 'run' / 'checkpoints' / 'step-00000002'})"
    assert expected in lines


class _SignalledClips(toy.ToyClips):
    """Each DataLoader worker SIGTERMs itself on its first item, as `timeout`, a terminal or a job
    scheduler do when they signal the whole process group rather than the main process alone."""

    def __getitem__(self, index: int) -> dict:
        import os
        import signal

        info = torch.utils.data.get_worker_info()
        if info is not None and not getattr(self, "_signalled", False):
            self._signalled = True  # this worker's own copy of the dataset
            os.kill(os.getpid(), signal.SIGTERM)
        return super().__getitem__(index)


def test_sigterm_to_the_process_group_with_workers_stops_cleanly(tmp_path):
    """SIGTERM reaching the DataLoader workers too (``timeout vsrkit train ...``): the workers leave
    stopping to the main process, which finishes the step, saves and shuts them down."""
    import multiprocessing

    from vsrkit.engine.train import _Trainer

    method = toy.ToyMethod(signal_at_step=2)
    trainer = _Trainer(method, _SignalledClips(n=6), _config(tmp_path / "run", checkpoint_every=0, num_workers=2),
                       3, {}, None)
    result = trainer.run()
    assert result.interrupted and result.step == 3
    assert ckpt.read_meta(result.checkpoint)["reason"] == "interrupt"
    assert [s for s, _ in method.calls] == [0, 1, 2]
    # The workers ignore SIGTERM, so run() itself shuts them down (the trainer is still referenced
    # here): none is left for multiprocessing's exit handler, which would wait on them.
    assert not multiprocessing.active_children()
