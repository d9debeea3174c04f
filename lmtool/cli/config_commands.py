"""`lmtool config show | validate | schema`."""

from __future__ import annotations

import json
import sys

from lmtool import console
from lmtool.cli.app import ConfigArg, SetOpt, config_app

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
    from lmtool.config import load_config
    from lmtool.validate import validate

    validate(load_config(config, set_ or []))
    console.info(f"{config}: valid")


@config_app.command("schema")
def config_schema() -> None:
    """Print the config's JSON schema (every key with its type, default and description).

    Example: lmtool config schema | jq '.["$defs"].TrainConfig.properties.lr'
    """
    from lmtool.config import json_schema

    print(json.dumps(json_schema(), indent=2))
