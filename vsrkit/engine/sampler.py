"""The order in which training reads the dataset, resumable at any batch.

The order of an epoch depends only on ``(seed, epoch)``; each process takes every
``num_replicas``-th index of it. A position is ``(epoch, batches already taken in the epoch)``,
so a resumed run continues with exactly the batch the interrupted one would have read next.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Per-process indices of one epoch, starting at a given batch.

    Every process sees ``len(dataset) // (num_replicas * batch_size)`` batches per epoch; the
    tail that does not fill a batch on every process is dropped (so all processes step together).

    Args:
        dataset_len: Number of samples in the dataset.
        batch_size: Samples per batch on one process.
        num_replicas: Number of training processes.
        rank: This process's index in ``[0, num_replicas)``.
        seed: Seed of the per-epoch permutation.
        shuffle: Permute the indices each epoch; if False the order is 0, 1, 2, ...
    """

    def __init__(self, dataset_len: int, batch_size: int, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0, shuffle: bool = True):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"`rank` must be in [0, {num_replicas}). Got {rank}.")
        self.dataset_len = dataset_len
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        """Batches each process reads per epoch."""
        return self.dataset_len // (self.num_replicas * self.batch_size)

    def set_position(self, epoch: int, start_batch: int) -> None:
        """Make the next iteration yield epoch ``epoch`` from its batch ``start_batch`` on."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"`start_batch` must be in [0, {self.batches_per_epoch}]. Got {start_batch}.")
        self.epoch = epoch
        self.start_batch = start_batch

    def epoch_indices(self, epoch: int) -> list[int]:
        """All indices this process reads in ``epoch``, in order (batches not yet split)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.dataset_len, generator=generator).tolist()
        else:
            order = list(range(self.dataset_len))
        usable = self.batches_per_epoch * self.batch_size * self.num_replicas
        return order[:usable][self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_indices(self.epoch)
        return iter(indices[self.start_batch * self.batch_size:])

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size
