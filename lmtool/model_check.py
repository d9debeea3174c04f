"""Check a from-scratch model config before any time is spent: build it and run one forward pass.

Some inconsistent configs build and only fail at the first training step (e.g. key/value heads that
do not divide the attention heads), after preprocessing and tokenizer training. The probe builds the
model on PyTorch's meta device, which checks every shape but allocates no memory and runs no
kernels, so a 7B config costs milliseconds. A model whose code cannot run on the meta device is
probed on the CPU instead.
"""

from __future__ import annotations

import re

import torch
from transformers import PreTrainedConfig

from lmtool.config import Config, ConfigError, check_arch
from lmtool.models import _check_block_size, _padded, model_config_error, model_from_config, scratch_config

PROBE_BATCH = 2
PROBE_TOKENS = 8
PROBE_VOCAB = 1024  # stands in for a tokenizer that is not known yet (an existing one, loaded later)
_META = re.compile(r"\bmeta\b", re.IGNORECASE)


def check_model_config(config: Config) -> None:
    """Exit-2 error naming the keys when the model to build from scratch cannot run a forward pass.

    Covers model.arch, model.config, model.attention and data.block_size against the positions;
    a model from model.init_from is built by its own checkpoint and is not probed.
    """
    if config.model.init_from is not None:
        return
    check_arch(config.model.arch)
    train = config.tokenizer.train
    vocab = _padded(train.vocab_size if train is not None else PROBE_VOCAB, config.model.pad_vocab_multiple)
    model_config = scratch_config(
        config, vocab, dict.fromkeys(("pad_token_id", "bos_token_id", "eos_token_id"), 0)
    )
    _check_block_size(config, model_config)
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
