"""A run as its metrics.jsonl tells it: the train and eval records, the series the plots draw, and the
figures of the summary (final metrics, wall time, throughput, where the time went)."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from lmtool.errors import LmtoolError

# Eval record keys that are not metrics to plot: bookkeeping, or plotted with the train loss.
NOT_EVAL_METRICS = {"type", "step", "tokens", "eval_s", "loss"}


@dataclass
class RunHistory:
    """The records of one run directory, in file order (a resumed run's file holds each step once)."""

    run_dir: Path
    label: str
    train: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    order: list[dict] = field(default_factory=list)
    config_yaml: str = ""

    def series(self, kind: str, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of `key` in the `kind` ("train" or "eval") records that have a number for it."""
        records = self.train if kind == "train" else self.evals
        points = [(r["step"], float(r[key])) for r in records if _is_number(r.get(key))]
        return [s for s, _ in points], [v for _, v in points]

    def eval_metrics(self) -> list[str]:
        """The eval metrics besides the loss (perplexity, accuracy, f1, ...), in first-seen order: the float
        values, as on the console (integers are counts: examples, tokens)."""
        names: list[str] = []
        for record in self.evals:
            names += [
                k
                for k, v in record.items()
                if k not in NOT_EVAL_METRICS and isinstance(v, float) and k not in names
            ]
        return names


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_history(run_dir: Path, label: str | None = None) -> RunHistory:
    """Read `run_dir`/metrics.jsonl (and config.yaml when there); exit 2 naming the file when it is missing
    or holds no records. A last line cut short by a kill is skipped."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise LmtoolError(f"{path}: not found (is {run_dir} a run directory of lmtool pretrain/finetune?)")
    history = RunHistory(run_dir, label or run_dir.name)
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("type") not in ("train", "eval"):
            continue
        history.order.append(record)
        (history.train if record["type"] == "train" else history.evals).append(record)
    if not history.order:
        raise LmtoolError(f"{path}: no train or eval records yet")
    config = run_dir / "config.yaml"
    history.config_yaml = config.read_text(encoding="utf-8") if config.is_file() else ""
    return history


def time_split(history: RunHistory) -> dict[str, float | None]:
    """Seconds of the run by where they went, from metrics.jsonl alone.

    elapsed_s counts from the start of each process's training loop, so a resumed run is several segments
    (elapsed_s drops). Evaluations logged after a segment's last train record are outside its elapsed_s;
    earlier ones are inside it. Checkpoint saves are not timed apart: they stay with the train steps.
    """
    wall = evals = 0.0
    timed_evals = False
    last_elapsed: float | None = None
    tail = 0.0  # eval seconds logged since the segment's last train record
    for record in history.order:
        if record["type"] == "train" and _is_number(record.get("elapsed_s")):
            if last_elapsed is not None and record["elapsed_s"] < last_elapsed:  # a new process: resumed
                wall += last_elapsed + tail
            last_elapsed, tail = record["elapsed_s"], 0.0
        elif record["type"] == "eval" and _is_number(record.get("eval_s")):
            timed_evals = True
            evals += record["eval_s"]
            tail += record["eval_s"]
    if last_elapsed is None:
        return {"wall_s": None, "train_s": None, "eval_s": evals if timed_evals else None}
    wall += last_elapsed + tail
    return {
        "wall_s": wall,
        "train_s": wall - evals,
        "eval_s": evals if timed_evals else None,
    }


def summarize(history: RunHistory) -> dict:
    """The summary's numbers, each taken from metrics.jsonl (None when the run did not record it)."""
    last = history.train[-1] if history.train else {}
    last_eval = history.evals[-1] if history.evals else {}
    times = time_split(history)
    _, speeds = history.series("train", "tokens_per_s")
    _, mfus = history.series("train", "mfu")
    _, eval_losses = history.series("eval", "loss")
    tokens = last.get("tokens")
    return {
        "steps": max((r["step"] for r in history.order), default=0),
        "tokens": tokens,
        "samples": last.get("samples"),
        "train_loss": last.get("loss"),
        "train_loss_step": last.get("step"),
        "eval_step": last_eval.get("step"),
        "eval": {k: last_eval[k] for k in ["loss", *history.eval_metrics()] if _is_number(last_eval.get(k))},
        "best_eval_loss": min(eval_losses) if eval_losses else None,
        "tokens_per_s_median": statistics.median(speeds) if speeds else None,
        "tokens_per_s_overall": tokens / times["train_s"] if tokens and times["train_s"] else None,
        "mfu_median": statistics.median(mfus) if mfus else None,
        "memory_gb": max(
            (r["memory_gb"] for r in history.train if _is_number(r.get("memory_gb"))), default=None
        ),
        **times,
    }
