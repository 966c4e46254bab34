"""Exponential moving average of trainable parameters."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


class EMA:
    """``shadow = decay * shadow + (1 - decay) * param`` after each optimizer step.

    The shadow copies live on the parameters' device in float32, whatever the parameters' dtype:
    with bf16 weights (DeepSpeed bf16) and a decay of 0.999 the update ``0.001 * (param - shadow)``
    would mostly round away in bf16.

    Args:
        params: The parameters to average (the order is the key of :meth:`state_dict`).
        decay: Weight of the old average, in (0, 1).
        start_step: Before this step :meth:`update` copies the parameters instead of averaging
            (so the average does not remember the first, mostly untrained weights).
    """

    def __init__(self, params: list[torch.nn.Parameter], decay: float, start_step: int = 0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"`decay` must be in (0, 1). Got {decay}.")
        self.params = list(params)
        self.decay = decay
        self.start_step = start_step
        self.shadow = [p.detach().to(torch.float32, copy=True) for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold the current parameters in; ``step`` is the number of optimizer steps done."""
        current = [p.detach().float() for p in self.params]
        if step < self.start_step:
            torch._foreach_copy_(self.shadow, current)
        else:
            torch._foreach_lerp_(self.shadow, current, 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Within the block the parameters hold the averaged values; restored afterwards."""
        with torch.no_grad():
            backup = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{"<i>": shadow of parameter i}`` on CPU."""
        return {str(i): s.detach().to("cpu", copy=True) for i, s in enumerate(self.shadow)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if len(state) != len(self.shadow):
            raise ValueError(f"EMA state has {len(state)} tensors, the run trains {len(self.shadow)}.")
        for i, s in enumerate(self.shadow):
            saved = state[str(i)]
            if saved.shape != s.shape:
                raise ValueError(f"EMA tensor {i} has shape {tuple(saved.shape)}, expected {tuple(s.shape)}.")
            s.copy_(saved)
