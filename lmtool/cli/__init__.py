"""The `lmtool` command line: one thin function per subcommand; the work lives in the modules.

Importing the command modules registers their commands on the app.
"""

from lmtool.cli import config_commands, inference_commands, train_commands  # noqa: F401
from lmtool.cli.app import app
from lmtool.cli.main import main

__all__ = ["app", "main"]
