"""The engine on the `demo` preset: real clips decoded in a worker and degraded on the fly."""

from __future__ import annotations

from pathlib import Path

import torch
import train_toy as toy  # this folder is on sys.path (pytest prepend import mode)

from vsrkit.engine.train import run_training
from vsrkit.engine.train_config import TrainConfig




def _demo_dataset(root: Path):
    from omegaconf import OmegaConf

    from vsrkit.builtins import register_builtins
    from vsrkit.data import build_train_dataset
    from vsrkit.registry import DATASETS, DEGRADATIONS

    register_builtins()
    repo = Path(__file__).resolve().parents[2]
    schema = OmegaConf.structured(DATASETS.get_config("demo"))
    data = OmegaConf.to_object(OmegaConf.merge(schema, OmegaConf.load(repo / "conf/data/demo.yaml").data,
                                               {"root": str(root)}))
    # The full preset, codec steps included: exact resume needs items that depend only on
    # (seed, epoch, index), which vsrkit.data's deterministic encoder settings guarantee.
    degradation = OmegaConf.to_object(OmegaConf.structured(DEGRADATIONS.get_config("realbasicvsr")))
    return build_train_dataset(data, degradation, num_frames=5, hr_size=(64, 64), scale=2, seed=0)


def test_demo_data_trains_and_resumes_exactly(real_data, tmp_path):
    def train(out, max_steps, resume=False):
        method = toy.ToyMethod()
        config = TrainConfig(output_dir=str(out), max_steps=max_steps, resume=resume, batch_size=1, num_workers=1,
                             mixed_precision="no", checkpoint_every=2, lr_warmup_steps=1, progress_bar=False,
                             tensorboard=False)
        result = run_training(method, _demo_dataset(real_data), config, seed=0)
        return method, result

    straight, _ = train(tmp_path / "straight", 3)
    train(tmp_path / "split", 2)
    resumed, result = train(tmp_path / "split", 3, resume=True)
    assert result.step == 3 and [s for s, _ in resumed.calls] == [2]
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
