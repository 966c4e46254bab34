"""Seeded random draws: every random choice of vsrkit's data pipeline goes through these.

A dataset item gets its own ``torch.Generator`` from ``(seed, epoch, index)``
(:func:`item_generator`), so an item is the same whatever worker, process or resume produces it.
Parameter draws use that (CPU) generator; noise on another device comes from
:func:`device_generator`, itself seeded by a draw, so results are reproducible per device.
"""

from __future__ import annotations

import math
from typing import Sequence, TypeVar

import numpy as np
import torch

T = TypeVar("T")


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed mixed from ``(seed, epoch, index)`` (NumPy ``SeedSequence``, no collisions
    between neighbouring triples as ``seed + index`` would have)."""
    words = [int(v) % (1 << 63) for v in (seed, epoch, index)]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator for one dataset item."""
    return torch.Generator().manual_seed(item_seed(seed, epoch, index))


def device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """``generator`` itself on CPU; on another device a new generator seeded by a draw from it."""
    if torch.device(device).type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One float uniform in ``[low, high)``."""
    return float(low) + (float(high) - float(low)) * float(torch.rand((), generator=generator, dtype=torch.float64))


def bernoulli(generator: torch.Generator, prob: float) -> bool:
    """True with probability ``prob`` (always draws, so later draws do not depend on ``prob``)."""
    return float(torch.rand((), generator=generator, dtype=torch.float64)) < prob


def randint(generator: torch.Generator, low: int, high: int) -> int:
    """One integer uniform in ``[low, high]`` (both included)."""
    return int(torch.randint(int(low), int(high) + 1, (), generator=generator))


def choice(generator: torch.Generator, options: Sequence[T], probs: Sequence[float] | None = None) -> T:
    """One element of ``options``, with probabilities ``probs`` (uniform if None)."""
    if probs is None:
        return options[randint(generator, 0, len(options) - 1)]
    weights = torch.tensor([float(p) for p in probs], dtype=torch.float64)
    return options[int(torch.multinomial(weights, 1, generator=generator))]


def permutation(generator: torch.Generator, n: int) -> list[int]:
    """A random permutation of ``range(n)``."""
    return torch.randperm(n, generator=generator).tolist()


def log_uniform_sym(generator: torch.Generator, max_rel: float) -> float:
    """A factor ``exp(u)`` with ``u`` uniform in ``[-log(1 + max_rel), log(1 + max_rel)]``."""
    bound = math.log1p(max_rel)
    return math.exp(uniform(generator, -bound, bound))
