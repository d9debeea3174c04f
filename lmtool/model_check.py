"""Check the model config before any time is spent: from scratch, build it and run one forward pass;
with `model.init_from`, check the `model.config` overrides against the checkpoint's own config.

Some inconsistent configs build and only fail at the first training step (e.g. key/value heads that
do not divide the attention heads), after preprocessing and tokenizer training. The probe builds the
model on PyTorch's meta device, which checks every shape but allocates no memory and runs no
kernels, so a 7B config costs milliseconds. A model whose code cannot run on the meta device is
probed on the CPU instead.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import torch
from transformers import AutoConfig, PreTrainedConfig

from lmtool.config import Config, ConfigError
from lmtool.models import (
    _padded,
    check_arch,
    check_config_keys,
    model_config_error,
    model_from_config,
    scratch_config,
)

PROBE_BATCH = 2
PROBE_TOKENS = 8
PROBE_VOCAB = 1024  # stands in for a tokenizer that is not known yet (an existing one, loaded later)
_META = re.compile(r"\bmeta\b", re.IGNORECASE)


def check_model_config(config: Config) -> None:
    """Exit-2 error naming the keys when the model to build from scratch cannot run a forward pass.

    Covers model.arch, model.config and model.attention (data.block_size against the positions: `validate`);
    a model from model.init_from is built by its own checkpoint and is not probed: only its overrides are
    checked (`check_init_from_overrides`).
    """
    if config.model.init_from is not None:
        check_init_from_overrides(config)
        return
    check_arch(config.model.arch)
    train = config.tokenizer.train
    vocab = _padded(train.vocab_size if train is not None else PROBE_VOCAB, config.model.pad_vocab_multiple)
    model_config = scratch_config(
        config, vocab, dict.fromkeys(("pad_token_id", "bos_token_id", "eos_token_id"), 0)
    )
    try:
        _forward(config, model_config, "meta")
    except ConfigError as exc:
        if not _META.search(str(exc)):
            raise
        _forward(config, model_config, "cpu")


def _forward(config: Config, model_config: PreTrainedConfig, device: str) -> None:
    """Build the model on `device` and run a batch through it (loss included)."""
    with torch.device(device):
        model = model_from_config(config, model_config)
        length = min(config.data.block_size, PROBE_TOKENS)
        ids = torch.arange(PROBE_BATCH * length).reshape(PROBE_BATCH, length) % max(
            model_config.vocab_size, 1
        )
        try:
            with torch.no_grad():
                model(input_ids=ids, labels=ids)
        except Exception as exc:  # noqa: BLE001 - whatever the model's forward rejects is the config's doing
            raise model_config_error(config, exc) from None


# Set from the labeled data (finetune.labels, finetune.problem); an override would be dropped or contradict it.
_DATA_KEYS = ("id2label", "label2id", "problem_type")


def check_init_from_overrides(config: Config, loaded: PreTrainedConfig | None = None) -> None:
    """With model.init_from, each `model.config` key is applied to the checkpoint's config on load, so it must
    be one of that config's settings; fine-tuning sets the label keys from the data. `loaded` is the
    checkpoint's config (read here when None; the key check is skipped when it cannot be, e.g. a hub model
    not cached offline: loading reports that)."""
    overrides = config.model.config
    if config.model.init_from is None or not overrides:
        return
    loaded = loaded if loaded is not None else _checkpoint_config(config)
    if loaded is not None:
        known = set(loaded.to_dict()) | set(getattr(type(loaded), "attribute_map", {})) | {"num_labels"}
        check_config_keys(
            overrides, known, f"{config.model.init_from} ({loaded.model_type})", "its config.json"
        )
        _check_same_weights(config, loaded)
    from lmtool.tasks.registry import finetune_spec

    if config.finetune is None or finetune_spec(config.finetune.task).head is None:
        return
    for key in _DATA_KEYS:
        if key in overrides:
            raise ConfigError(
                f"model.config.{key}",
                "is set from the data when fine-tuning (finetune.labels, finetune.problem)",
                value=overrides[key],
            )
    check_num_labels(config)


def check_num_labels(config: Config, labels: list[Any] | None = None, problem: str | None = None) -> None:
    """`model.config.num_labels`, if set, must be the head's output count fine-tuning gives the model (as
    `TaskSpec.load_model` does): from `labels` and `problem` (the preprocessed data's) when given,
    else from finetune.labels; unchecked while the labels are not known (data not preprocessed yet)."""
    ft = config.finetune
    wanted = config.model.config.get("num_labels")
    from lmtool.tasks.registry import finetune_spec

    if ft is None or wanted is None or config.model.init_from is None:
        return
    expected = finetune_spec(ft.task).outputs(
        problem or ft.problem, labels if labels is not None else ft.labels
    )
    if expected is None:  # no head to size (a causal LM), or the labels are not known yet
        return
    if wanted != expected:
        raise ConfigError(
            "model.config.num_labels",
            f"the data has {expected} label{'s' if expected != 1 else ''} (the head gets one output each)",
            value=wanted,
            hint="leave model.config.num_labels out: fine-tuning sets it from the data",
        )


def _check_same_weights(config: Config, loaded: PreTrainedConfig) -> None:
    """An override that changes the checkpoint's weights (n_layer, n_positions, hidden sizes) would load
    some of them and leave others random, or fail on a shape: only settings such as dropout can change.
    Each override that differs from the checkpoint's value is tried on a meta-device copy (no memory)."""
    shapes = None
    for key, value in config.model.config.items():
        if key == "num_labels" or getattr(loaded, key, None) == value:
            continue
        shapes = shapes or _weight_shapes(loaded)
        if shapes is None:
            return
        changed = copy.deepcopy(loaded)
        setattr(changed, key, value)
        if _weight_shapes(changed) != shapes:
            raise ConfigError(
                f"model.config.{key}",
                f"changes the weights of model.init_from {config.model.init_from} (it has {getattr(loaded, key)!r})",
                value=value,
                hint="a checkpoint's architecture is its own: leave the key out, or train from scratch",
            )


def _weight_shapes(model_config: PreTrainedConfig) -> dict[str, tuple] | None:
    """The parameter names and shapes of the model `model_config` builds, or None if it cannot be built."""
    from transformers import AutoModel, AutoModelForCausalLM

    for auto in (AutoModel, AutoModelForCausalLM):
        try:
            with torch.device("meta"):
                model = auto.from_config(model_config)
        except Exception:  # noqa: BLE001 - not this Auto class's (or not buildable): try the next, else skip
            continue
        return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    return None


def _checkpoint_config(config: Config) -> PreTrainedConfig | None:
    name = os.path.expanduser(str(config.model.init_from))
    try:
        return AutoConfig.from_pretrained(
            name, trust_remote_code=config.model.trust_remote_code, local_files_only=True
        )
    except Exception:  # noqa: BLE001 - unreadable here (not cached, not a model): loading it reports why
        return None
