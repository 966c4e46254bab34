"""What the engine expects of a method, and what it hands to one.

A method owns its algorithm (how one window of frames becomes its output, how one training
step computes its losses, which parameters train, how its released checkpoints load). The
engine owns reading, padding, tiles, temporal windows, blending, writing, progress,
checkpoints and distribution. See docs/design.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch stays out of `import vsrkit`
    import torch


@dataclass(frozen=True)
class WindowSpec:
    """How the engine must cut and pad the input before calling :meth:`Method.upscale`.

    Args:
        scale: Output size / input size (integer, same for H and W).
        frame_multiple: Window lengths are padded (repeating the last frame) to
            ``frame_multiple * k + frame_offset`` frames. ``(8, 1)`` means 8k+1; ``(1, 0)`` any.
        frame_offset: See ``frame_multiple``.
        spatial_multiple: Input H and W are padded to a multiple of this (in input pixels).
        pad_mode: ``"replicate"``, ``"reflect"`` or ``"constant"`` (zeros, i.e. -1 after
            normalisation is *not* used: constant pads with 0 in [0, 255] space = -1).
        window: Preferred temporal window in input frames; ``None`` processes the clip whole.
        overlap: Frames shared by consecutive windows (blended).
        stride_multiple: The window stride (``window - overlap``) must be a multiple of this
            (SparkVSR keeps keyframe latent slots aligned with 4).
        tile: Spatial tile edge in input pixels; ``None`` for no tiling. With ``tile_width`` it
            is the tile height.
        tile_overlap: Input pixels shared by neighbouring tiles (blended).
        tile_width: Tile width in input pixels when tiles are not square (PS-SR's 720x1280
            windows); ``None`` makes square tiles of edge ``tile``.
        uses_keyframes: Whether the engine should select and prepare HR keyframes.
        carry_keyframes: Keyframe methods whose windows must all be conditioned (SparkVSR): when a
            window had keyframes (real or carried), the engine hands the next window the previous
            window's output at the next window's first frame as a pseudo-keyframe (local index 0),
            unless a real keyframe already lies in that window's first ``stride_multiple`` frames
            (the same keyframe slot). Windows are then computed in order, each after the one before.
    """

    scale: int
    frame_multiple: int = 1
    frame_offset: int = 0
    spatial_multiple: int = 1
    pad_mode: str = "replicate"
    window: int | None = None
    overlap: int = 0
    stride_multiple: int = 1
    tile: int | None = None
    tile_overlap: int = 0
    uses_keyframes: bool = False
    carry_keyframes: bool = False
    tile_width: int | None = None

    def __post_init__(self):
        if self.scale < 1:
            raise ValueError(f"`scale` must be >= 1. Got {self.scale}.")
        if self.pad_mode not in ("replicate", "reflect", "constant"):
            raise ValueError(f"`pad_mode` must be one of ['replicate', 'reflect', 'constant']. Got {self.pad_mode}.")
        if self.window is not None and self.overlap >= self.window:
            raise ValueError(f"`overlap` ({self.overlap}) must be smaller than `window` ({self.window}).")
        if self.tile is not None and self.tile_overlap >= min(self.tile, self.tile_width or self.tile):
            raise ValueError(f"`tile_overlap` ({self.tile_overlap}) must be smaller than `tile` ({self.tile}) "
                             f"and `tile_width` ({self.tile_width}).")
        if self.tile_width is not None and self.tile is None:
            raise ValueError("`tile_width` needs `tile` (the tile height).")

    def padded_length(self, frames: int) -> int:
        """Smallest length >= ``frames`` that satisfies the frame rule."""
        m, r = self.frame_multiple, self.frame_offset
        if frames <= r:
            return r if r > 0 else m
        k = -(-(frames - r) // m)
        return m * k + r


@dataclass
class WindowContext:
    """What the engine knows about the window it passes to :meth:`Method.upscale`.

    Args:
        frame_start: Index in the whole clip of the window's first frame.
        num_valid: Frames of the window that are real (the rest are padding).
        keyframes: ``{index within the window: (C, H*scale, W*scale) float32 tensor in [-1, 1]}``,
            already cropped to the window's tile and sized to the padded output.
        generator: Seeded generator for any sampling the method does.
        spatial_offset: ``(y, x)`` of the tile's top-left corner in padded input pixels.
        on_stage: Progress callback ``(stage, done, total)`` the engine sets; methods report
            through :meth:`stage` and never call it directly.
    """

    frame_start: int = 0
    num_valid: int = 0
    keyframes: dict = field(default_factory=dict)
    generator: Any = None
    spatial_offset: tuple = (0, 0)
    on_stage: Any = None

    def stage(self, name: str, done: int = 0, total: int = 1) -> None:
        """Report that the method entered stage ``name`` (``"encode"``, ``"denoise"``, ``"decode"``),
        with ``done`` of ``total`` steps of it finished, so the engine can show progress inside a
        window. A no-op when the engine set no callback."""
        if self.on_stage is not None:
            self.on_stage(name, done, total)


@runtime_checkable
class Method(Protocol):
    """The interface every registered method implements (no base class: see docs/design.md)."""

    def window_spec(self) -> WindowSpec: ...

    def load(self, device: "torch.device", dtype: "torch.dtype | None" = None) -> None:
        """Build modules and load weights on ``device``; ``dtype`` overrides the configured one (None keeps it)."""
        ...

    def upscale(self, lq: "torch.Tensor", context: WindowContext) -> "torch.Tensor":
        """``lq (B, C, T, H, W)`` float32 in [-1, 1] -> ``(B, C, T, H*scale, W*scale)`` float32 in [-1, 1]."""
        ...


@dataclass
class OptimizerGroup:
    """One optimizer of a method that trains several parameter sets (optional, see below).

    A method that needs more than one optimizer (a generator and a fake-score model trained
    alongside it, as DMD-style distillation does) implements ``optimizer_groups()`` returning
    these, in the order they step within one training step. Fields left at ``None`` take the
    run's ``train.*`` value.

    Args:
        name: Short name (``"generator"``, ``"fake_score"``); passed to ``training_step`` and used
            in log keys and checkpoint files.
        params: The ``torch.nn.Parameter`` objects this optimizer updates (disjoint from every
            other group's).
        lr: Learning rate (``train.optimizer.lr`` if None).
        betas: AdamW betas (``train.optimizer.betas`` if None).
        weight_decay: AdamW weight decay (``train.optimizer.weight_decay`` if None).
        max_grad_norm: Gradient clipping norm, 0 disables (``train.max_grad_norm`` if None).
        every: Step this group only on training steps ``start_step + k * every`` (DMD2 updates the
            generator once per 5 fake-score updates: ``every=5`` on the generator).
        start_step: First training step on which this group steps (e.g. a discriminator that
            starts at step 500).
        ema: Whether ``train.ema_decay`` averages these parameters (usually the generator only).
        repeat: Optimizer steps this group takes per training step, all on the same micro-batches;
            ``training_step`` sees ``batch["repeat"]`` = 0 .. repeat-1 (PS-SR's draft takes one
            step per draft timestep of the same clip).
    """

    name: str
    params: list
    lr: float | None = None
    betas: tuple | None = None
    weight_decay: float | None = None
    max_grad_norm: float | None = None
    every: int = 1
    start_step: int = 0
    ema: bool = True
    repeat: int = 1

    def __post_init__(self):
        if self.repeat < 1:
            raise ValueError(f"`repeat` of optimizer group `{self.name}` must be >= 1. Got {self.repeat}.")
        if self.every < 1:
            raise ValueError(f"`every` of optimizer group `{self.name}` must be >= 1. Got {self.every}.")
        if self.start_step < 0:
            raise ValueError(f"`start_step` of optimizer group `{self.name}` must be >= 0. Got {self.start_step}.")


@runtime_checkable
class TrainableMethod(Method, Protocol):
    """A method the training engine can train.

    The engine calls ``setup_training(device)`` once, optimizes ``trainable_parameters()`` with
    one AdamW, and calls ``training_step(batch)`` for each micro-batch. ``batch`` holds the
    dataset's collated keys (``hq (B, C, T, H, W)`` and ``lq (B, C, T, h, w)`` float32 in
    [-1, 1], ``prompt`` list of str, ``is_image`` and ``index`` tensors of shape ``(B,)``) on
    the training device, plus ``step``: optimizer steps completed before this one (int).

    Optional, for methods with several optimizers: ``optimizer_groups() -> list[OptimizerGroup]``
    replaces ``trainable_parameters()``, and each training step then calls
    ``training_step(batch, optimizer_name)`` once per due group, in the listed order, stepping
    that group's optimizer after its micro-batches (``repeat`` times for a group with
    ``repeat > 1``, with ``batch["repeat"]`` counting the repeats).

    Optional, for FSDP only: ``training_modules() -> dict[str, torch.nn.Module]``, the modules
    that own every trainable parameter, so FSDP can shard them in place (DDP and DeepSpeed
    ZeRO-2 need no modules).

    Optional: ``attach_ema(ema)``: the engine hands over its :class:`vsrkit.engine.ema.EMA` of the
    trainable parameters (when ``train.ema_decay`` is set) for a method whose loss reads the
    averaged weights (TurboVSR's shortcut teacher).

    ``state_dict()``/``load_state_dict()`` cover what trains, with clean keys; ``export(dir)``
    writes what the method's inference loads.
    """

    def setup_training(self, device: "torch.device") -> None: ...

    def trainable_parameters(self) -> list: ...

    def training_step(self, batch: dict) -> tuple["torch.Tensor", dict]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def export(self, directory: str) -> None: ...


# --- streaming methods --------------------------------------------------------------------------


@dataclass
class StreamContext:
    """What the engine knows about the clip it streams through :meth:`StreamingMethod.open_stream`.

    Args:
        num_frames: Frames the engine will push (``None`` when the length is not known, e.g. a
            live source). A stream must not rely on it for correctness, only for progress.
        generator: Seeded generator for any sampling the method does.
        on_stage: Progress callback ``(stage, done, total)`` the engine sets; methods report
            through :meth:`stage` and never call it directly.
    """

    num_frames: int | None = None
    generator: Any = None
    on_stage: Any = None

    def stage(self, name: str, done: int = 0, total: int = 1) -> None:
        """Report that the stream entered stage ``name`` (``"encode"``, ``"denoise"``, ``"decode"``...)
        while working on its current chunk. A no-op when the engine set no callback."""
        if self.on_stage is not None:
            self.on_stage(name, done, total)


@runtime_checkable
class FrameStream(Protocol):
    """The state of one clip inside a streaming method (caches, positions, buffered frames).

    The engine pushes the clip's frames in order, in pieces of any length; each call returns the
    output frames that are finished, in order (possibly none: ``T = 0``). After the last frame,
    ``flush()`` returns the rest. Over the whole clip the output has exactly as many frames as
    the input. Memory must not grow with the clip's length.
    """

    def push(self, lq: "torch.Tensor") -> "torch.Tensor":
        """``lq (1, C, t, H, W)`` float32 in [-1, 1], ``t >= 1``, padded to the spec's spatial
        multiple -> ``(1, C, T, H*scale, W*scale)`` float32 in [-1, 1], ``T >= 0`` finished frames."""
        ...

    def flush(self) -> "torch.Tensor":
        """End of the clip: every frame not returned yet, ``(1, C, T, H*scale, W*scale)``."""
        ...

    def reset(self) -> None:
        """Forget the clip (caches, positions, buffered frames): the next push starts a new clip."""
        ...


@runtime_checkable
class StreamingMethod(Protocol):
    """A method that carries state from chunk to chunk (InfVSR, and causal methods like it).

    The engine streams a clip through it instead of cutting windows: it calls ``window_spec()``
    (only ``scale``, ``spatial_multiple`` and ``pad_mode`` apply; the method chooses its own
    chunks), ``load(device, dtype)``, then ``open_stream(context)`` once per clip and pushes the
    frames (see :class:`FrameStream`). The engine recognises such a method by ``open_stream``,
    never by its name. A streaming method may also implement :meth:`Method.upscale` (one window
    as a fresh stream), which keeps window-based tools working.
    """

    def window_spec(self) -> WindowSpec: ...

    def load(self, device: "torch.device", dtype: "torch.dtype | None" = None) -> None: ...

    def open_stream(self, context: StreamContext) -> FrameStream:
        """A fresh stream for one clip (no state shared with other streams)."""
        ...
