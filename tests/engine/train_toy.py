"""A tiny trainable method and dataset for the training-engine tests (CPU, seconds).

Imported by ``test_train_*.py`` and run as a script by the subprocess tests
(``python train_toy.py ...`` or ``accelerate launch ... train_toy.py ...``).

The method's ``training_step`` draws from all three global RNGs (numpy crop offsets, python
flips, torch dropout), so a resume that does not restore them is caught by the bit-exact test.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make `vsrkit` importable from a source checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vsrkit.methods.protocol import OptimizerGroup, WindowSpec  # noqa: E402


class ToyClips(torch.utils.data.Dataset):
    """``n`` random clips following the dataset contract, deterministic per (seed, epoch, index).

    Args:
        n: Number of samples.
        seed: Dataset seed.
        frames: T of every clip.
        hr: HR edge (H = W).
        scale: HR / LR.
    """

    def __init__(self, n: int = 8, seed: int = 0, frames: int = 3, hr: int = 16, scale: int = 2):
        self.n, self.seed, self.frames, self.hr, self.scale = n, seed, frames, hr, scale
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 100_000 + self.epoch * 1_000 + index)
        hq = torch.rand(3, self.frames, self.hr, self.hr, generator=g) * 2 - 1
        lq = F.avg_pool3d(hq.unsqueeze(0), (1, self.scale, self.scale)).squeeze(0)
        return {"hq": hq, "lq": lq, "prompt": "", "is_image": False, "index": index}


class ToyImageVideoClips(ToyClips):
    """Videos (``T = frames``) then images (``T = 1``), batched by kind through vsrkit.data's sampler.

    Args:
        num_videos: Video items (indices first).
        num_images: Image items (indices after the videos).
        image_ratio: Share of image batches.
        seed: Dataset seed.
    """

    def __init__(self, num_videos: int = 6, num_images: int = 6, image_ratio: float = 0.5, seed: int = 0):
        super().__init__(n=num_videos + num_images, seed=seed)
        self.num_videos, self.num_images, self.image_ratio = num_videos, num_images, image_ratio

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        if index >= self.num_videos:
            item["hq"], item["lq"], item["is_image"] = item["hq"][:, :1], item["lq"][:, :1], True
        return item

    def batch_sampler(self, batch_size: int, *, num_replicas: int = 1, rank: int = 0, shuffle: bool = True):
        from vsrkit.data.sampler import ImageVideoBatchSampler

        return ImageVideoBatchSampler(self.num_videos, self.num_images, batch_size, self.image_ratio,
                                      num_replicas=num_replicas, rank=rank, seed=self.seed, shuffle=shuffle)


class ToyMethod:
    """A 2-layer conv SR net (``kind="conv"``) or a single linear 1x1 conv (``kind="linear"``).

    Args:
        kind: ``"conv"`` (dropout, random crops and flips from the global RNGs) or ``"linear"``
            (deterministic: for the gradient-accumulation test).
        scale: HR / LR.
        critic: Add a second optimizer group ``"critic"`` (stepping every ``critic_every`` steps)
            whose loss also reads the generator output, as a fake-score model does.
        critic_every: See ``critic``.
        sleep: Seconds to sleep in each training step (subprocess tests time their signals).
        steps_file: Append ``"<step> <optimizer> <sample indices>"`` per training step to this file.
        record: Keep a copy of the generator's weights as each training step starts (``snapshots``).
        signal_at_step: Send SIGTERM to this process during the training step of this step.
    """

    def __init__(self, kind: str = "conv", scale: int = 2, critic: bool = False, critic_every: int = 1,
                 sleep: float = 0.0, steps_file: str | None = None, record: bool = False,
                 signal_at_step: int | None = None):
        self.kind, self.scale, self.critic, self.critic_every = kind, scale, critic, critic_every
        self.sleep, self.steps_file, self.record, self.signal_at_step = sleep, steps_file, record, signal_at_step
        self.snapshots: list[dict] = []
        self.calls: list[tuple[int, str]] = []
        self.batch_kinds: list[tuple[bool, ...]] = []
        self.net = None
        self.critic_net = None
        self.device = torch.device("cpu")

    # --- inference side (Method protocol) ---
    def window_spec(self) -> WindowSpec:
        return WindowSpec(scale=self.scale)

    def load(self, device, dtype) -> None:
        self.setup_training(device)

    def upscale(self, lq, context=None):
        b, c, t, h, w = lq.shape
        x = lq.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        up = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        y = (up + self.net(up)).clamp(-1, 1)
        return y.reshape(b, t, c, h * self.scale, w * self.scale).permute(0, 2, 1, 3, 4)

    # --- training side (TrainableMethod protocol) ---
    def setup_training(self, device) -> None:
        self.device = torch.device(device)
        if self.kind == "linear":
            self.net = torch.nn.Conv2d(3, 3, 1)
        else:
            self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                           torch.nn.Dropout(0.3), torch.nn.Conv2d(8, 3, 3, padding=1))
        self.net.to(self.device)
        if self.critic:
            self.critic_net = torch.nn.Conv2d(3, 1, 3, padding=1).to(self.device)

    def trainable_parameters(self) -> list:
        return list(self.net.parameters())

    def training_modules(self) -> dict:
        return {"net": self.net}

    def _generator_loss(self, batch):
        lq, hq = batch["lq"], batch["hq"]
        if self.kind == "conv":
            # random crop (numpy RNG) and flip (python RNG), aligned between LR and HR
            h = lq.shape[-1]
            off = int(np.random.randint(0, h // 2 + 1))
            size = h // 2
            lq = lq[..., off:off + size, off:off + size]
            hq = hq[..., off * self.scale:(off + size) * self.scale, off * self.scale:(off + size) * self.scale]
            if random.random() < 0.5:
                lq, hq = lq.flip(-1), hq.flip(-1)
        pred = self.upscale(lq)
        return pred, F.mse_loss(pred, hq)

    def training_step(self, batch: dict, optimizer_name: str = "main"):
        if self.sleep:
            time.sleep(self.sleep)
        self.calls.append((batch["step"], optimizer_name))
        self.batch_kinds.append(tuple(bool(x) for x in batch["is_image"]))
        if self.record and optimizer_name in ("main", "generator"):
            self.snapshots.append({k: v.detach().clone() for k, v in self.net.state_dict().items()})
        if self.signal_at_step is not None and batch["step"] == self.signal_at_step:
            os.kill(os.getpid(), signal.SIGTERM)
        if self.steps_file:
            indices = ",".join(str(int(i)) for i in batch["index"])
            with open(self.steps_file, "a") as f:
                f.write(f"{batch['step']} {optimizer_name} {indices}\n")
        if optimizer_name == "critic":
            with torch.no_grad():
                pred, _ = self._generator_loss(batch)
            score = self.critic_net(pred[:, :, 0])
            loss = (score - 0.5).pow(2).mean()
            return loss, {"critic_score": float(score.detach().mean())}
        pred, loss = self._generator_loss(batch)
        return loss, {"mse": float(loss.detach())}

    def state_dict(self) -> dict:
        state = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        if self.critic_net is not None:
            state.update({f"critic.{k}": v for k, v in self.critic_net.state_dict().items()})
        return state

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        if self.critic_net is not None:
            self.critic_net.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("critic.")})

    def export(self, directory: str) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()},
                  os.path.join(directory, "toy.safetensors"))


class ToyCriticMethod(ToyMethod):
    """:class:`ToyMethod` with a second optimizer group, ``"critic"`` (the multi-optimizer path)."""

    def __init__(self, critic_every: int = 1, **kwargs):
        super().__init__(critic=True, critic_every=critic_every, **kwargs)

    def optimizer_groups(self) -> list:
        return [OptimizerGroup("generator", list(self.net.parameters())),
                OptimizerGroup("critic", list(self.critic_net.parameters()), lr=1e-2, every=self.critic_every,
                               ema=False)]


def main(argv: list[str] | None = None) -> int:
    """Train the toy method; used by the subprocess tests."""
    from vsrkit.engine.train import run_training
    from vsrkit.engine.train_config import TrainConfig

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--steps-file", default=None)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--accum", type=int, default=1)
    parser.add_argument("--mixed-precision", default="no")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--critic-every", type=int, default=0, help="add the critic group (0: single optimizer)")
    parser.add_argument("--ema-decay", type=float, default=None)
    parser.add_argument("--dump-params", action="store_true", help="write params-rank<r>.pt after training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)

    steps_file = None
    if args.steps_file:
        rank = int(os.environ.get("RANK", "0"))
        steps_file = f"{args.steps_file}.rank{rank}"
    if args.critic_every:
        method = ToyCriticMethod(critic_every=args.critic_every, sleep=args.sleep, steps_file=steps_file)
    else:
        method = ToyMethod(sleep=args.sleep, steps_file=steps_file)
    config = TrainConfig(output_dir=args.out, max_steps=args.max_steps, resume=args.resume,
                         batch_size=args.batch_size, gradient_accumulation_steps=args.accum, num_workers=0,
                         mixed_precision=args.mixed_precision, checkpoint_every=args.checkpoint_every,
                         lr_warmup_steps=1, log_every=1, progress_bar=False, tensorboard=False,
                         ema_decay=args.ema_decay, optimizer={"lr": 1e-2})
    result = run_training(method, ToyClips(n=args.samples), config, seed=0, run_config={"toy": True})
    if args.dump_params:
        rank = int(os.environ.get("RANK", "0"))
        torch.save({k: v.detach().cpu() for k, v in method.state_dict().items()},
                   Path(args.out) / f"params-rank{rank}.pt")
    logging.getLogger("train_toy").info("result %s", json.dumps({"step": result.step,
                                                                "interrupted": result.interrupted}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
