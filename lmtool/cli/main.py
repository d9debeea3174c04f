"""The entry point: run the app, turn every error into one line on stderr and a documented exit code."""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import TextIO

import typer

from lmtool import console
from lmtool.cli.app import _click, _state, app
from lmtool.cli.hints import unknown_option_message
from lmtool.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    LmtoolError,
    Preempted,
    Terminated,
)

# --------------------------------------------------------------------------- entry point


class StdoutError(Exception):
    """Writing the results to stdout failed (a closed pipe, a full disk): not a bug in lmtool."""

    def __init__(self, exc: OSError):
        super().__init__(exc.strerror or str(exc))
        self.errno = exc.errno


class _GuardedStdout:
    """sys.stdout, whose write errors say they are stdout's, wherever in a command they happen."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as exc:
            raise StdoutError(exc) from None

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as exc:
            raise StdoutError(exc) from None

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _silence_stdout(stream: TextIO) -> None:
    """After a broken pipe: point stdout at /dev/null, so the flush at exit has nowhere to fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (e.g. captured in tests)
        pass


def _show_usage_error(exc: Exception) -> None:
    """click's usage line and help hint, then one `error:` line; the whole help when nothing was given."""
    if isinstance(exc, getattr(_click, "NoArgsIsHelpError", ())):
        sys.stderr.write(exc.format_message().rstrip("\n") + "\n")
        return
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        help_option = ctx.help_option_names[0]
        sys.stderr.write(f"{ctx.get_usage()}\nTry '{ctx.command_path} {help_option}' for help.\n\n")
    hint = None
    if isinstance(exc, _click.NoSuchOption) and ctx is not None:
        hint = unknown_option_message(exc.option_name, ctx, sys.argv[1:])
    console.error(hint or exc.format_message())


def _stdout_failed(exc: StdoutError, stdout: TextIO) -> int:
    """A closed reader (`| head`) ends the command quietly, as Unix tools do; anything else (a full
    disk, a file-size limit) is one error line naming stdout: the results there are incomplete."""
    if exc.errno == errno.EPIPE:
        _silence_stdout(stdout)
        return EXIT_BROKEN_PIPE
    console.error(f"cannot write the results to stdout: {exc} (the output is incomplete)")
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, turning errors into one line on stderr and a documented exit code."""
    stdout = sys.stdout
    sys.stdout = _GuardedStdout(stdout)  # type: ignore[assignment]
    try:
        code = _run(argv, stdout)
        try:  # here, not at exit, so that a failing last write is reported like any other
            sys.stdout.flush()
        except StdoutError as exc:
            code = _stdout_failed(exc, stdout)
    finally:
        sys.stdout = stdout
    sys.exit(code if isinstance(code, int) else 0)


def _run(argv: list[str] | None, stdout: TextIO) -> int | None:
    try:
        code = app(args=argv, standalone_mode=False, prog_name="lmtool")
        if code == EXIT_INTERRUPTED:  # typer returns a KeyboardInterrupt (Ctrl-C) as this code
            console.error("interrupted")
    except StdoutError as exc:
        code = _stdout_failed(exc, stdout)
    except LmtoolError as exc:
        if _state["debug"]:
            traceback.print_exc()
        console.error(str(exc))
        code = exc.exit_code
    except Preempted as exc:
        console.warning(str(exc))
        code = exc.exit_code
    except typer.Abort:
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
        console.error("interrupted")
        code = EXIT_INTERRUPTED
    except Terminated as exc:
        console.error(str(exc))
        code = exc.exit_code
    except _click.UsageError as exc:
        _show_usage_error(exc)
        code = EXIT_USAGE
    except _click.ClickException as exc:
        console.error(exc.format_message())
        code = exc.exit_code
    except typer.Exit as exc:
        code = exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last line of defence: exit 1, traceback behind --debug
        if _state["debug"]:
            traceback.print_exc()
        console.error(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        code = EXIT_INTERNAL
    return code
