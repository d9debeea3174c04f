"""The batch geometry, which depends on the number of processes (known only at launch): the engine
computes it from the world size, `lmtool.validate` checks it up front for $WORLD_SIZE, `plan` estimates it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmtool.config.errors import ConfigError

if TYPE_CHECKING:
    from lmtool.config import TrainConfig


def global_batch(train: TrainConfig, block_size: int, world_size: int) -> int:
    """Sequences per optimizer step: a whole number of micro-batches across `world_size` processes."""
    per_micro = train.batch_size * world_size
    if train.global_batch_tokens is not None:
        sequences = max(round(train.global_batch_tokens / block_size), 1)
        return max(round(sequences / per_micro), 1) * per_micro
    size = train.global_batch_size or per_micro
    if size % per_micro:
        raise ConfigError(
            "train.global_batch_size",
            f"must be a multiple of batch_size x processes = {train.batch_size} x {world_size} = {per_micro}",
            value=size,
        )
    return size
