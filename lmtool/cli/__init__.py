"""The `lmtool` command line: a table of commands (commands.py) on a Typer app (app.py); the work
lives in the modules each command's function imports."""

from lmtool.cli.app import app, config_app
from lmtool.cli.commands import COMMANDS
from lmtool.cli.main import main
from lmtool.cli.table import register

register({"": app, "config": config_app}, COMMANDS)

__all__ = ["app", "main"]
