"""Validation shared by all ranks: each evaluates its share of the batches, rank 0 merges the results.

The batches are the ones a single process evaluates (data_order.eval_batch, capped by
train.eval_batches), dealt round-robin: rank r takes batches r, r + W, r + 2W, ... Each batch is
scored by a fresh evaluator whose `state()` goes to rank 0 with the batch index; rank 0 merges them
in batch order, so W ranks give the metrics of one: per-example outputs in the original order, sums
added in the same order. Every rank runs the same number of forwards (FSDP all-gathers the weights
inside each forward, so a rank that skipped one would leave the others waiting): a rank out of
batches scores a repeat of the last one and discards it (`eval_slots`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import torch.distributed as dist

from lmtool.errors import LmtoolError
from lmtool.train.data_order import eval_batch, eval_batch_count
from lmtool.train.distributed import DistEnv


def eval_slots(batches: int, rank: int, world_size: int) -> list[tuple[int, bool]]:
    """(batch index, keep) of every forward this rank runs: its round-robin share, padded to
    ceil(batches / world_size) forwards with the last batch (the smallest), whose result is discarded."""
    slots = -(-batches // world_size)
    return [
        (index, True) if index < batches else (batches - 1, False)
        for index in (rank + k * world_size for k in range(slots))
    ]


def sharded_metrics(
    model: torch.nn.Module,
    task,
    data,
    batch_size: int,
    max_batches: int | None,
    env: DistEnv,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
) -> dict | None:
    """The split's metrics on rank 0 (None on the others), each forward under `autocast()` (the strategy's:
    FSDP's mixed precision needs none). `model` is the unwrapped model: DDP's wrapper
    would broadcast buffers in every forward. An LmtoolError on any rank is raised there and on rank 0,
    after all ranks have sent their results, so that none waits for the others."""
    parts: list[tuple[int, object]] = []
    failure: LmtoolError | None = None
    model.eval()
    try:
        with torch.no_grad(), autocast():
            for index, keep in eval_slots(
                eval_batch_count(len(data), batch_size, max_batches), env.rank, env.world_size
            ):
                evaluator = task.evaluator()
                evaluator.update(model, eval_batch(data, batch_size, index, task.collate, device))
                if keep:
                    parts.append((index, evaluator.state()))
    except LmtoolError as exc:
        failure = exc
    finally:
        model.train()
    # The message, not the exception: LmtoolError subclasses with more arguments do not unpickle.
    gathered = _gather_on_main((None if failure is None else str(failure), parts), env)
    if failure is not None:
        raise failure
    if gathered is None:
        return None
    for rank, (message, _) in enumerate(gathered):
        if message is not None:
            raise LmtoolError(f"{message} (rank {rank})")
    merged = task.evaluator()
    merged.merge([state for _, state in sorted((p for _, ps in gathered for p in ps), key=lambda p: p[0])])
    return merged.compute()


def _gather_on_main(obj: object, env: DistEnv) -> list | None:
    """Every rank's `obj` on rank 0, in rank order (None elsewhere)."""
    if not dist.is_initialized():
        return [obj]
    received = [None] * env.world_size if env.is_main else None
    dist.gather_object(obj, received, dst=0)
    return received
