"""The training loop every method shares (accelerate: DDP, FSDP, DeepSpeed ZeRO-2; bf16; accumulation).

The method owns what a step computes (:class:`vsrkit.methods.protocol.TrainableMethod`); this
module owns the rest: data order, devices, mixed precision, gradient accumulation and clipping,
optimizers, lr schedules, EMA, logging, validation calls, checkpoints, resume, interrupts and the
final export. It never looks at the method's name.

Launch with ``python`` (one process) or ``accelerate launch --config_file conf/accelerate/<preset>.yaml``
(one process per GPU, any number of nodes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch.utils.data import DataLoader

from vsrkit.engine import checkpoint as ckpt
from vsrkit.engine.ema import EMA
from vsrkit.engine.optim import ResolvedGroup, build_optimizer, build_scheduler, method_groups
from vsrkit.engine.progress import TrainProgress, format_duration
from vsrkit.engine.sampler import ResumableSampler
from vsrkit.engine.train_config import TrainConfig
from vsrkit.errors import UserError

logger = logging.getLogger(__name__)

ValidateFn = Callable[[Any, int], "Mapping[str, float] | None"]
"""``validate(method, step) -> {metric: value}``: called on every process (under ``torch.no_grad``,
with the EMA weights swapped in when EMA is on); the main process logs what it returns."""

_REQUIRED = ("setup_training", "training_step", "state_dict", "load_state_dict", "export")
_IGNORED_CONFIG_CHANGES = {"train.resume", "train.max_steps", "train.output_dir"}


@dataclass
class TrainResult:
    """What :func:`run_training` did.

    Args:
        output_dir: The run folder.
        step: Optimizer steps done when it returned.
        checkpoint: The newest checkpoint folder.
        export_dir: ``output_dir/export`` once training reached ``max_steps``; None if interrupted.
        interrupted: Whether SIGINT/SIGTERM ended the run early (after saving a checkpoint).
        signal: The signal that ended it (``signal.SIGINT`` / ``SIGTERM``; SIGTERM on processes that
            only heard of the stop from another one); None when it finished.
    """

    output_dir: Path
    step: int
    checkpoint: Path | None
    export_dir: Path | None
    interrupted: bool
    signal: int | None = None


class _StepModule(torch.nn.Module):
    """What accelerate wraps (DDP/FSDP/DeepSpeed): one optimizer group's parameters, whose forward
    is the method's training step.

    DDP and DeepSpeed ZeRO-2 only need the parameters (held in a ParameterList, same objects as the
    method's, so the method's own modules see every update). FSDP must shard the modules the step
    runs, so it holds ``method.training_modules()`` instead. The method itself is kept out of the
    module tree so its frozen weights are neither broadcast nor wrapped.
    """

    def __init__(self, method, group: ResolvedGroup, modules: dict | None, pass_group_name: bool,
                 autocast: tuple[str, torch.dtype] | None = None):
        super().__init__()
        object.__setattr__(self, "_method", method)
        self.group_name = group.name
        self.pass_group_name = pass_group_name
        self.autocast = autocast
        if modules is not None:
            self.held = torch.nn.ModuleDict(modules)
        else:
            self.params = torch.nn.ParameterList(group.params)

    def forward(self, batch):
        context = torch.autocast(self.autocast[0], dtype=self.autocast[1]) if self.autocast else contextlib.nullcontext()
        with context:
            if isinstance(batch, _Call):
                return batch.fn()
            if self.pass_group_name:
                return self._method.training_step(batch, self.group_name)
            return self._method.training_step(batch)


class _Call:
    """Passed to a wrapped :class:`_StepModule` instead of a batch: run ``fn()`` inside its forward.

    Validation calls the method's modules directly. Under FSDP their weights are shards outside the
    wrapper's forward (inside it the top-level modules' own weights are gathered, and each wrapped
    block gathers its own when called), and under DeepSpeed the trained weights are bf16/fp16 and
    the step's autocast is needed; so validation runs as a forward of the wrapped module, exactly as
    the training step does.
    """

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn


def fsdp_wrap_policy(policy: Callable | None, top_modules: list[torch.nn.Module]) -> Callable | None:
    """FSDP1 auto-wrap ``policy`` that never wraps the modules a method holds references to.

    A method calls its training modules directly (``self.transformer(...)``), not through the
    FSDP wrappers accelerate would put around them, so a wrapped top-level module would keep its
    own weights sharded in every forward ("mat2 must be a matrix"). Its blocks are wrapped as the
    policy says (the module's forward calls them through the replaced children); the top-level
    modules' remaining weights belong to the root wrapper, gathered for each training step.

    Args:
        policy: The preset's policy as accelerate builds it (``size_based`` / ``transformer_based``
            partial), or None (no nested wrapping).
        top_modules: The values of ``method.training_modules()``.
    """
    if policy is None:
        return None
    excluded = {id(m) for m in top_modules}

    def wrap(module: torch.nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
        if not recurse and id(module) in excluded:
            return False
        return policy(module=module, recurse=recurse, nonwrapped_numel=nonwrapped_numel)

    return wrap


class _StopFlag:
    """SIGINT/SIGTERM ask the loop to stop after the current step; a second SIGINT aborts at once."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread: signals stay with the caller
            logger.debug("run_training is not on the main thread; SIGINT/SIGTERM are not handled.")
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False


