"""Per-step numbers (loss, token counts, grad norm, skipped updates) kept on the device until read.

Reading a GPU tensor on the host (`.item()`, `float()`, `.tolist()`) waits until the GPU has finished
all queued work, so a step that reads one drains the GPU before the next is queued. The engine records
each step's numbers as one small device tensor and reads them all at once when it logs or checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# columns of a step's row
LOSS_SUM, TARGETS, TOKENS, SKIPPED, GRAD_NORM = range(5)


def loss_divisor(tokens_per_micro_batch: int) -> float:
    """What the backward pass divides each micro-batch's loss sum by: a power of two near its token count.

    Gradients then have the size of a mean loss's, which fp16 needs (those of a sum overflow, and the
    GradScaler backs off, skipping ~log2(tokens) updates at the start); a power of two, so that
    multiplying it back before the optimizer step is exact and any split of a global batch still gives
    the same step.
    """
    return 2.0 ** round(math.log2(max(tokens_per_micro_batch, 1)))


@dataclass(frozen=True)
class StepNumbers:
    step: int
    loss_sum: float
    targets: int
    tokens: int
    skipped: bool
    grad_norm: float


class StepStats:
    """Rows recorded per optimizer step on the device; `read()` returns them (one host transfer) and clears."""

    def __init__(self) -> None:
        self._rows: list[tuple[int, torch.Tensor]] = []

    def record(
        self,
        step: int,
        totals: torch.Tensor,
        skipped: torch.Tensor,
        grad_norm: torch.Tensor,
    ) -> None:
        """`totals`: (loss sum, target tokens, tokens) summed over micro-steps and ranks."""
        dtype = totals.dtype
        row = torch.cat([totals[:3], skipped.reshape(1).to(dtype), grad_norm.reshape(1).to(dtype)])
        self._rows.append((step, row))

    def read(self) -> list[StepNumbers]:
        if not self._rows:
            return []
        values = torch.stack([row for _, row in self._rows]).tolist()
        steps = [step for step, _ in self._rows]
        self._rows.clear()
        return [
            StepNumbers(step, v[LOSS_SUM], int(v[TARGETS]), int(v[TOKENS]), v[SKIPPED] > 0, v[GRAD_NORM])
            for step, v in zip(steps, values, strict=True)
        ]
