"""Optimizers and learning-rate schedules of a training run."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vsrkit.engine.train_config import TrainConfig
from vsrkit.errors import UserError
from vsrkit.methods.protocol import OptimizerGroup


@dataclass
class ResolvedGroup:
    """An :class:`OptimizerGroup` with the run's defaults filled in."""

    name: str
    params: list
    lr: float
    betas: tuple
    eps: float
    weight_decay: float
    max_grad_norm: float
    every: int
    start_step: int
    ema: bool
    repeat: int = 1

    def is_due(self, step: int) -> bool:
        """Whether this group steps on training step ``step`` (0-based: steps done before it)."""
        return step >= self.start_step and (step - self.start_step) % self.every == 0


def method_groups(method, config: TrainConfig) -> list[ResolvedGroup]:
    """The method's optimizer groups (``optimizer_groups()`` or one group of ``trainable_parameters()``).

    Raises:
        UserError: a group has no trainable parameters, two groups share a parameter, or names repeat.
    """
    method_name = type(method).__name__
    if callable(getattr(method, "optimizer_groups", None)):
        groups = list(method.optimizer_groups())
    else:
        groups = [OptimizerGroup(name="main", params=list(method.trainable_parameters()))]
    if not groups:
        raise UserError(f"{method_name}.optimizer_groups() returned no groups; nothing would train.")
    opt = config.optimizer
    resolved, seen, names = [], set(), set()
    for group in groups:
        if group.name in names:
            raise UserError(f"{method_name} has two optimizer groups named `{group.name}`.")
        names.add(group.name)
        params = [p for p in group.params if p.requires_grad]
        if not params:
            raise UserError(f"{method_name}: optimizer group `{group.name}` has no parameters with requires_grad=True.")
        for p in params:
            if id(p) in seen:
                raise UserError(f"{method_name}: a parameter appears in optimizer group `{group.name}` and in an "
                                "earlier group; each parameter must belong to one group.")
            seen.add(id(p))
        resolved.append(ResolvedGroup(
            name=group.name,
            params=params,
            lr=opt.lr if group.lr is None else float(group.lr),
            betas=tuple(opt.betas if group.betas is None else group.betas),
            eps=opt.eps,
            weight_decay=opt.weight_decay if group.weight_decay is None else float(group.weight_decay),
            max_grad_norm=config.max_grad_norm if group.max_grad_norm is None else float(group.max_grad_norm),
            every=group.every,
            start_step=group.start_step,
            ema=group.ema,
            repeat=group.repeat,
        ))
    return resolved


def build_optimizer(group: ResolvedGroup) -> torch.optim.Optimizer:
    """AdamW over the group's parameters (foreach implementation, deterministic on CPU)."""
    return torch.optim.AdamW(group.params, lr=group.lr, betas=group.betas, eps=group.eps,
                             weight_decay=group.weight_decay)


def lr_lambda(name: str, warmup_steps: int, total_steps: int):
    """Multiplier of the peak lr after ``n`` scheduler steps.

    Warmup is linear from 0 (``n / warmup``) as in transformers' ``get_constant_schedule_with_warmup``
    (the lr of the very first step is 0); SparkVSR's DeepSpeed WarmupLR ramps linearly the same way
    over 100 steps (sparkvsr.md §8).
    """

    def constant(n: int) -> float:
        return 1.0

    def warmup(n: int) -> float:
        if n < warmup_steps:
            return n / max(1, warmup_steps)
        return 1.0

    def linear(n: int) -> float:
        if n < warmup_steps:
            return n / max(1, warmup_steps)
        return max(0.0, (total_steps - n) / max(1, total_steps - warmup_steps))

    def cosine(n: int) -> float:
        if n < warmup_steps:
            return n / max(1, warmup_steps)
        progress = min(1.0, (n - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return {"constant": constant, "constant_with_warmup": warmup, "linear": linear, "cosine": cosine}[name]


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, group: ResolvedGroup):
    """LambdaLR stepping once per optimizer step of ``group``; its horizon is the group's step count
    (``repeat`` optimizer steps per training step it is due on)."""
    total = max(1, -(-(config.max_steps - group.start_step) // group.every) * group.repeat)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config.lr_scheduler, config.lr_warmup_steps, total))
