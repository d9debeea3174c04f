"""Everything human-facing goes to stderr (stdout is for results), from rank 0 only (errors from any rank).

On a TTY: rich output and progress bars. Otherwise: plain timestamped lines, or JSON
lines with `--log-format json` so cluster log collectors can parse them. Once a training run's
directory is open, every rank also writes all of it, quiet or not, to its own log file
(`<run dir>/logs/rank-N.log`, see `open_log`), so that what a non-zero rank said is not lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

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
_log: TextIO | None = None  # this rank's log file, while a run directory is open


class _Stderr:
    """sys.stderr that outlives its reader (`lmtool pretrain c.yaml 2>&1 | head -3`): on a broken pipe, the
    stream's file descriptor is pointed at /dev/null, so this and every other writer (rich, warnings,
    tqdm, C libraries) carry on, training ends normally, and the run's log file keeps the whole record."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)
        _to_log("warning", "stderr's reader went away: this log file carries on alone")

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def configure(quiet: bool = False, log_format: str = "auto") -> None:
    settings.quiet = quiet
    settings.log_format = log_format
    if not isinstance(sys.stderr, _Stderr):
        sys.stderr = _Stderr(sys.stderr)


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0


def _fancy() -> bool:
    return settings.log_format == "auto" and sys.stderr.isatty()


def open_log(stream: TextIO) -> None:
    """Copy everything this process says to `stream` (a rank's log file) until `close_log`."""
    global _log
    close_log()
    _log = stream


def close_log() -> None:
    global _log
    if _log is not None:
        _log.close()
        _log = None


def _to_log(level: str, message: str) -> None:
    if _log is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        _log.write(f"{stamp} {level.upper():7s} {message}\n")
        _log.flush()


def log_exception(exc: BaseException) -> None:
    """An exception that ends the run, into the log file only (the CLI prints its one line to stderr): the
    traceback for a bug (exit 1), the message otherwise."""
    if _log is None:
        return
    if getattr(exc, "exit_code", None) is None and not isinstance(exc, KeyboardInterrupt):
        _log.write("".join(traceback.format_exception(exc)))
        _to_log("error", f"{type(exc).__name__}: {exc}")
    else:
        _to_log("error", str(exc) or type(exc).__name__)


def _emit(level: str, message: str, fields: dict | None = None) -> None:
    _to_log(level, message)
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
    _to_log("error", message)
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
def progress(
    description: str, total: float | None = None, extra: str = "", beside: TextIO | None = None
) -> Iterator[_Bar]:
    """A progress bar on an interactive stderr (rank 0, not quiet); silent otherwise, and when the results
    go to the same terminal (`beside`: the stream they are written to), where a bar would be drawn between
    them. The bar keeps to one line at any width: a short `extra` text, never a log line."""
    shared = beside is not None and beside.isatty()
    if shared or not (_fancy() and is_rank_zero() and not settings.quiet):
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
        task_id = bar.add_task(description, total=total)
        yield _Bar(bar, task_id)
