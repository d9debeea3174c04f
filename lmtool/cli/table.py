"""What a row of the command table holds, and how a row becomes a typer command and runs.

Every command runs the same way (`invoke`): its usage check, then, for a command with a CONFIG,
the config loaded with its `--set`s and its settings flags as overrides, then its function.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import typer

from lmtool.cli.options import CONFIG, SET, Param


@dataclass(frozen=True)
class Command:
    """One command: its name (`config show` for a subcommand), its function and parameters."""

    name: str
    # Called with the loaded config first (`cfg`) when the command has a config, then the values of
    # its other parameters by name (not CONFIG, `--set` nor the settings: those made the config).
    run: Callable[..., object]
    params: tuple[Param, ...] = ()
    # The config section this command's settings live in: a parameter with a `key` overrides
    # SECTION.KEY, and an unknown option's `--set` hint looks there first.
    section: str | None = None
    # A check of the parsed values that needs neither config nor disk (raises LmtoolError).
    check: Callable[[Mapping[str, Any]], None] | None = None

    @property
    def help(self) -> str:
        """The function's docstring: the help is written where the command's work is called."""
        return inspect.getdoc(self.run) or ""


def register(groups: Mapping[str, typer.Typer], commands: Iterable[Command]) -> None:
    """Add each command to its group's Typer app (`groups[""]` is the top level), in order."""
    for command in commands:
        group, _, name = command.name.rpartition(" ")
        groups[group].command(name, help=command.help)(_callback(command))


def _callback(command: Command) -> Callable[..., None]:
    """A function whose signature declares `command`'s parameters, the way typer reads them."""

    def callback(**values: Any) -> None:
        invoke(command, values)

    parameters = [
        inspect.Parameter(
            p.name, inspect.Parameter.KEYWORD_ONLY, annotation=p.annotation(), default=p.default
        )
        for p in command.params
    ]
    callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    callback.__annotations__ = {p.name: p.annotation for p in parameters}
    callback.__name__ = command.name.replace(" ", "_")
    return callback


def invoke(command: Command, values: dict[str, Any]) -> None:
    """Check, load the config (for a command that has one), run."""
    if command.check is not None:
        command.check(values)
    if not any(p.name == CONFIG.name for p in command.params):
        command.run(**values)
        return
    from lmtool.config import load_config

    path, sets = values.pop(CONFIG.name), values.pop(SET.name, None) or []
    settings = [p for p in command.params if p.key is not None]
    # Settings flags go after the `--set`s, so a flag wins over a `--set` of the same key.
    overrides = [
        f"{command.section}.{p.key}={json.dumps(value)}"
        for p in settings
        if (value := values.pop(p.name)) is not None
    ]
    cfg = load_config(path, [*sets, *overrides])
    # Every command's config is loaded here and nowhere else. The checks that need a model or the disk
    # (lmtool/validate.py) run first thing in the command: preprocess's action, the recipes on every rank.
    command.run(cfg, **values)
