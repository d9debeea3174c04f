"""The model `lmtool plan` counts: built on PyTorch's meta device, so a 7B config costs no memory.

The vocabulary is the one training would use when it can be known without a download: the trained
tokenizer's size, a local tokenizer's length, else the architecture's default (said so in the report).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig

from lmtool.config import Config
from lmtool.errors import LmtoolError
from lmtool.hub import require_model_source
from lmtool.model_dir import refuse_not_a_model
from lmtool.models import (
    ARCH_ALIASES,
    _padded,
    count_parameters,
    model_from_config,
    scratch_config,
)
from lmtool.positions import check_fits, max_positions
from lmtool.tasks.registry import finetune_spec
from lmtool.train.metrics import flops_per_token, matmul_parameters


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need from the model."""

    name: str
    parameters: int
    matmul_parameters: int
    embedding_parameters: int
    flops_per_token: float
    layers: int
    hidden: int
    heads: int
    ffn: int
    vocab: int
    outputs: int  # logits per token: the vocabulary, or a fine-tune head's labels
    vocab_source: str
    dropout: bool
    transformer: bool  # has attention heads: the activation formula is for transformer blocks
    eager_attention: bool  # eager attention keeps the s x s scores; SDPA kernels do not


def sequence_length(config: Config) -> int:
    """Tokens per training sequence: data.block_size, or a fine-tune's finetune.max_length (an upper bound:
    fine-tune batches are padded to their longest example)."""
    return config.finetune.max_length if config.finetune is not None else config.data.block_size


def model_shape(config: Config) -> ModelShape:
    """Count the model `config` trains (from scratch, or `model.init_from`'s config with a fine-tune's head)
    on the meta device."""
    model_config, vocab_source = _model_config(config)
    with torch.device("meta"):
        model = _build(config, model_config)
    total = count_parameters(model)
    hidden = _get(model_config, "hidden_size", 0)
    heads = _get(model_config, "num_attention_heads", 1)
    ffn = _get(model_config, "intermediate_size", 0) or _get(model_config, "n_inner", 0) or 4 * hidden
    dropout = any(
        isinstance(value, float) and value > 0 and ("dropout" in key or "pdrop" in key)
        for key, value in model_config.to_dict().items()
    )
    return ModelShape(
        name=type(model).__name__,
        parameters=total,
        matmul_parameters=matmul_parameters(model),
        embedding_parameters=total - count_parameters(model, exclude_embeddings=True),
        flops_per_token=flops_per_token(model, sequence_length(config)),
        layers=_get(model_config, "num_hidden_layers", 0),
        hidden=hidden,
        heads=heads,
        ffn=ffn,
        vocab=model_config.vocab_size,
        outputs=_outputs(config, model_config),
        vocab_source=vocab_source,
        dropout=dropout,
        transformer=getattr(model_config, "num_attention_heads", None) is not None,
        eager_attention=getattr(model.config, "_attn_implementation", "eager") == "eager",
    )


def _get(model_config: PreTrainedConfig, key: str, default: int) -> int:
    value = getattr(model_config, key, None)
    return int(value) if value else default


def _build(config: Config, model_config: PreTrainedConfig) -> torch.nn.Module:
    """The model training builds: a causal or masked LM, or for a fine-tune the task's head on init_from."""
    if config.finetune is None:
        return model_from_config(config, model_config)
    head = finetune_spec(config.finetune.task).head
    if head is None:
        return AutoModelForCausalLM.from_config(model_config)
    model_config.num_labels = _outputs(config, model_config)
    return head.auto.from_config(model_config)


def _outputs(config: Config, model_config: PreTrainedConfig) -> int:
    """A fine-tune head's outputs (2 for QA's start/end, the labels' count, 2 when the data names them),
    else the vocabulary."""
    finetune = config.finetune
    if finetune is None or finetune_spec(finetune.task).head is None:
        return model_config.vocab_size
    return finetune_spec(finetune.task).outputs(finetune.problem, finetune.labels) or 2


def _model_config(config: Config) -> tuple[PreTrainedConfig, str]:
    """(the model's config, where its vocabulary size comes from)."""
    init_from = config.model.init_from
    if init_from is not None:
        require_model_source(init_from, "model.init_from")
        refuse_not_a_model(os.path.expanduser(init_from), "model.init_from")
        try:
            loaded = AutoConfig.from_pretrained(init_from, trust_remote_code=config.model.trust_remote_code)
        except (OSError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise LmtoolError(f"model.init_from: cannot read the config of {init_from}: {first}") from None
        return loaded, "model.init_from"
    vocab, source = _vocab(config)
    special = dict.fromkeys(("pad_token_id", "bos_token_id", "eos_token_id"), 0)
    model_config = scratch_config(config, _padded(vocab, config.model.pad_vocab_multiple), special)
    check_fits(config, max_positions(model_config), "model.config")
    return model_config, source


def _vocab(config: Config) -> tuple[int, str]:
    tokenizer = config.tokenizer
    if tokenizer.train is not None:
        return tokenizer.train.vocab_size, "tokenizer.train.vocab_size"
    for where in (Path(config.data.processed_dir) / "tokenizer", tokenizer.path):
        if where and os.path.isdir(where):
            from transformers import AutoTokenizer

            try:
                return len(AutoTokenizer.from_pretrained(str(where))), str(where)
            except (OSError, ValueError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise LmtoolError(f"{where}: not a usable tokenizer directory: {first}") from None
    if "vocab_size" in config.model.config:
        return int(config.model.config["vocab_size"]), "model.config.vocab_size"
    model_type = ARCH_ALIASES.get(config.model.arch, config.model.arch)
    return AutoConfig.for_model(
        model_type
    ).vocab_size, f"the {config.model.arch} default: tokenizer not local"
