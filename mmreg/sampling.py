"""Batch order that depends only on (seed, epoch), sharded across processes, resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochBatches(Sampler[list[int]]):
    """Each epoch a fresh permutation seeded by (seed, epoch), cut into global batches of
    ``batch_size * world`` samples; process ``rank`` takes its slice of each global batch.

    The concatenation of every process's batch is exactly the single-process batch
    of the global size, and ``start_at`` skips batches already trained on, so a
    resumed run sees the data a never-interrupted run would.
    """

    def __init__(self, size: int, batch_size: int, seed: int, *, rank: int = 0, world: int = 1) -> None:
        self.size, self.batch_size, self.seed, self.rank, self.world = size, batch_size, seed, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_at: int = 0) -> None:
        self.epoch, self.start = epoch, start_at

    def __len__(self) -> int:
        return self.size // (self.batch_size * self.world)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        global_batch = self.batch_size * self.world
        for b in range(self.start, len(self)):
            first = b * global_batch + self.rank * self.batch_size
            yield order[first : first + self.batch_size]
