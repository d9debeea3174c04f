"""Command-line parameters as data, and the ones several commands share, declared once.

A `Param` is what a command function's `name: Annotated[type, typer.Option(...)] = default` says,
held as a value, so that the command table (lmtool/cli/commands.py) can list a command's parameters
and two commands can use the same declaration. `but()` gives a copy with a change: a shared option
whose help says what it means in that command.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer


@dataclass(frozen=True)
class Param:
    """One argument (`flags` empty) or option of a command."""

    name: str  # the Python name its value is handed over under
    type: Any
    flags: tuple[str, ...]
    help: str
    default: Any = None  # `...`: required
    key: str | None = None  # set: the value overrides this key of the command's config section
    extra: Mapping[str, Any] = field(default_factory=dict)  # typer.Option/Argument's other settings

    def but(self, **changes: Any) -> Param:
        """This parameter with some fields changed (e.g. its help in one command)."""
        return dataclasses.replace(self, **changes)

    def annotation(self) -> Any:
        """The `Annotated[type, typer.Option(...)]` typer reads a command's parameters from."""
        settings = {"show_default": self.default not in (None, ...), **self.extra}
        if self.flags:
            return Annotated[self.type, typer.Option(*self.flags, help=self.help, **settings)]
        return Annotated[self.type, typer.Argument(help=self.help, **settings)]


def option(
    name: str, type_: Any, *flags: str, help: str, default: Any = None, key: str | None = None, **extra: Any
) -> Param:
    """An option whose long flag is its name with dashes (`max_length`: `--max-length`) unless `flags`
    give one; `flags` may add short ones (`-n`)."""
    if not any(flag.startswith("--") for flag in flags):
        flags = (f"--{name.replace('_', '-')}", *flags)
    return Param(name, type_, flags, help, default, key, extra)


def argument(name: str, type_: Any, *, help: str, metavar: str, default: Any = ...) -> Param:
    return Param(name, type_, (), help, default, extra={"metavar": metavar})


# --------------------------------------------------------------------------- shared

CONFIG = argument("config", Path, help="YAML config file.", metavar="CONFIG")
SET = option(
    "set_",
    list[str] | None,
    "--set",
    "-s",
    metavar="KEY=VALUE",
    help="Override a config value: key.path=value (repeatable).",
)
OVERWRITE = option(
    "overwrite", bool, default=False, help="Replace an existing output directory instead of refusing."
)
DEVICE = option("device", str, default="auto", help="auto | cpu | cuda | mps.")
# Options several commands have, whose help says what they mean there: the help here is the first
# command's (in the table's order), `but(help=...)` gives the others theirs.
MODEL = option("model", str | None, "-m", help="Model directory (default: the run's final/).")
MAX_LENGTH = option(
    "max_length", int | None, help="Perplexity window in tokens [default: the model's context]."
)
STRIDE = option("stride", int | None, help="Tokens the window moves each step [default: the window].")
BATCH_SIZE = option("batch_size", int | None, help="Windows/sequences per forward pass.")
FILE = option(
    "file", str | None, "-f", help='Prompts, one per line, or JSON lines {"prompt": ..., settings}.'
)
FORMAT = option(
    "output_format",
    str | None,
    "--format",
    help="auto | text | jsonl [default: text on a terminal, else jsonl].",
)
PRECISION = option(
    "precision", str, default="fp32", help="auto | fp32 | bf16 | fp16 (causal and masked LMs)."
)
OUT = option("out", Path | None, help="Where to write report.md and the plots [default: the first RUN_DIR].")
