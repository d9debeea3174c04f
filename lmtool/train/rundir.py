"""Guards on the run directory before training touches it: one run at a time, and only lmtool's
own run directories are continued or deleted."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch
import yaml

from lmtool import ownership
from lmtool.config import Config, LoggingConfig
from lmtool.errors import LmtoolError
from lmtool.runlock import DirLock
from lmtool.train import distributed
from lmtool.train.metrics import MetricsSink, truncate_metrics
from lmtool.train.requeue import clear_marker
from lmtool.train.trackers import open_trackers

FINISHED = "FINISHED"  # {"step": N, "config_sha256": ...}, once final/ is in place


def _config_key(config_yaml: str) -> str:
    return hashlib.sha256(config_yaml.encode("utf-8")).hexdigest()


def mark_finished(run_dir: Path, config_yaml: str, step: int | None) -> None:
    """Rank 0, once final/ is in place: the step the run ended at and the config it ran, so that the same
    command run again says so and changes nothing (`finished_step`)."""
    record = {"step": step, "config_sha256": _config_key(config_yaml)}
    (Path(run_dir) / FINISHED).write_text(json.dumps(record) + "\n", encoding="utf-8")


def finished_step(run_dir: Path, config_yaml: str) -> int | None:
    """The step at which a run of this very config finished, its final/ in place; None when there is work
    to do (no such run, a run stopped before its end, or a changed config: more steps, other settings)."""
    try:
        record = json.loads((Path(run_dir) / FINISHED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = isinstance(record, dict) and record.get("config_sha256") == _config_key(config_yaml)
    return record.get("step") if same and (Path(run_dir) / "final").is_dir() else None


@contextlib.contextmanager
def run_dir_lock(run_dir: Path, env: distributed.DistEnv, device: torch.device) -> Iterator[None]:
    """Rank 0 holds the run directory's lock for the whole run; if it cannot, every rank stops (exit 2)."""
    lock = DirLock(run_dir, "run.output_dir")
    refused: LmtoolError | None = None
    if env.is_main:
        try:
            lock.acquire()
        except LmtoolError as exc:
            refused = exc
    if distributed.any_rank(refused is not None, device):
        raise refused or LmtoolError(f"run.output_dir: rank 0 could not lock {run_dir}")
    try:
        yield
    finally:
        lock.release()


def check_run_dir(config: Config, run_dir: Path, overwrite: bool) -> None:
    """A non-empty run directory must be one lmtool made (else nothing in it is continued, overwritten
    or deleted); with `overwrite` it must also hold none of the run's inputs."""
    if not run_dir.exists() or ownership.is_empty_dir(run_dir):
        return
    if not ownership.is_run_dir(run_dir):
        raise LmtoolError(
            f"run.output_dir: {run_dir} exists and is not an lmtool run directory (no {ownership.RUN_MARKER}, "
            "or config.yaml with metrics.jsonl or checkpoints/); refusing to write into it or delete it, "
            "even with --overwrite - choose another run.output_dir"
        )
    if overwrite:
        data = config.data
        inputs = {
            "data.processed_dir": data.processed_dir,
            "tokenizer.path": config.tokenizer.path,
            "model.init_from": config.model.init_from,
        }
        inputs |= {f"data.sources.{i}.path": s.path for i, s in enumerate(data.sources)}
        inputs |= {f"data.validation_sources.{i}.path": s.path for i, s in enumerate(data.validation_sources)}
        inputs |= {f"data.test_sources.{i}.path": s.path for i, s in enumerate(data.test_sources)}
        ownership.check_removable(run_dir, "run.output_dir", inputs)
        ownership.check_only_run_files(run_dir)


def open_run_dir(
    run_dir: Path, config_yaml: str, resumed_step: int | None, logging: LoggingConfig
) -> MetricsSink:
    """Rank 0's start of a run: the directory with its marker and resolved config.yaml, metrics.jsonl cut
    back to the resumed step (or started anew), and the sink that appends to it and feeds the trackers."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ownership.mark_run_dir(run_dir)
    clear_marker(run_dir)
    (run_dir / FINISHED).unlink(missing_ok=True)  # a run that trains is not finished until it says so again
    (run_dir / "config.yaml").write_text(config_yaml, encoding="utf-8")
    metrics = run_dir / "metrics.jsonl"
    if resumed_step is not None:
        truncate_metrics(metrics, resumed_step)
    elif metrics.exists():
        metrics.unlink()
    trackers = open_trackers(logging, run_dir, yaml.safe_load(config_yaml), resumed_step or 0)
    return MetricsSink(metrics, trackers)
