"""Checks that need more than the schema, shared by `config validate` and the commands that run.

`config validate` promises to catch what `pretrain` would reject before training, so each check
lives here once: the engine asks for the global batch, validate runs them all up front.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from typing import TYPE_CHECKING, Any

from lmtool.errors import ConfigError

if TYPE_CHECKING:
    from lmtool.config import Config, TrainConfig


def global_batch(train: TrainConfig, block_size: int, world_size: int) -> int:
    """Sequences per optimizer step: a whole number of micro-batches across `world_size` processes."""
    per_micro = train.batch_size * world_size
    if train.global_batch_tokens is not None:
        sequences = max(round(train.global_batch_tokens / block_size), 1)
        return max(round(sequences / per_micro), 1) * per_micro
    size = train.global_batch_size or per_micro
    if size % per_micro:
        raise ConfigError(
            "train.global_batch_size",
            f"must be a multiple of batch_size x processes = {train.batch_size} x {world_size} = {per_micro}",
            value=size,
        )
    return size


def check_training(config: Config) -> None:
    """What `pretrain` refuses before its first step: batch geometry (for $WORLD_SIZE processes, else one),
    `model.config` keys the architecture lacks or non-finite, a `train.resume` path that is not there."""
    global_batch(config.train, config.data.block_size, int(os.environ.get("WORLD_SIZE", "1")))
    if config.model.init_from is None:
        check_model_config(config.model.arch, config.model.config)
    resume = config.train.resume
    if resume not in ("auto", "never") and not os.path.isdir(os.path.expanduser(resume)):
        raise ConfigError("train.resume", "checkpoint directory not found", value=resume)


def check_model_config(arch: str, overrides: dict[str, Any]) -> None:
    """Every `model.config` key must be a setting of `arch`'s config class, and every number finite."""
    from transformers import AutoConfig

    from lmtool import lstm

    model_type = lstm.LstmConfig.model_type if arch == "lstm" else arch
    config_class = type(AutoConfig.for_model(model_type))
    if dataclasses.is_dataclass(config_class):
        known = {field.name for field in dataclasses.fields(config_class)}
    else:
        known = set(config_class().to_dict())
    check_config_keys(
        overrides, known | set(getattr(config_class, "attribute_map", {})), arch, config_class.__name__
    )


def check_config_keys(overrides: dict[str, Any], known: set[str], what: str, see: str) -> None:
    """Each `model.config` key must be in `known` (the settings of `what`'s config), each number finite."""
    for key, value in overrides.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean 'model.config.{close[0]}'?" if close else f"see {see}"
            raise ConfigError(f"model.config.{key}", f"is not a {what} config key", value=value, hint=hint)
        _check_finite(f"model.config.{key}", value)


def _check_finite(key: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, "must be a finite number", value=value)
    if isinstance(value, dict):
        for name, item in value.items():
            _check_finite(f"{key}.{name}", item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(f"{key}.{index}", item)
