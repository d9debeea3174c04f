"""Deterministic data order over global sample positions.

Position p counts the samples consumed since the start of training across all processes. Epoch
e = p // n visits the dataset in the permutation drawn from a generator seeded with seed + e, so
the sample at any position is a pure function of (seed, p): a resumed run starts at its saved
position without replaying batches, and a run on a different number of processes continues at
the same place. Each optimizer step consumes one global batch of consecutive positions; micro-step
m of rank r takes the slice [(m * world + r) * b, (m * world + r + 1) * b) of it, so two processes
with batch b see, together, exactly what one process with batch 2b sees.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset


class OrderedView(Dataset):
    """Map a global position to a dataset row plus its `sample_id` (= epoch * n + index)."""

    def __init__(self, dataset, seed: int):
        self.dataset = dataset
        self.n = len(dataset)
        self.seed = seed
        self._epoch = -1
        self._perm: list[int] = []

    def locate(self, position: int) -> tuple[int, int]:
        """(dataset index, sample_id) of a global position."""
        epoch, offset = divmod(position, self.n)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._perm = torch.randperm(self.n, generator=gen).tolist()
            self._epoch = epoch
        index = self._perm[offset]
        return index, epoch * self.n + index

    def __getitem__(self, position: int) -> dict:
        return self.__getitems__([position])[0]

    def __getitems__(self, positions: list[int]) -> list[dict]:
        located = [self.locate(p) for p in positions]
        columns = self.dataset[[index for index, _ in located]]  # one Arrow read for the micro-batch
        rows = [{key: values[i] for key, values in columns.items()} for i in range(len(located))]
        for row, (_, sample_id) in zip(rows, located, strict=True):
            row["sample_id"] = sample_id
        return rows

    def __len__(self) -> int:
        return self.n


class RankBatches:
    """Batch sampler: this rank's micro-batches of positions, from `start` on, forever."""

    def __init__(self, start: int, global_batch: int, micro_batch: int, world_size: int, rank: int):
        self.start = start
        self.global_batch = global_batch
        self.micro_batch = micro_batch
        self.world_size = world_size
        self.rank = rank

    def __iter__(self) -> Iterator[list[int]]:
        position = self.start
        micro_steps = self.global_batch // (self.micro_batch * self.world_size)
        while True:
            for micro in range(micro_steps):
                first = position + (micro * self.world_size + self.rank) * self.micro_batch
                yield list(range(first, first + self.micro_batch))
            position += self.global_batch
