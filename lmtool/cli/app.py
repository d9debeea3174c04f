"""The `lmtool` Typer app and its global options (the commands come from the table in commands.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import Enum
from typing import Annotated

import typer
from typer import completion

from lmtool import __version__, console

# The exceptions of the click that typer runs on: typer >= 0.29 vendors click as `typer._click`,
# older typers use the plain `click` package, so `click.ClickException` misses the first kind.
_click = sys.modules[typer.BadParameter.__module__]

app = typer.Typer(
    name="lmtool",
    no_args_is_help=True,
    add_completion=False,  # typer's --install-completion ignores a shell name after it: ours below takes one
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
completion.completion_init()  # what add_completion would register: the shells' completion classes
config_app = typer.Typer(help="Show, validate and describe configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")

_state = {"debug": False}


class LogFormat(str, Enum):
    auto = "auto"
    plain = "plain"
    json = "json"


SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def _completion(
    action: Callable[..., None],
) -> Callable[[typer.Context, typer.CallbackParam, str | None], None]:
    """An eager option callback running typer's install/show for the named shell (auto: the detected one)."""

    def callback(ctx: typer.Context, param: typer.CallbackParam, shell: str | None) -> None:
        if shell is None or ctx.resilient_parsing:
            return
        if shell != "auto" and shell not in SHELLS:
            raise typer.BadParameter(f"must be auto or one of {', '.join(SHELLS)} (got {shell!r})")
        action(ctx, param, True if shell == "auto" else shell)  # True: typer detects the shell

    return callback


def _completion_option(flag: str, action: Callable[..., None], help: str):
    """A global SHELL option that runs typer's completion `action` and exits before any command."""
    return typer.Option(
        flag, metavar="SHELL", callback=_completion(action), is_eager=True, expose_value=False, help=help
    )


def _version(value: bool) -> None:
    if value:
        print(f"lmtool {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr.")] = False,
    log_format: Annotated[
        LogFormat,
        typer.Option("--log-format", help="stderr log style: auto (rich on a TTY), plain, or json lines."),
    ] = LogFormat.auto,
    install_completion: Annotated[
        str | None,
        _completion_option(
            "--install-completion",
            completion.install_callback,
            f"Install tab completion for SHELL ({', '.join(SHELLS)}; auto: the shell this runs under).",
        ),
    ] = None,
    show_completion: Annotated[
        str | None,
        _completion_option(
            "--show-completion",
            completion.show_callback,
            "Print the completion script for SHELL (or auto), to install it by hand.",
        ),
    ] = None,
) -> None:
    """Pretrain, fine-tune, evaluate and sample Hugging Face language models.

    Results go to stdout, logs to stderr. Exit codes: 0 ok, 1 internal error,
    2 bad config or input, 3 checkpoint saved after a preemption signal (requeue), 130 interrupted,
    141 stdout's reader went away (| head), 143 preprocess stopped by SIGTERM.
    """
    _state["debug"] = debug
    console.configure(quiet=quiet, log_format=log_format.value)
