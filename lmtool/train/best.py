"""Which evaluation is the best so far (train.metric_for_best, greater_is_better) and when to stop early
(train.patience). The record lives in the engine's Progress, so a resumed run continues it exactly."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lmtool import console
from lmtool.config import ConfigError, TrainConfig

if TYPE_CHECKING:
    from lmtool.train.progress import Progress

LOWER_IS_BETTER = ("loss", "perplexity", "mse")


def greater_is_better(metric: str, setting: bool | None) -> bool:
    """The setting, else False for loss-like names (loss, perplexity, mse, *_loss), True otherwise."""
    if setting is not None:
        return setting
    return not (metric in LOWER_IS_BETTER or metric.endswith("_loss"))


class BestTracker:
    def __init__(self, cfg: TrainConfig):
        self.metric = cfg.metric_for_best
        self.greater = greater_is_better(self.metric, cfg.greater_is_better)
        self.patience = cfg.patience

    def adopt(self, state: Progress) -> None:
        """On resume: a record kept for another metric is dropped (its values do not compare)."""
        if state.best_step is not None and state.best_metric != self.metric:
            console.warning(
                f"train.metric_for_best changed from {state.best_metric} to {self.metric}: the best so far is forgotten"
            )
            state.best_value, state.best_step, state.evals_since_best = None, None, 0
        state.best_metric = self.metric

    def update(self, state: Progress, metrics: dict) -> bool:
        """Record one evaluation in `state`; return whether it is a new best. A metric the evaluation does
        not report is a config error (exit 2), raised at the first evaluation."""
        value = metrics.get(self.metric)
        if not isinstance(value, int | float) or isinstance(value, bool):
            numbers = sorted(
                k for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
            )
            problem = "is not reported by the evaluation" if value is None else "is not a number"
            raise ConfigError(
                "train.metric_for_best", f"{problem}; available: {', '.join(numbers)}", value=self.metric
            )
        best = state.best_value
        improved = math.isfinite(value) and (best is None or (value > best if self.greater else value < best))
        state.best_metric = self.metric
        if improved:
            state.best_value, state.best_step, state.evals_since_best = float(value), state.step, 0
        else:
            state.evals_since_best += 1
        return improved

    def exhausted(self, state: Progress) -> bool:
        """Whether `patience` evaluations in a row brought no new best."""
        return self.patience is not None and state.evals_since_best >= self.patience

    def announce_stop(self, state: Progress) -> None:
        console.info(
            f"early stop at step {state.step}: no better {self.metric} in {self.patience} evaluations "
            f"(best at step {state.best_step})"
        )
