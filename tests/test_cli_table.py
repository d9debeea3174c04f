"""The command table: every row is a registered command, shared options are one declaration, flags win."""

from __future__ import annotations

import inspect

import click
import pytest
import typer

from lmtool.cli import app
from lmtool.cli.commands import COMMANDS
from lmtool.cli.options import CONFIG, DEVICE, OVERWRITE, SET, option
from lmtool.cli.table import Command, invoke


def _registered() -> dict[str, click.Command]:
    """Every leaf command of the app by its full name (`config show`)."""
    found: dict[str, click.Command] = {}

    def walk(group: click.Command, prefix: str) -> None:
        for name, sub in getattr(group, "commands", {}).items():
            if getattr(sub, "commands", None):
                walk(sub, f"{prefix}{name} ")
            else:
                found[f"{prefix}{name}"] = sub

    walk(typer.main.get_command(app), "")
    return found


def test_every_row_is_a_command_with_its_parameters_and_help():
    registered = _registered()
    assert list(registered) == [row.name for row in COMMANDS]  # nothing registered besides the table
    for row in COMMANDS:
        command = registered[row.name]
        assert [p.name for p in command.params] == [p.name for p in row.params], row.name
        assert row.help and command.help == inspect.cleandoc(row.help)  # the function's docstring


def test_an_option_s_long_flag_is_its_name_unless_given():
    assert option("max_new_tokens", int, "-n", help="N.").flags == ("--max-new-tokens", "-n")
    assert option("output_format", str, "--format", help="F.").flags == ("--format",)


@pytest.mark.parametrize("shared", [SET, OVERWRITE, CONFIG, DEVICE], ids=lambda p: p.name)
def test_a_shared_option_reads_the_same_in_every_command(shared):
    """--set (etc.) is one declaration: the same flags, help, metavar and default wherever it appears."""
    found = {
        name: (tuple(param.opts), getattr(param, "help", None), param.metavar, param.default, param.required)
        for name, command in _registered().items()
        for param in command.params
        if param.name == shared.name and param.required == (shared.default is ...)
    }
    assert len(found) >= 2 and len(set(found.values())) == 1, found
    opts, help_text, *_ = next(iter(found.values()))
    assert opts == (shared.flags or (shared.name,)) and help_text in (
        shared.help,
        None,
    )  # None: typer<0.29


def test_settings_flags_override_the_section_after_the_sets():
    """A row's flag with a `key` becomes `--set SECTION.KEY=value`, applied after the user's --set's."""
    got = {}
    seed = option("seed", int | None, key="seed", help="Seed.")
    row = Command("t", lambda cfg, **rest: got.update(cfg=cfg, rest=rest), (CONFIG, SET, seed), "generate")
    invoke(row, {"config": None, "set_": ["generate.seed=1", "generate.top_k=5"], "seed": 7})
    assert (got["cfg"].generate.seed, got["cfg"].generate.top_k, got["rest"]) == (7, 5, {})
