"""The contract between the training engine (or `lmtool evaluate`) and a task."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch


class Evaluator(Protocol):
    """Accumulates a split batch by batch. `state()` is what it accumulated, picklable, and `merge(states)`
    adds such states, in batch order, into this one: how ranks that each evaluated a share of the batches
    (train/sharded_eval.py) get the metrics of one process that evaluated them all."""

    def update(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None: ...

    def state(self) -> object: ...

    def merge(self, states: Sequence[object]) -> None: ...

    def compute(self) -> dict[str, float]: ...


class Task(Protocol):
    name: str

    def collate(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        """Rows ({"input_ids", "sample_id"}) to a batch of tensors."""
        ...

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss over the batch's target tokens, number of target tokens)."""
        ...

    def evaluator(self) -> Evaluator: ...


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the model's forward takes (labels stay with the task, which computes its own loss)."""
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


class TokenLossEvaluator:
    """Token-weighted loss over a whole split (not a mean of batch means), perplexity and, for
    masked LMs, accuracy. `stats(model, batch)` returns (nll_sum, count, correct)."""

    def __init__(self, stats, *, with_accuracy: bool = False):
        self._stats = stats
        self.with_accuracy = with_accuracy
        self.nll = 0.0
        self.count = 0
        self.correct = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
        nll, count, correct = self._stats(model, batch)
        self.nll += float(nll)
        self.count += int(count)
        self.correct += int(correct)

    def state(self) -> tuple[float, int, int]:
        return self.nll, self.count, self.correct

    def merge(self, states: Sequence[tuple[float, int, int]]) -> None:
        for nll, count, correct in states:
            self.nll, self.count, self.correct = self.nll + nll, self.count + count, self.correct + correct

    def compute(self) -> dict[str, float]:
        loss = self.nll / max(self.count, 1)
        metrics = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": self.count}
        if self.with_accuracy:
            metrics["accuracy"] = self.correct / max(self.count, 1)
        return metrics
