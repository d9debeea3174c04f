"""The model of an SFT run: `model.init_from` as a causal LM (its own LM head, nothing new), and
whether packed rows can be isolated in it."""

from __future__ import annotations

import inspect

import torch
from transformers import AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel

from lmtool.config import ConfigError
from lmtool.errors import LmtoolError
from lmtool.finetune.heads import checkpoint_config, first_line

KEY = "model.init_from"
MASKED_ATTENTION = ("eager", "sdpa", "flex_attention")


def check_causal_lm(init_from: str, trust_remote_code: bool = False) -> PreTrainedConfig:
    """The config of `init_from` once it is a checkpoint AutoModelForCausalLM loads (task sft); a masked LM
    is refused."""
    config = checkpoint_config(init_from, trust_remote_code)
    if any(name.endswith("ForMaskedLM") for name in (config.architectures or [])):
        raise ConfigError(KEY, "task sft needs a causal LM, not a masked LM", value=init_from)
    remote = AutoModelForCausalLM.__name__ in (getattr(config, "auto_map", None) or {})
    if type(config) not in AutoModelForCausalLM._model_mapping and not remote:
        raise ConfigError(KEY, f"architecture {config.model_type} is not a causal LM", value=init_from)
    return config


def load_causal_lm(
    init_from: str, trust_remote_code: bool = False, overrides: dict | None = None
) -> PreTrainedModel:
    """`init_from` through AutoModelForCausalLM, in train mode, its config updated by `overrides`."""
    check_causal_lm(init_from, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            init_from, trust_remote_code=trust_remote_code, **(overrides or {})
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise LmtoolError(f"{KEY}: cannot load {init_from} for sft: {first_line(exc)}") from None
    model.train()
    return model


def isolates_packed_rows(model: torch.nn.Module) -> bool:
    """True when the model takes position_ids and a prepared 4D mask (transformers attention in
    eager/SDPA/flex form): then a packed row's examples cannot see each other."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) not in MASKED_ATTENTION:
        return False
    return "position_ids" in inspect.signature(model.forward).parameters


def sft_rows(model: torch.nn.Module, packing: bool, max_length: int, train, validation):
    """The train and validation rows: packed into max_length rows when asked and the model can
    isolate them (said and left padded otherwise)."""
    from lmtool import console
    from lmtool.data.sft_pack import pack_dataset

    if not packing:
        return train, validation
    if not isolates_packed_rows(model):
        console.warning(
            f"finetune.sft.packing: {type(model).__name__} takes no 4D attention mask with position ids, so "
            "packed examples could see each other: padding each example instead"
        )
        return train, validation
    packed = pack_dataset(train, max_length)
    console.info(
        f"packing: {len(train)} training examples in {len(packed)} rows of up to {max_length} tokens"
    )
    return packed, pack_dataset(validation, max_length) if validation is not None else None
