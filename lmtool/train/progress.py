"""What trainer_state.pt records of a run's progress, besides optimizer, scheduler, scaler and RNG states."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Progress:
    """What trainer_state.pt records besides optimizer, scheduler, scaler and RNG states."""

    step: int = 0
    samples_seen: int = 0  # data position: global samples consumed
    tokens_seen: int = 0
    best_value: float | None = None  # of train.metric_for_best, named in best_metric
    best_step: int | None = None
    best_metric: str | None = None
    evals_since_best: int = 0  # evaluations without a new best (train.patience)
    nonfinite_total: int = 0
    nonfinite_in_row: int = 0
    scaler_skipped: int = 0  # fp16 updates the GradScaler skipped (gradient overflow)

    @classmethod
    def from_saved(cls, saved: dict) -> Progress:
        """Progress of a checkpoint; those written before metric_for_best recorded the best loss."""
        saved = dict(saved)
        if "best_loss" in saved:
            saved["best_value"] = saved.pop("best_loss")
            saved["best_metric"] = "loss" if saved["best_value"] is not None else None
        return cls(**saved)
