"""Batches that are all images or all videos, mixed by ratio, resumable at any batch.

DOVE and SparkVSR stage 2 draw per step whether the batch is an image batch
(``random() < image_ratio``: SparkVSR 0.5, DOVE 0.8; sparkvsr.md §8.2). Here the choice of every
batch of an epoch depends only on ``(seed, epoch)``: the global batches of an epoch are decided in
order, each takes the next ``batch_size`` indices of its kind from a per-epoch permutation (cycled
when a kind runs out), and process ``rank`` takes every ``num_replicas``-th global batch. So each
process's batch is homogeneous, processes never share an index within a cycle, and a resumed run
(``set_position``) reads exactly the batches the interrupted one would have.

Dataset index layout: videos are ``[0, num_videos)``, images ``[num_videos, num_videos + num_images)``.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from vsrkit.data.draws import item_generator
from vsrkit.errors import UserError


class ImageVideoBatchSampler(Sampler[list[int]]):
    """Per-process batches of one epoch, each all-image or all-video (use as ``batch_sampler=``).

    Args:
        num_videos: Video items (indices ``0 .. num_videos - 1``).
        num_images: Image items (indices after the videos).
        batch_size: Items per batch on one process.
        image_ratio: Probability that a batch is an image batch when both kinds exist (with only
            one kind, every batch is of that kind).
        num_replicas: Number of training processes.
        rank: This process's index in ``[0, num_replicas)``.
        seed: Seed of the permutations and batch kinds.
        shuffle: Permute each kind per epoch; if False indices go in order (kinds stay random).
    """

    def __init__(self, num_videos: int, num_images: int, batch_size: int, image_ratio: float = 0.0,
                 num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"`rank` must be in [0, {num_replicas}). Got {rank}.")
        if batch_size < 1:
            raise UserError(f"`batch_size` must be >= 1. Got {batch_size}.")
        self.num_videos = num_videos
        self.num_images = num_images
        self.batch_size = batch_size
        self.image_ratio = image_ratio
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0
        if self.batches_per_epoch < 1:
            raise UserError(f"dataset too small: {num_videos + num_images} items cannot fill one batch of "
                            f"{batch_size} on each of {num_replicas} processes (raise data.repeat).")

    @property
    def batches_per_epoch(self) -> int:
        """Batches each process reads per epoch."""
        return (self.num_videos + self.num_images) // (self.batch_size * self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at the first batch of ``epoch``."""
        self.set_position(epoch, 0)

    def set_position(self, epoch: int, start_batch: int) -> None:
        """Make the next iteration yield epoch ``epoch`` from its batch ``start_batch`` on."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"`start_batch` must be in [0, {self.batches_per_epoch}]. Got {start_batch}.")
        self.epoch = epoch
        self.start_batch = start_batch

    def _order(self, n: int, offset: int, generator: torch.Generator) -> list[int]:
        order = torch.randperm(n, generator=generator).tolist() if self.shuffle else list(range(n))
        return [offset + i for i in order]

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All batches this process reads in ``epoch``, in order."""
        # Stream 0 decides the kinds, 1 and 2 permute videos and images (negative indices keep
        # these streams apart from the per-item generators).
        kinds = item_generator(self.seed, epoch, -1)
        pools = {False: (self.num_videos, 0, item_generator(self.seed, epoch, -2)),
                 True: (self.num_images, self.num_videos, item_generator(self.seed, epoch, -3))}
        queues: dict[bool, list[int]] = {False: [], True: []}
        batches = []
        for g in range(self.batches_per_epoch * self.num_replicas):
            draw = float(torch.rand((), generator=kinds, dtype=torch.float64))
            if self.num_images == 0:
                is_image = False
            elif self.num_videos == 0:
                is_image = True
            else:
                is_image = draw < self.image_ratio
            n, offset, perm_generator = pools[is_image]
            while len(queues[is_image]) < self.batch_size:
                queues[is_image].extend(self._order(n, offset, perm_generator))
            batch, queues[is_image] = queues[is_image][:self.batch_size], queues[is_image][self.batch_size:]
            if g % self.num_replicas == self.rank:
                batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.epoch_batches(self.epoch)[self.start_batch:])

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch
