"""Errors a user can fix: one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

from lmtool.config.errors import EXIT_USAGE, ConfigError, LmtoolError, short_repr

__all__ = [
    "EXIT_BROKEN_PIPE", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_REQUEUE", "EXIT_TERMINATED", "EXIT_USAGE",
    "ConfigError", "LmtoolError", "Preempted", "Terminated", "TrainingStopped", "first_line", "short_repr",
]  # fmt: skip

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_REQUEUE = 3  # a checkpoint was saved after a preemption signal: requeue the job
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: stdout's reader went away (`| head`), as `yes | head` exits
EXIT_TERMINATED = 143  # 128 + SIGTERM: a run without checkpoints (preprocess) was stopped by SIGTERM


class TrainingStopped(LmtoolError):
    """Training cannot go on (e.g. repeated non-finite losses); the last good checkpoint is kept."""


class Preempted(Exception):
    """A signal asked the run to stop; a checkpoint was saved and the job may be requeued."""

    exit_code = EXIT_REQUEUE


class Terminated(BaseException):
    """SIGTERM stopped a command that has nothing to save (preprocess); a BaseException, like
    KeyboardInterrupt, so that no `except Exception` swallows it on the way out."""

    exit_code = EXIT_TERMINATED


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (a library's may run to pages), else its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