def _worker_leaves_stopping_to_main(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: ignore SIGINT and SIGTERM in the workers.

    ``timeout``, a terminal's Ctrl-C and job schedulers signal the whole process group; PyTorch's
    workers die of SIGTERM, and the main process then fails with "DataLoader worker ... killed by
    signal" instead of finishing the step and saving (:class:`_StopFlag`). The main process owns
    stopping: it shuts the workers down when the loop ends (:meth:`_Trainer._close_loader`), and a
    worker whose main process died exits by itself (PyTorch's watchdog)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _check_method(method) -> None:
    missing = [name for name in _REQUIRED if not callable(getattr(method, name, None))]
    if not (callable(getattr(method, "trainable_parameters", None)) or callable(getattr(method, "optimizer_groups", None))):
        missing.append("trainable_parameters")
    if missing:
        raise UserError(f"{type(method).__name__} cannot be trained: it lacks {', '.join(missing)} "
                        "(see vsrkit.methods.protocol.TrainableMethod).")


def _prepare_output_dir(config: TrainConfig) -> Path | None:
    """Check the run folder against ``resume``; returns the checkpoint to resume from (or None)."""
    out = Path(config.output_dir)
    if config.resume:
        latest = ckpt.latest_checkpoint(out)
        if latest is None:
            raise UserError(f"`train.resume=true` but `train.output_dir` {out} holds no complete checkpoint "
                            f"(looked in {ckpt.checkpoint_root(out)}). Drop train.resume to start a new run there.")
        return latest
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"`train.output_dir` {out} is not empty. Pass train.resume=true to continue the run in it, "
                        "or choose an empty or new folder.")
    return None


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def _check_batch(batch: Mapping, where: str) -> None:
    """The engine -> method edge: ``hq``/``lq`` are ``(B, C, T, H, W)`` float32 in [-1, 1]."""
    for key in ("hq", "lq"):
        x = batch.get(key)
        if not isinstance(x, torch.Tensor):
            raise UserError(f"{where}: batch key `{key}` must be a tensor. Got {type(x).__name__}.")
        if x.dim() != 5 or x.dtype != torch.float32:
            raise UserError(f"{where}: batch `{key}` must be (B, C, T, H, W) float32. Got shape {tuple(x.shape)} "
                            f"dtype {x.dtype}.")
        low, high = torch.aminmax(x)
        if low < -1.0 - 1e-4 or high > 1.0 + 1e-4:
            raise UserError(f"{where}: batch `{key}` must lie in [-1, 1]. Got [{low.item():.4g}, {high.item():.4g}].")


def _to_device(batch: Mapping, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class _Trainer:
    """State of one :func:`run_training` call (a class only to keep the loop readable)."""

    def __init__(self, method, dataset, config: TrainConfig, seed: int, run_config: dict,
                 validate: ValidateFn | None):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState, GradientState
        from accelerate.utils import DistributedDataParallelKwargs, DistributedType, set_seed

        _check_method(method)
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise UserError(f"The training dataset must have __len__ and __getitem__. Got {type(dataset).__name__}.")
        self.method, self.dataset, self.config = method, dataset, config
        self.seed, self.run_config, self.validate = seed, run_config, validate
        self.out = Path(config.output_dir)

        # A previous run in this process (tests, notebooks) may have left accelerate's singletons
        # configured differently; the process group itself (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        self.accelerator = acc = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=config.find_unused_parameters)],
        )
        self.is_main = acc.is_main_process
        self.is_fsdp = acc.distributed_type == DistributedType.FSDP
        self.is_deepspeed = acc.distributed_type == DistributedType.DEEPSPEED
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = config.allow_tf32
            torch.backends.cudnn.allow_tf32 = config.allow_tf32

        # The data order: the dataset's own resumable batch sampler when it has one (vsrkit.data's
        # make all-image or all-video batches), else per-sample shuffling here. Both resume with
        # set_position(epoch, batches already read).
        n_samples = len(dataset)
        self.uses_batch_sampler = callable(getattr(dataset, "batch_sampler", None))
        if self.uses_batch_sampler:
            self.sampler = dataset.batch_sampler(config.batch_size, num_replicas=acc.num_processes,
                                                 rank=acc.process_index, shuffle=config.shuffle)
        else:
            self.sampler = ResumableSampler(n_samples, config.batch_size, acc.num_processes, acc.process_index,
                                            seed=seed, shuffle=config.shuffle)
        if self.sampler.batches_per_epoch == 0:
            raise UserError(f"The training dataset has {n_samples} samples; one batch needs train.batch_size x "
                            f"processes = {config.batch_size} x {acc.num_processes}. Add data or lower train.batch_size.")

        # Every process checks the folder before any of them writes to it.
        self.resume_from = _prepare_output_dir(config)
        acc.wait_for_everyone()
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()

        # Per-process seeds (different dropout per GPU); the initial weights are made equal across
        # processes by DDP's broadcast (FSDP: sync_module_states in conf/accelerate/fsdp.yaml).
        set_seed(seed, device_specific=True)
        method.setup_training(acc.device)

        self.meta: dict = {}
        if self.resume_from is not None:
            self.meta = ckpt.read_meta(self.resume_from) or {}
            if self.is_main:
                logger.info("Resuming from checkpoint step %d (%s)", self.meta["step"], self.resume_from)
            method.load_state_dict(ckpt.load_tensors(self.resume_from / "model.safetensors"))
            self._warn_config_changes()

        self.groups = method_groups(method, config)
        self._check_distribution()
        modules = method.training_modules() if self.is_fsdp else None
        pass_name = callable(getattr(method, "optimizer_groups", None))
        # accelerate autocasts DDP/FSDP forwards itself; under DeepSpeed it does not (DeepSpeed casts
        # the trained weights to bf16/fp16), so the step runs under autocast here, as with the others.
        autocast = None
        if self.is_deepspeed and config.mixed_precision != "no":
            autocast = (acc.device.type, torch.bfloat16 if config.mixed_precision == "bf16" else torch.float16)
        self.holders, self.optimizers, self.schedulers = [], [], []
        for group in self.groups:
            for p in group.params:
                if not isinstance(p, torch.nn.Parameter):
                    raise UserError(f"{type(method).__name__}: trainable tensors must be torch.nn.Parameter objects "
                                    f"(group `{group.name}` has a {type(p).__name__}).")
            holder = _StepModule(method, group, modules, pass_name, autocast)
            if self.is_fsdp:
                plugin = acc.state.fsdp_plugin
                plugin.set_auto_wrap_policy(holder)  # the preset's policy as a callable (accelerate does the same)
                plugin.auto_wrap_policy = fsdp_wrap_policy(plugin.auto_wrap_policy, list(modules.values()))
            optimizer = build_optimizer(group)
            # The schedule drives the plain AdamW's param_groups, which DDP, FSDP and DeepSpeed all
            # step; it is not handed to accelerate, whose wrapper would step it once per process.
            self.schedulers.append(build_scheduler(optimizer, config, group))
            holder, optimizer = acc.prepare(holder, optimizer)
            self.holders.append(holder)
            self.optimizers.append(optimizer)

        ema_params = [p for g in self.groups if g.ema for p in g.params]
        self.ema = EMA(ema_params, config.ema_decay, config.ema_start_step) \
            if config.ema_decay is not None and ema_params else None
        if self.ema is not None and callable(getattr(method, "attach_ema", None)):
            method.attach_ema(self.ema)  # a method may read the average (shortcut-model teachers)

        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        if self.resume_from is not None:
            self._load_training_state(self.resume_from)
        self._iterator = None

    # --- setup helpers ----------------------------------------------------------------------

    def _check_distribution(self) -> None:
        acc, config = self.accelerator, self.config
        name = type(self.method).__name__
        if self.is_fsdp:
            if acc.is_fsdp2:
                raise UserError("FSDP2 (fsdp_version: 2) is not supported by the vsrkit engine; use fsdp_version: 1 "
                                "(conf/accelerate/fsdp.yaml).")
            if len(self.groups) > 1:
                raise UserError(f"{name} has {len(self.groups)} optimizer groups; FSDP supports one. Use DDP or "
                                "DeepSpeed ZeRO-2 presets.")
            if not callable(getattr(self.method, "training_modules", None)):
                raise UserError(f"FSDP needs {name}.training_modules() (the modules owning the trainable weights); "
                                "use the DDP or DeepSpeed ZeRO-2 preset for this method.")
            if config.ema_decay is not None:
                raise UserError("`train.ema_decay` is not supported under FSDP (sharded weights); use DDP or DeepSpeed "
                                "ZeRO-2, or set train.ema_decay=null.")
        if self.is_deepspeed:
            if len(self.groups) > 1:
                raise UserError(f"{name} has {len(self.groups)} optimizer groups; the DeepSpeed preset supports one. "
                                "Use the DDP preset.")
            ds = acc.state.deepspeed_plugin.deepspeed_config
            # train.* is the single source of truth; DeepSpeed gets the same values.
            ds["train_micro_batch_size_per_gpu"] = config.batch_size
            ds["gradient_accumulation_steps"] = config.gradient_accumulation_steps
            ds["train_batch_size"] = config.batch_size * config.gradient_accumulation_steps * acc.num_processes
            ds["gradient_clipping"] = self.groups[0].max_grad_norm

    def _warn_config_changes(self) -> None:
        saved = _flatten(self.meta.get("config") or {})
        now = _flatten(self.run_config or {})
        changed = sorted(k for k in set(saved) | set(now)
                         if k not in _IGNORED_CONFIG_CHANGES and saved.get(k, "<absent>") != now.get(k, "<absent>"))
        if changed and self.is_main:
            shown = ", ".join(f"{k}: {saved.get(k, '<absent>')} -> {now.get(k, '<absent>')}" for k in changed[:10])
            logger.warning("The config differs from the checkpoint's in %d key(s): %s", len(changed), shown)

    def _load_training_state(self, directory: Path) -> None:
        acc = self.accelerator
        meta = self.meta
        if meta.get("groups") != [g.name for g in self.groups]:
            raise UserError(f"Checkpoint {directory} has optimizer groups {meta.get('groups')}, the method now has "
                            f"{[g.name for g in self.groups]}; it cannot be resumed with this method.")
        state = torch.load(directory / "training_state.pt", map_location="cpu", weights_only=True)
        for group, holder, optimizer, scheduler in zip(self.groups, self.holders, self.optimizers, self.schedulers):
            if self.is_deepspeed:
                holder.load_checkpoint(str(directory / "deepspeed"), tag="state", load_module_strict=True,
                                       load_optimizer_states=True, load_lr_scheduler_states=False)
            elif self.is_fsdp:
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

                set_optimizer_state_dict(holder, optimizer.optimizer, state["optimizers"][group.name],
                                         options=StateDictOptions(full_state_dict=True))
            else:
                optimizer.load_state_dict(state["optimizers"][group.name])
            scheduler.load_state_dict(state["schedulers"][group.name])
        if self.ema is not None:
            ema_path = directory / "ema.safetensors"
            if ema_path.exists():
                self.ema.load_state_dict(ckpt.load_tensors(ema_path))
            elif self.is_main:
                logger.warning("Checkpoint %s has no EMA; the average restarts from the current weights.", directory)
        self.step = int(meta["step"])
        self.epoch = int(meta["data"]["epoch"])
        self.batch_in_epoch = int(meta["data"]["batch_in_epoch"])
        saved_world = int(meta.get("world_size", acc.num_processes))
        if saved_world != acc.num_processes and self.is_main:
            logger.warning("Checkpoint was written by %d processes, this run has %d: the data order and random "
                           "streams will differ from an uninterrupted run.", saved_world, acc.num_processes)
        # Restore the RNG streams last: nothing above may consume randomness after this.
        if not ckpt.load_rng(directory, acc.process_index) and self.is_main:
            logger.warning("Checkpoint %s has no RNG state for process %d.", directory, acc.process_index)

    # --- data -------------------------------------------------------------------------------

    def _new_iterator(self):
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        self.sampler.set_position(self.epoch, self.batch_in_epoch)
        # A private generator (not the global RNG) seeds the workers, so creating a loader consumes
        # no global randomness and a resumed run's random streams line up with an uninterrupted one.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        common = dict(num_workers=self.config.num_workers, generator=generator,
                      pin_memory=self.accelerator.device.type == "cuda",
                      worker_init_fn=_worker_leaves_stopping_to_main if self.config.num_workers else None)
        if self.uses_batch_sampler:
            loader = DataLoader(self.dataset, batch_sampler=self.sampler, **common)
        else:
            loader = DataLoader(self.dataset, batch_size=self.config.batch_size, sampler=self.sampler,
                                drop_last=True, **common)
        return iter(loader)

    def _close_loader(self) -> None:
        """Shut the DataLoader workers down now (they ignore SIGTERM, so they must not be left for
        multiprocessing's exit handler to terminate): dropping the last reference to the iterator
        sends them their stop message and joins them."""
        self._iterator = None

    def _next_batch(self) -> dict:
        if self._iterator is None:
            self._iterator = self._new_iterator()
        while True:
            try:
                batch = next(self._iterator)
                break
            except StopIteration:
                self.epoch += 1
                self.batch_in_epoch = 0
                self._iterator = self._new_iterator()
        self.batch_in_epoch += 1
        _check_batch(batch, f"dataset {type(self.dataset).__name__}")
        batch = _to_device(batch, self.accelerator.device)
        batch["step"] = self.step
        return batch

    # --- one optimizer step -----------------------------------------------------------------

    def _train_step(self) -> dict[str, float]:
        acc = self.accelerator
        micro_batches = [self._next_batch() for _ in range(self.config.gradient_accumulation_steps)]
        values: dict[str, float] = {}
        multi = len(self.groups) > 1
        for group, holder, optimizer, scheduler in zip(self.groups, self.holders, self.optimizers, self.schedulers):
            if not group.is_due(self.step):
                continue
            prefix = f"{group.name}/" if multi else ""
            for p in holder.parameters():  # drop gradients another group's backward may have left
                p.grad = None
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            grad_norm = None
            values[f"lr/{group.name}"] = scheduler.get_last_lr()[0]  # the lr this step (first repeat) used
            for repeat in range(group.repeat):
                for batch in micro_batches:
                    if group.repeat > 1:
                        batch = {**batch, "repeat": repeat}
                    with acc.accumulate(holder):
                        loss, logs = holder(batch)
                        if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not loss.requires_grad:
                            raise UserError(f"{type(self.method).__name__}.training_step must return a scalar "
                                            f"tensor that requires grad as its loss. Got {loss!r:.80}.")
                        acc.backward(loss)
                        if acc.sync_gradients and group.max_grad_norm > 0:
                            grad_norm = acc.clip_grad_norm_(list(holder.parameters()), group.max_grad_norm)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    for key, value in [("loss", loss.detach()), *(logs or {}).items()]:
                        sums[key] = sums.get(key, 0.0) + float(value)
                        counts[key] = counts.get(key, 0) + 1
                if not getattr(optimizer, "step_was_skipped", False):  # fp16 overflow skips the step
                    scheduler.step()
            values.update({f"{prefix}{k}": v / counts[k] for k, v in sums.items()})
            if grad_norm is not None:
                values[f"grad_norm/{group.name}"] = float(grad_norm)
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.step)
        return values

    # --- checkpoints, validation, export -----------------------------------------------------

    @contextlib.contextmanager
    def _full_weights(self):
        """Within the block the method's trainable weights are whole on the main process (FSDP gathers
        them into its CPU memory, so no GPU holds a second full copy); only the main process reads them."""
        if self.is_fsdp:
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            with FSDP.summon_full_params(self.holders[0], writeback=False, rank0_only=True, offload_to_cpu=True):
                yield
        else:
            yield

    def save_checkpoint(self, reason: str) -> Path:
        acc, out = self.accelerator, self.out
        temp, final = ckpt.temp_dir_for(out, self.step), ckpt.final_dir_for(out, self.step)
        if self.is_main:
            if temp.exists():
                shutil.rmtree(temp)
            temp.mkdir(parents=True)
        acc.wait_for_everyone()
        with self._full_weights():
            if self.is_main:
                ckpt.save_tensors(self.method.state_dict(), temp / "model.safetensors")
        if self.ema is not None and self.is_main:
            ckpt.save_tensors(self.ema.state_dict(), temp / "ema.safetensors")
        optimizers = {}
        for group, holder, optimizer in zip(self.groups, self.holders, self.optimizers):
            if self.is_deepspeed:
                holder.save_checkpoint(str(temp / "deepspeed"), tag="state", save_latest=False)
            elif self.is_fsdp:
                from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

                optimizers[group.name] = get_optimizer_state_dict(
                    holder, optimizer.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            else:
                optimizers[group.name] = optimizer.state_dict()
        if self.is_main:
            torch.save({"optimizers": optimizers,
                        "schedulers": {g.name: s.state_dict() for g, s in zip(self.groups, self.schedulers)}},
                       temp / "training_state.pt")
        ckpt.save_rng(temp, acc.process_index)
        acc.wait_for_everyone()
        if self.is_main:
            ckpt.commit(temp, final, {
                "step": self.step,
                "data": {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch},
                "world_size": acc.num_processes,
                "groups": [g.name for g in self.groups],
                "seed": self.seed,
                "reason": reason,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "train": dataclasses.asdict(self.config),
                "config": self.run_config,
            })
            deleted = ckpt.prune(out, self.config.keep_last)
            logger.info("Saved checkpoint step %d (%s)%s", self.step, final,
                        f"; removed {len(deleted)} older" if deleted else "")
        acc.wait_for_everyone()
        return final

    def run_validation(self, progress: TrainProgress) -> None:
        if self.validate is None:
            return
        swap = self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()
        with swap, torch.no_grad():
            if self.is_fsdp or self.is_deepspeed:
                metrics = self.holders[0](_Call(lambda: self.validate(self.method, self.step))) or {}
            else:
                metrics = self.validate(self.method, self.step) or {}
        if self.is_main and metrics:
            logger.info("validation step %d: %s", self.step,
                        ", ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items())))
            progress.scalars(self.step, {f"val/{k}": v for k, v in metrics.items()})

    def export(self) -> Path:
        acc = self.accelerator
        export_dir, temp = self.out / "export", self.out / ".tmp-export"
        swap = self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()
        acc.wait_for_everyone()
        with swap, self._full_weights():
            if self.is_main:
                if temp.exists():
                    shutil.rmtree(temp)
                temp.mkdir(parents=True)
                self.method.export(str(temp))
                if export_dir.exists():
                    shutil.rmtree(export_dir)
                os.replace(temp, export_dir)
                logger.info("Exported %s weights to %s", "EMA" if self.ema is not None else "trained", export_dir)
        acc.wait_for_everyone()
        return export_dir

    def _log_peak_memory(self) -> None:
        """Log every process's peak GPU memory of the training steps (FSDP/ZeRO shard unevenly)."""
        acc = self.accelerator
        if acc.device.type != "cuda":
            return
        peak = torch.tensor([float(torch.cuda.max_memory_allocated(acc.device))], device=acc.device)
        peaks = acc.gather(peak) if acc.num_processes > 1 else peak
        if self.is_main:
            logger.info("peak GPU memory per process (GiB): %s", " ".join(f"{float(p) / 2**30:.2f}" for p in peaks))

    def _stop_requested(self, stop: _StopFlag) -> bool:
        """Whether any process got SIGINT/SIGTERM (all processes must stop at the same step)."""
        flag = torch.tensor([0 if stop.signum is None else 1], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag, reduction="sum")
        return bool(flag.item())

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        config, acc = self.config, self.accelerator
        last_saved = self.resume_from
        saved_step = self.step if self.resume_from is not None else None
        log_dir = self.out / "tensorboard" if config.tensorboard else None
        progress = TrainProgress(self.is_main, self.step, config.max_steps, log_dir, config.progress_bar)
        if self.is_main:
            logger.info("Training %s on %d process(es) (%s, %s precision): steps %d -> %d, batch %d x accum %d "
                        "x %d, output %s", type(self.method).__name__, acc.num_processes, acc.distributed_type,
                        config.mixed_precision, self.step, config.max_steps, config.batch_size,
                        config.gradient_accumulation_steps, acc.num_processes, self.out)
        interrupted = False
        try:
            with _StopFlag() as stop, progress.logging_context():
                while self.step < config.max_steps:
                    started = time.perf_counter()
                    values = self._train_step()
                    seconds = time.perf_counter() - started
                    progress.record({**values, "time/step_s": seconds})
                    progress.step_done(self.step, seconds, {k: v for k, v in values.items() if k.endswith("loss")})
                    if self.step % config.log_every == 0 or self.step == config.max_steps:
                        progress.flush(self.step)
                    if config.validate_every and self.step % config.validate_every == 0:
                        self.run_validation(progress)
                    if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                        last_saved, saved_step = self.save_checkpoint("periodic"), self.step
                    if self._stop_requested(stop):
                        self._log_peak_memory()  # before the checkpoint, which a second signal may cut short
                        if saved_step != self.step:
                            last_saved, saved_step = self.save_checkpoint("interrupt"), self.step
                        if self.is_main:
                            logger.info("Stopped by %s after step %d; checkpoint %s. Resume with train.resume=true.",
                                        signal.Signals(stop.signum or signal.SIGTERM).name, self.step, last_saved)
                        interrupted = True
                        break
                if interrupted:
                    return TrainResult(self.out, self.step, last_saved, None, True,
                                       signal=int(stop.signum or signal.SIGTERM))
                self._log_peak_memory()
                if saved_step != self.step:
                    last_saved = self.save_checkpoint("final")
                export_dir = self.export()
                if self.is_main:
                    logger.info("Training done: %d steps in %s; weights in %s", self.step,
                                format_duration(progress.elapsed_seconds()), export_dir)
                return TrainResult(self.out, self.step, last_saved, export_dir, False)
        finally:
            self._close_loader()
            progress.close()


def run_training(method, dataset, config: TrainConfig, *, seed: int = 0, run_config: dict | None = None,
                 validate: ValidateFn | None = None) -> TrainResult:
    """Train ``method`` on ``dataset`` until ``config.max_steps``, then export its weights.

    Call it the same way in every process (``python`` or ``accelerate launch``). The method is
    constructed but not set up: this calls ``method.setup_training(device)``. Checkpoints go to
    ``config.output_dir/checkpoints`` every ``config.checkpoint_every`` steps and when SIGINT or
    SIGTERM arrives (the current step finishes, a checkpoint is saved, and this returns with
    ``interrupted=True``). ``config.resume`` continues exactly (same weights, optimizer moments, lr
    schedule, RNG streams and next batch) from the newest complete checkpoint. At ``max_steps`` a
    final checkpoint is saved and ``method.export(config.output_dir/"export")`` writes the weights
    (the EMA weights when EMA is on).

    Args:
        method: A :class:`vsrkit.methods.protocol.TrainableMethod`.
        dataset: Map-style dataset of dicts ``{"hq": (C, T, H, W), "lq": (C, T, h, w)`` float32 in
            [-1, 1], ``"prompt": str, "is_image": bool, "index": int}``; deterministic per
            ``(seed, epoch, index)`` with an optional ``set_epoch(epoch)``. If it has
            ``batch_sampler(batch_size, *, num_replicas, rank, shuffle)`` (a resumable sampler of
            index lists with ``batches_per_epoch`` and ``set_position(epoch, start_batch)``, as
            :func:`vsrkit.data.build_train_dataset`'s datasets do), that decides the batches.
        config: Engine options.
        seed: Seeds the data order and, offset by the process index, the global RNGs.
        run_config: The whole resolved run config (plain dict), stored in every checkpoint; on
            resume, differences from the stored one are logged.
        validate: Optional hook ``validate(method, step) -> {metric: value}``, called every
            ``config.validate_every`` steps on every process.

    Returns:
        A :class:`TrainResult`.

    Raises:
        UserError: ``output_dir`` is not empty without ``resume``, ``resume`` without a checkpoint,
            a batch that breaks the layout contract, or an unsupported method/distribution mix.
    """
    trainer = _Trainer(method, dataset, config, seed, run_config or {}, validate)
    return trainer.run()
