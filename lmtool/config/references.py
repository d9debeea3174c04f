"""Checks of what the schema alone cannot see: architectures, batch geometry, local paths."""

from __future__ import annotations

import os
import re

from lmtool.config.model import check_arch
from lmtool.config.schema import Config
from lmtool.errors import ConfigError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_hub_id(name: str) -> bool:
    """`gpt2` or `org/model` (not a path that starts with . or / and has no more than one slash)."""
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "/", "~"))


def check_references(config: Config) -> None:
    """Check what the schema alone cannot: the model architecture and its `model.config` keys exist,
    the batch sizes fit together, and the local paths the config names exist (hub names are taken on
    trust: we may be offline)."""
    from lmtool.config.checks import check_training

    if config.model.init_from is None:
        check_arch(config.model.arch)
    check_training(config)
    from glob import glob

    for field, sources in (
        ("data.sources", config.data.sources),
        ("data.validation_sources", config.data.validation_sources),
        ("data.test_sources", config.data.test_sources),
    ):
        for i, source in enumerate(sources):
            if source.path is None:
                continue
            path = os.path.expanduser(source.path)
            if any(ch in path for ch in "*?["):
                if not glob(path, recursive=True):
                    raise ConfigError(f"{field}.{i}.path", "glob matches no files", value=source.path)
            elif not os.path.exists(path):
                raise ConfigError(f"{field}.{i}.path", "file or directory not found", value=source.path)
    if not config.data.sources and not os.path.isdir(config.data.processed_dir):
        raise ConfigError(
            "data.sources",
            f"is empty and {config.data.processed_dir} does not exist: give at least one source",
            value=[],
        )
    for key, name in (("tokenizer.path", config.tokenizer.path), ("model.init_from", config.model.init_from)):
        if name is not None and not os.path.exists(os.path.expanduser(name)) and not looks_like_hub_id(name):
            raise ConfigError(key, "directory not found (and not a hub model name)", value=name)
    from lmtool.model_check import check_model_config  # torch + transformers: only when asked to check

    check_model_config(config)
