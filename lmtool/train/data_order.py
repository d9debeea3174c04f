"""Deterministic data order over global sample positions.

Position p counts the samples consumed since the start of training across all processes. Epoch
e = p // n visits the dataset in the permutation drawn from a generator seeded with seed + e, so
the sample at any position is a pure function of (seed, p): a resumed run starts at its saved
position without replaying batches, and a run on a different number of processes continues at
the same place. Each optimizer step consumes one global batch of consecutive positions; micro-step
m of rank r takes the slice [(m * world + r) * b, (m * world + r + 1) * b) of it, so two processes
with batch b see, together, exactly what one process with batch 2b sees.

Length grouping (fine-tuning on examples of varied length, padded per batch): the epoch's
permutation is cut into megabatches of `group` positions, each sorted by length (longest first),
and then the whole global batches of the epoch are shuffled with the same generator, so a step
pads little and long and short steps alternate at random. The order stays a pure function of
(seed, epoch, lengths), so resume and any number of processes see the same samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset

# Length grouping sorts megabatches of this many global batches (as transformers' LengthGroupedSampler)
LENGTH_GROUP_BATCHES = 50


class OrderedView(Dataset):
    """Map a global position to a dataset row plus its `sample_id` (= epoch * n + index)."""

    def __init__(
        self,
        dataset,
        seed: int,
        lengths: Sequence[int] | None = None,
        group: int | None = None,
        batch: int = 1,
    ):
        self.dataset = dataset
        self.n = len(dataset)
        self.seed = seed
        self.lengths = None if lengths is None else torch.as_tensor(list(lengths), dtype=torch.int64)
        if self.lengths is not None and len(self.lengths) != self.n:
            raise ValueError(f"{len(self.lengths)} lengths for {self.n} examples")
        self.group = max(group or batch, 1)
        self.batch = batch
        self._epoch = -1
        self._perm: list[int] = []

    def locate(self, position: int) -> tuple[int, int]:
        """(dataset index, sample_id) of a global position."""
        epoch, offset = divmod(position, self.n)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            perm = torch.randperm(self.n, generator=gen)
            self._perm = (perm if self.lengths is None else self._grouped(perm, epoch, gen)).tolist()
            self._epoch = epoch
        index = self._perm[offset]
        return index, epoch * self.n + index

    def _grouped(self, perm: torch.Tensor, epoch: int, gen: torch.Generator) -> torch.Tensor:
        """`perm` in length-sorted megabatches, its global batches shuffled.

        Chunks are aligned to the steps, which need not start at the epoch's first position: the
        `head` positions that complete a step begun in the previous epoch stay first and the last
        partial step stays last; the megabatches start after the head.
        """
        head = min((-epoch * self.n) % self.batch, self.n)
        offsets = torch.arange(self.n)
        megabatch = torch.where(offsets < head, -1, (offsets - head) // self.group)
        lengths = self.lengths[perm]
        key = megabatch * (int(lengths.max()) + 1) + (lengths.max() - lengths)
        perm = perm[torch.sort(key, stable=True).indices]  # by megabatch, then longest first
        full = (self.n - head) // self.batch
        order = torch.randperm(full, generator=gen)
        chunks = perm[head : head + full * self.batch].view(full, self.batch)[order].flatten()
        return torch.cat([perm[:head], chunks, perm[head + full * self.batch :]])

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


def eval_batch_count(examples: int, batch_size: int, max_batches: int | None) -> int:
    """How many validation batches one process evaluates: all of the split, or the first `max_batches`."""
    batches = -(-examples // batch_size)
    return batches if max_batches is None else min(batches, max_batches)


def eval_batch(dataset, batch_size: int, index: int, collate, device) -> dict:
    """Validation batch `index` of `dataset` in order (rows index * batch_size on), collated, on `device`."""
    indices = list(range(index * batch_size, min((index + 1) * batch_size, len(dataset))))
    columns = dataset[indices]
    rows = [{**{k: v[i] for k, v in columns.items()}, "sample_id": row} for i, row in enumerate(indices)]
    return {k: v.to(device) for k, v in collate(rows).items()}


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
