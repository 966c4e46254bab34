"""Options of the training engine (:func:`vsrkit.engine.train.run_training`).

Defaults live here and only here; ``conf/train.yaml`` composes this dataclass as its ``train``
node, so ``train.<field>=...`` on the command line is type-checked. No torch import here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from vsrkit.errors import UserError

MIXED_PRECISION = ["no", "fp16", "bf16"]
LR_SCHEDULERS = ["constant", "constant_with_warmup", "linear", "cosine"]


@dataclass
class OptimizerConfig:
    """AdamW settings shared by every optimizer of a run unless the method overrides them.

    A method with several optimizers (e.g. a generator and a fake-score model, as in DMD-style
    distillation) can give each group its own values through
    :class:`vsrkit.methods.protocol.OptimizerGroup`; fields it leaves at ``None`` come from here.

    Args:
        lr: Peak learning rate (reached after warmup).
        betas: AdamW ``(beta1, beta2)``. SparkVSR uses (0.9, 0.95) (sparkvsr.md §8).
        eps: AdamW epsilon.
        weight_decay: Decoupled weight decay. SparkVSR 1e-4 (sparkvsr.md §8), PS-SR 0.01 (pssr.md §5).
    """

    lr: float = 2e-5
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 1e-4

    def __post_init__(self):
        if self.lr <= 0:
            raise UserError(f"`train.optimizer.lr` must be > 0. Got {self.lr}.")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise UserError(f"`train.optimizer.betas` must be two numbers in [0, 1). Got {list(self.betas)}.")
        if self.eps <= 0:
            raise UserError(f"`train.optimizer.eps` must be > 0. Got {self.eps}.")
        if self.weight_decay < 0:
            raise UserError(f"`train.optimizer.weight_decay` must be >= 0. Got {self.weight_decay}.")


@dataclass
class TrainConfig:
    """How a method is trained: steps, batch, precision, optimizer, schedule, EMA, checkpoints.

    The defaults follow SparkVSR's recipe (sparkvsr.md §8: AdamW betas (0.9, 0.95), eps 1e-8,
    weight decay 1e-4, ``constant_with_warmup`` over 100 steps, gradient clipping 0.1, bf16).

    Args:
        output_dir: Run folder: checkpoints, tensorboard logs and the final ``export/``. Must be
            empty (or absent) unless ``resume`` is true. On several nodes it must be shared storage.
        max_steps: Optimizer steps to train for (counted over the whole run, resumes included).
        resume: Continue from the newest complete checkpoint in ``output_dir``.
        batch_size: Clips per process per micro-batch.
        gradient_accumulation_steps: Micro-batches per optimizer step (effective batch =
            ``batch_size * gradient_accumulation_steps * processes``).
        num_workers: DataLoader worker processes per training process (0 decodes in the main one).
        shuffle: Shuffle the dataset each epoch (a permutation seeded by ``seed`` and the epoch).
        mixed_precision: ``"no"``, ``"fp16"`` or ``"bf16"`` autocast through accelerate. This value
            wins over ``accelerate launch --mixed_precision``.
        max_grad_norm: Clip the gradient norm of each optimizer's parameters to this; 0 disables.
        optimizer: AdamW settings (see :class:`OptimizerConfig`).
        lr_scheduler: ``"constant"``, ``"constant_with_warmup"``, ``"linear"`` (warmup, then linear
            decay to 0 at ``max_steps``) or ``"cosine"`` (warmup, then half-cosine to 0).
        lr_warmup_steps: Linear warmup from 0 over this many optimizer steps.
        ema_decay: Keep an exponential moving average of the trainable parameters with this decay
            (e.g. 0.999); ``None`` disables EMA. Validation and the export use the EMA weights.
        ema_start_step: Before this step the average just copies the weights (InfVSR starts its EMA
            at step 200, infvsr.md §3).
        checkpoint_every: Save a checkpoint every this many optimizer steps (0: only on interrupt
            and at the end).
        keep_last: Checkpoints kept in ``output_dir/checkpoints`` (older ones are deleted).
        log_every: Write losses, learning rates and step time to tensorboard every this many steps.
        validate_every: Call the validation hook every this many steps (0: never).
        tensorboard: Write tensorboard event files under ``output_dir/tensorboard``.
        progress_bar: Show a tqdm bar (loss, step time, ETA) on the main process.
        find_unused_parameters: DDP option, needed when a step leaves some trainable parameters
            without gradient. Costs an extra graph traversal per step.
        allow_tf32: Allow TF32 matmuls and convolutions on Ampere+ GPUs (faster fp32; ignored on CPU).
    """

    output_dir: str = "runs/train"
    max_steps: int = 1000
    resume: bool = False
    # data
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    num_workers: int = 2
    shuffle: bool = True
    # numerics and optimizer
    mixed_precision: str = "bf16"
    max_grad_norm: float = 0.1
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = 100
    ema_decay: Optional[float] = None
    ema_start_step: int = 0
    # checkpoints, logging, validation
    checkpoint_every: int = 500
    keep_last: int = 2
    log_every: int = 10
    validate_every: int = 0
    tensorboard: bool = True
    progress_bar: bool = True
    # distribution and speed
    find_unused_parameters: bool = False
    allow_tf32: bool = True

    def __post_init__(self):
        if isinstance(self.optimizer, dict):  # built from a plain mapping rather than OmegaConf
            self.optimizer = OptimizerConfig(**self.optimizer)
        if not self.output_dir:
            raise UserError("`train.output_dir` must be a folder path. Got an empty string.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise UserError(f"`train.mixed_precision` must be one of {MIXED_PRECISION}. Got {self.mixed_precision}.")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise UserError(f"`train.lr_scheduler` must be one of {LR_SCHEDULERS}. Got {self.lr_scheduler}.")
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "keep_last", "log_every"):
            if getattr(self, name) < 1:
                raise UserError(f"`train.{name}` must be >= 1. Got {getattr(self, name)}.")
        for name in ("num_workers", "lr_warmup_steps", "ema_start_step", "checkpoint_every", "validate_every"):
            if getattr(self, name) < 0:
                raise UserError(f"`train.{name}` must be >= 0. Got {getattr(self, name)}.")
        if self.max_grad_norm < 0:
            raise UserError(f"`train.max_grad_norm` must be >= 0 (0 disables clipping). Got {self.max_grad_norm}.")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise UserError(f"`train.ema_decay` must be in (0, 1) or null. Got {self.ema_decay}.")


def register_train_schema(store) -> None:
    """Store :class:`TrainConfig` in Hydra's ConfigStore as ``schema/train/default`` (used by conf/train.yaml)."""
    store.store(group="schema/train", name="default", node=TrainConfig)
