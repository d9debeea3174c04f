"""The config checks that need the disk or a model, in one place, run once before any work.

What needs neither is a validator in the schema (lmtool/config) and fails at `load_config`. What these
checks see: the files and directories the config names, the model it builds (probed on the meta device)
or starts from, the tokenizer it pairs with. `lmtool config validate` runs them all; each command runs
those about what it uses, before it preprocesses or trains. Checks that need what only the launch knows
(the device, the resolved precision, a hub model once downloaded, the processed data) stay where that is
known.
"""

from __future__ import annotations

import os
from glob import glob
from typing import Literal

from lmtool.config import Config, ConfigError, looks_like_hub_id
from lmtool.config.checks import global_batch
from lmtool.config.finetune import TASK_MODULES
from lmtool.positions import check_fits, model_positions

Command = Literal["config", "preprocess", "pretrain", "finetune"]


def validate(config: Config, command: Command = "config") -> None:
    """Exit-2 error (ConfigError) for what `command` would refuse later; "config" checks everything."""
    if command == "finetune":
        _finetune(config)
    elif command == "pretrain":
        from lmtool.model_check import check_model_config
        from lmtool.pairing import check_init_from

        check_model_config(config)
        check_init_from(config)
    elif command == "config":
        from lmtool.model_check import check_model_config
        from lmtool.models import check_arch

        if config.model.init_from is None:
            check_arch(config.model.arch)
        check_training(config)
        check_paths(config)
        check_model_config(config)
    check_positions(config)


def check_training(config: Config) -> None:
    """What `pretrain` refuses before its first step: the batch geometry (for $WORLD_SIZE processes, else
    one; the engine computes it again for the processes it has) and a `train.resume` path that is not there."""
    global_batch(config.train, config.data.block_size, int(os.environ.get("WORLD_SIZE", "1")))
    resume = config.train.resume
    if resume not in ("auto", "never") and not os.path.isdir(os.path.expanduser(resume)):
        raise ConfigError("train.resume", "checkpoint directory not found", value=resume)


def check_paths(config: Config) -> None:
    """The local paths the config names exist (hub names are taken on trust: we may be offline)."""
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


def check_positions(config: Config) -> None:
    """data.block_size (fine-tuning: finetune.max_length) fits the positions of the model to train, as far
    as they are known before loading it (a hub model's are checked once loaded: `models.build_model`)."""
    check_fits(config, *model_positions(config))


def _finetune(config: Config) -> None:
    """The fine-tuning section and the model to fine-tune, refused before any preprocessing or training."""
    if config.finetune is None:
        raise ConfigError(
            "finetune",
            f"is missing: fine-tuning needs a finetune: section (task: {' | '.join(TASK_MODULES)})",
            has_value=False,
        )
    if config.model.init_from is None:
        raise ConfigError(
            "model.init_from",
            "is required: the pretrained model (directory or hub name) to fine-tune",
            value=None,
        )
    from lmtool.model_check import check_init_from_overrides
    from lmtool.tasks.registry import finetune_spec

    if config.finetune.lora is not None:
        from lmtool.finetune.lora import require_peft

        require_peft()
    spec = finetune_spec(config.finetune.task)
    loaded = spec.check_model(
        config.model.init_from, config.finetune.reinit_head, config.model.trust_remote_code
    )
    check_init_from_overrides(config, loaded)
