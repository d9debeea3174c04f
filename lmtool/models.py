"""Build a model from the config (from scratch or from a checkpoint) and load trained ones.

Every model is a plain `transformers` model, so what lmtool saves loads anywhere. Importing
this module also registers the `lstm` baseline with the Auto classes.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from pathlib import Path

import torch
import transformers
from huggingface_hub.errors import StrictDataclassError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lmtool import lstm
from lmtool.config import Config, ConfigError, check_arch, looks_like_hub_id
from lmtool.errors import LmtoolError
from lmtool.positions import record_trained_context, scratch_positions

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

ARCH_ALIASES = {"lstm": lstm.LstmConfig.model_type}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
)


def build_model(cfg: Config, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The model to train: `model.init_from` a checkpoint, or `model.arch` from scratch (seeded)."""
    masked = cfg.data.objective == "mlm"
    if cfg.model.init_from is not None:
        model = _from_pretrained(
            cfg.model.init_from, masked, cfg.model.trust_remote_code, key="model.init_from"
        )
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=cfg.model.pad_vocab_multiple)
    else:
        check_arch(cfg.model.arch)
        config = _config_from_scratch(cfg, tokenizer)
        auto = AutoModelForMaskedLM if masked else AutoModelForCausalLM
        torch.manual_seed(cfg.run.seed)
        try:
            model = auto.from_config(config, **_attention_kwargs(cfg.model.attention))
        except ValueError as exc:
            if "Unrecognized configuration class" in str(exc):
                kind = "masked-LM" if masked else "causal-LM"
                raise ConfigError(
                    "model.arch",
                    f"has no {kind} head for data.objective {cfg.data.objective}",
                    value=cfg.model.arch,
                ) from None
            raise
    _check_block_size(cfg, model.config)
    record_trained_context(model.config, cfg.data.block_size, from_scratch=cfg.model.init_from is None)
    return model


def _config_from_scratch(cfg: Config, tokenizer: PreTrainedTokenizerBase) -> PreTrainedConfig:
    model_type = ARCH_ALIASES.get(cfg.model.arch, cfg.model.arch)
    config_class = AutoConfig.for_model(model_type).__class__
    known = _config_keys(config_class)
    for key in cfg.model.config:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = (
                f"did you mean 'model.config.{close[0]}'?"
                if close
                else f"see {config_class.__name__} for its keys"
            )
            raise ConfigError(
                f"model.config.{key}",
                f"is not a {cfg.model.arch} config key",
                value=cfg.model.config[key],
                hint=hint,
            )
    vocab = _padded(len(tokenizer), cfg.model.pad_vocab_multiple)
    special = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id
        if tokenizer.bos_token_id is not None
        else tokenizer.cls_token_id,
        "eos_token_id": tokenizer.eos_token_id
        if tokenizer.eos_token_id is not None
        else tokenizer.sep_token_id,
    }
    settings = {
        **{k: v for k, v in special.items() if k in known},
        "vocab_size": vocab,
        **scratch_defaults(config_class),
        **scratch_positions(config_class, cfg.model.config, special["pad_token_id"], cfg.data.block_size),
        **cfg.model.config,
    }
    try:
        return AutoConfig.for_model(model_type, **settings)
    except (TypeError, ValueError, StrictDataclassError) as exc:
        message = str(exc).strip().splitlines()
        raise ConfigError(
            "model.config",
            f"is not valid for {cfg.model.arch}: {' '.join(m.strip() for m in message)}",
            has_value=False,
        ) from None


def scratch_defaults(config_class: type[PreTrainedConfig]) -> dict:
    """Where pretraining from scratch departs from an architecture's published defaults (model.config wins):

    - no dropout, as nanoGPT and litgpt pretrain: a single pass over a large corpus does not overfit,
      and dropout costs ~25% of a CPU training step;
    - GPT-2's tanh GELU (`gelu_new`) as PyTorch's fused kernel (`gelu_pytorch_tanh`): the same
      formula in one operation instead of eight, ~10% of a CPU step.
    """
    defaults = config_class().to_dict()
    settings: dict = {
        key: 0.0
        for key, value in defaults.items()
        if ("dropout" in key or "pdrop" in key) and isinstance(value, float) and value > 0
    }
    for key in ("activation_function", "hidden_act"):
        if defaults.get(key) == "gelu_new":
            settings[key] = "gelu_pytorch_tanh"
    return settings


def _config_keys(config_class: type[PreTrainedConfig]) -> set[str]:
    if dataclasses.is_dataclass(config_class):
        names = {f.name for f in dataclasses.fields(config_class)}
    else:
        names = set(config_class().to_dict())
    return names | set(getattr(config_class, "attribute_map", {}))


def _padded(size: int, multiple: int) -> int:
    return int(math.ceil(size / multiple) * multiple)


def _attention_kwargs(attention: str) -> dict:
    return {} if attention == "auto" else {"attn_implementation": attention}


def max_positions(config: PreTrainedConfig) -> int | None:
    """The longest sequence the model can take (None: unbounded, e.g. the LSTM)."""
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _check_block_size(cfg: Config, config: PreTrainedConfig) -> None:
    limit = max_positions(config)
    if limit is not None and cfg.data.block_size > limit:
        raise ConfigError(
            "data.block_size",
            f"is larger than the model's {limit} positions",
            value=cfg.data.block_size,
            hint="lower data.block_size or raise the positions in model.config",
        )


def is_causal_lm(model: PreTrainedModel) -> bool:
    return not any(
        name.endswith("ForMaskedLM") for name in (model.config.architectures or [type(model).__name__])
    )


def load_model(
    path: str | Path, *, trust_remote_code: bool = False, for_masked_lm: bool | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A trained model and its tokenizer, in eval mode. Causal or masked LM is read from the config."""
    path = str(path)
    if not os.path.isdir(path) and not looks_like_hub_id(path):
        raise LmtoolError(f"model directory not found: {path}")
    if os.path.isdir(path) and not any(os.path.exists(os.path.join(path, f)) for f in TOKENIZER_FILES):
        raise LmtoolError(
            f"{path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): save one with the model"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as exc:
        raise LmtoolError(
            f"{path} has no usable tokenizer (save one with the model): {_first_line(exc)}"
        ) from None
    if for_masked_lm is None:
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise LmtoolError(f"{path} is not a model directory: {_first_line(exc)}") from None
        for_masked_lm = any(name.endswith("ForMaskedLM") for name in (config.architectures or []))
    model = _from_pretrained(path, for_masked_lm, trust_remote_code, key=None)
    model.eval()
    return model, tokenizer


def _from_pretrained(name: str, masked: bool, trust_remote_code: bool, key: str | None) -> PreTrainedModel:
    if not os.path.isdir(name) and not looks_like_hub_id(name):
        if key:
            raise ConfigError(key, "directory not found (and not a hub model name)", value=name)
        raise LmtoolError(f"model directory not found: {name}")
    auto = AutoModelForMaskedLM if masked else AutoModelForCausalLM
    try:
        return auto.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        where = f"{key}: " if key else ""
        raise LmtoolError(f"{where}cannot load model {name}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def count_parameters(model: torch.nn.Module, *, exclude_embeddings: bool = False) -> int:
    """Parameter count (tied weights once); without embeddings for the 6N FLOPs rule."""
    seen: set[int] = set()
    total = 0
    embeddings = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    for param in model.parameters():
        if id(param) in seen or (exclude_embeddings and id(param) in embeddings):
            continue
        seen.add(id(param))
        total += param.numel()
    return total
