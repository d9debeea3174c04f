"""Errors a user can fix: one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_REQUEUE = 3  # a checkpoint was saved after a preemption signal: requeue the job
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: stdout's reader went away (`| head`), as `yes | head` exits
EXIT_TERMINATED = 143  # 128 + SIGTERM: a run without checkpoints (preprocess) was stopped by SIGTERM


class LmtoolError(Exception):
    """A problem with the user's config or input; printed as `error: <message>`, exit 2."""

    exit_code = EXIT_USAGE


class ConfigError(LmtoolError):
    """A config value is wrong; the message names the dotted key and, where known, file and line."""

    def __init__(
        self,
        key: str,
        problem: str,
        *,
        value: object = None,
        has_value: bool = True,
        hint: str | None = None,
        location: str | None = None,
    ):
        self.key = key
        parts = [f"{key}: {problem}" if key else problem]
        if has_value:
            parts.append(f"(got {short_repr(value)})")
        if hint:
            parts.append(f"- {hint}")
        if location:
            parts.append(f"[{location}]")
        super().__init__(" ".join(parts))


class TrainingStopped(LmtoolError):
    """Training cannot go on (e.g. repeated non-finite losses); the last good checkpoint is kept."""


class Preempted(Exception):
    """A signal asked the run to stop; a checkpoint was saved and the job may be requeued."""

    exit_code = EXIT_REQUEUE


class Terminated(BaseException):
    """SIGTERM stopped a command that has nothing to save (preprocess); a BaseException, like
    KeyboardInterrupt, so that no `except Exception` swallows it on the way out."""

    exit_code = EXIT_TERMINATED


def short_repr(value: object, limit: int = 80) -> str:
    """repr(value), elided in the middle past `limit`: the end of a long path is its file name."""
    text = repr(value)
    if len(text) <= limit:
        return text
    head = (limit - 3) // 3
    return text[:head] + "..." + text[len(text) - (limit - 3 - head) :]


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (a library's may run to pages), else its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
