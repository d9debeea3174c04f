"""Everything human-facing goes to stderr (stdout is for results), from rank 0 only.

On a TTY: rich output and progress bars. Otherwise: plain timestamped lines, or JSON
lines with `--log-format json` so cluster log collectors can parse them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@dataclass
class _Settings:
    quiet: bool = False
    log_format: str = "auto"  # auto | plain | json


settings = _Settings()
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def configure(quiet: bool = False, log_format: str = "auto") -> None:
    settings.quiet = quiet
    settings.log_format = log_format


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0


def _fancy() -> bool:
    return settings.log_format == "auto" and sys.stderr.isatty()


def _emit(level: str, message: str, fields: dict | None = None) -> None:
    if not is_rank_zero() or (settings.quiet and level == "info"):
        return
    if settings.log_format == "json":
        record = {"time": round(time.time(), 3), "level": level, "message": message, **(fields or {})}
        print(json.dumps(record), file=sys.stderr, flush=True)
    elif _fancy():
        style = {"info": "", "warning": "yellow", "error": "bold red"}[level]
        stderr.print(f"[{style}]{message}[/{style}]" if style else message, markup=bool(style))
    else:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{stamp} {level.upper():7s} {message}", file=sys.stderr, flush=True)


def info(message: str, **fields: object) -> None:
    _emit("info", message, fields)


def warning(message: str, **fields: object) -> None:
    _emit("warning", message, fields)


def error(message: str) -> None:
    """Errors always print (quiet or not, any rank): they explain a non-zero exit."""
    print(f"error: {message}", file=sys.stderr, flush=True)


class _Bar:
    """A progress handle; a no-op unless a rich bar is showing."""

    def __init__(self, progress: Progress | None, task_id: int | None):
        self._progress, self._task = progress, task_id

    def advance(self, amount: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, amount)

    def update(self, completed: float | None = None, total: float | None = None, **fields: object) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, total=total, **fields)


@contextlib.contextmanager
def progress(description: str, total: float | None = None, extra: str = "") -> Iterator[_Bar]:
    """A progress bar on an interactive stderr (rank 0, not quiet); silent otherwise."""
    if not (_fancy() and is_rank_zero() and not settings.quiet):
        yield _Bar(None, None)
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    if extra:
        columns.append(TextColumn(extra))
    with Progress(*columns, console=stderr, transient=False) as bar:
        task_id = bar.add_task(description, total=total, status="")
        yield _Bar(bar, task_id)
