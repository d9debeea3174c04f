"""The entry point: run the app, turn every error into one line on stderr and a documented exit code."""

from __future__ import annotations

import sys
import traceback

import typer

from lmtool import console
from lmtool.cli.app import _click, _state, app
from lmtool.cli.hints import unknown_option_message
from lmtool.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, LmtoolError, Preempted, Terminated

# --------------------------------------------------------------------------- entry point


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


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, turning errors into one line on stderr and a documented exit code."""
    try:
        code = app(args=argv, standalone_mode=False, prog_name="lmtool")
        if code == EXIT_INTERRUPTED:  # typer returns a KeyboardInterrupt (Ctrl-C) as this code
            console.error("interrupted")
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
    sys.stdout.flush()
    sys.exit(code if isinstance(code, int) else 0)
