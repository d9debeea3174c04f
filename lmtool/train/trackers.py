"""Experiment trackers beside metrics.jsonl: TensorBoard and Weights & Biases, fed by rank 0's sink.

A tracker is a convenience, metrics.jsonl the record: a tracker that cannot start, or fails mid-run,
warns once and is dropped, and training goes on.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Protocol

from lmtool import console
from lmtool.config import LoggingConfig, WandbConfig


class Tracker(Protocol):
    name: str

    def log(self, record: dict) -> None: ...

    def close(self, final: dict[str, float]) -> None: ...


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a metrics record as `type/key` (nested values, per class, stay in metrics.jsonl)."""
    return {
        f"{record['type']}/{key}": value
        for key, value in record.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and key != "step"
    }


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self, directory: Path, last_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # TensorBoard gets the records metrics.jsonl gets, and a resumed run has truncated that file:
        # events past its last record are from steps the run redoes, so they are purged.
        purge = last_step + 1 if Path(directory).is_dir() else None
        self._writer = SummaryWriter(str(directory), purge_step=purge)

    def log(self, record: dict) -> None:
        for key, value in scalars(record).items():
            self._writer.add_scalar(key, value, record["step"])

    def close(self, final: dict[str, float]) -> None:
        self._writer.close()


class WandbTracker:
    """One W&B run per lmtool run: its id is kept in <run_dir>/wandb, so a resumed run continues it."""

    name = "wandb"

    def __init__(self, settings: WandbConfig, run_dir: Path, config: dict):
        import wandb

        folder = run_dir / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / "lmtool-run-id"
        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
        id_file.write_text(run_id + "\n")
        self._run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            mode=settings.mode,
            dir=str(run_dir),
            name=run_dir.name,
            id=run_id,
            resume="allow",
            config=config,
            # lmtool's stdout carries results only: W&B must not wrap or copy the console.
            settings=wandb.Settings(console="off", silent=True),
        )

    def log(self, record: dict) -> None:
        self._run.log(scalars(record), step=record["step"])

    def close(self, final: dict[str, float]) -> None:
        self._run.summary.update(final)
        self._run.finish()


def open_trackers(logging: LoggingConfig, run_dir: Path, config: dict, last_step: int) -> list[Tracker]:
    """The trackers the logging section asks for that start; the others are named in a warning."""
    trackers: list[Tracker] = []
    if logging.tensorboard:
        try:
            trackers.append(TensorBoardTracker(run_dir / "tensorboard", last_step))
        except ImportError:
            if logging.tensorboard is True:  # `auto` without tensorboard installed is simply off
                console.warning(
                    "logging.tensorboard is on but tensorboard is not installed (pip install 'lmtool[tensorboard]')"
                )
        except Exception as exc:  # noqa: BLE001 - a tracker never stops training
            console.warning(
                f"TensorBoard could not start ({type(exc).__name__}: {exc}); training goes on without it"
            )
    if logging.wandb is not None and logging.wandb.mode != "disabled":
        try:
            trackers.append(WandbTracker(logging.wandb, run_dir, config))
        except ImportError:
            console.warning(
                "logging.wandb is set but wandb is not installed (pip install 'lmtool[wandb]'); training goes on without it"
            )
        except Exception as exc:  # noqa: BLE001 - a tracker never stops training
            console.warning(
                f"Weights & Biases could not start ({type(exc).__name__}: {exc}); training goes on without it"
            )
    return trackers
