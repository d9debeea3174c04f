"""The `lmtool` command line: one thin function per subcommand; the work lives in the modules."""

from __future__ import annotations

import json
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated

import click
import typer

from lmtool import __version__, console
from lmtool.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, LmtoolError, Preempted

app = typer.Typer(
    name="lmtool",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Show, validate and describe configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")

_state = {"debug": False}


class LogFormat(str, Enum):
    auto = "auto"
    plain = "plain"
    json = "json"


ConfigArg = Annotated[Path, typer.Argument(help="YAML config file.", show_default=False, metavar="CONFIG")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override a config value: key.path=value (repeatable).",
        show_default=False,
    ),
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing output directory instead of refusing.")
]


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
) -> None:
    """Pretrain, fine-tune, evaluate and sample Hugging Face language models.

    Results go to stdout, logs to stderr. Exit codes: 0 ok, 1 internal error,
    2 bad config or input, 3 checkpoint saved after a preemption signal (requeue), 130 interrupted.
    """
    _state["debug"] = debug
    console.configure(quiet=quiet, log_format=log_format.value)


# --------------------------------------------------------------------------- config


@config_app.command("show")
def config_show(config: ConfigArg, set_: SetOpt = None) -> None:
    """Print the resolved config (defaults filled in, overrides and ${...} applied) as YAML.

    Example: lmtool config show configs/quickstart.yaml --set train.lr=0.001
    """
    from lmtool.config import dump_config, load_config

    sys.stdout.write(dump_config(load_config(config, set_ or [])))


@config_app.command("validate")
def config_validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check a config and the local paths it names; exit 0 if valid, 2 if not.

    Example: lmtool config validate configs/quickstart.yaml
    """
    from lmtool.config import check_references, load_config

    cfg = load_config(config, set_ or [])
    check_references(cfg)
    console.info(f"{config}: valid")


@config_app.command("schema")
def config_schema() -> None:
    """Print the config's JSON schema (every key with its type, default and description).

    Example: lmtool config schema | jq '.$defs.TrainConfig.properties.lr'
    """
    from lmtool.config import json_schema

    print(json.dumps(json_schema(), indent=2))


# --------------------------------------------------------------------------- pretrain


@app.command("pretrain")
def pretrain(config: ConfigArg, set_: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Train a causal or masked LM from scratch (or continue one); print the final model directory.

    Example: lmtool pretrain configs/quickstart.yaml --set train.max_steps=100
    """
    from lmtool.config import load_config
    from lmtool.train.pretrain import run_pretrain

    print(run_pretrain(load_config(config, set_ or []), overwrite=overwrite))


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, turning errors into one line on stderr and a documented exit code."""
    try:
        code = app(args=argv, standalone_mode=False, prog_name="lmtool")
    except LmtoolError as exc:
        if _state["debug"]:
            traceback.print_exc()
        console.error(str(exc))
        code = exc.exit_code
    except Preempted as exc:
        console.warning(str(exc))
        code = exc.exit_code
    except click.exceptions.Abort:
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
        console.error("interrupted")
        code = EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last line of defence: exit 1, traceback behind --debug
        if _state["debug"]:
            traceback.print_exc()
        console.error(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        code = EXIT_INTERNAL
    sys.stdout.flush()
    sys.exit(code if isinstance(code, int) else 0)
