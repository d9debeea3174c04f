"""Build a model from the config (from scratch or from a checkpoint) and load trained ones.

Every model is a plain `transformers` model, so what lmtool saves loads anywhere. Importing
this module also registers the `lstm` baseline with the Auto classes.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
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
from lmtool.config import Config, ConfigError, looks_like_hub_id
from lmtool.errors import LmtoolError, first_line
from lmtool.hub import require_hub, require_model_source
from lmtool.model_dir import check_model_dir, check_vocab_fits
from lmtool.positions import check_fits, max_positions, record_trained_context, scratch_positions

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

ARCH_ALIASES = {"lstm": lstm.LstmConfig.model_type}
KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads")
COMMON_ARCHS = (
    "gpt2",
    "bert",
    "lstm",
    "llama",
    "roberta",
    "gpt_neox",
    "mistral",
    "qwen2",
    "distilbert",
    "opt",
)
# How transformers' messages name config attributes other than by their key (e.g. GPT-2's attention).
MESSAGE_NAMES = {
    "hidden_size": ("embed_dim", "hidden size"),
    "num_attention_heads": ("num_heads", "number of attention heads"),
}


def build_model(cfg: Config, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The model to train: `model.init_from` a checkpoint, or `model.arch` from scratch (seeded)."""
    masked = cfg.data.objective == "mlm"
    if cfg.model.init_from is not None:
        model = _from_pretrained(
            cfg.model.init_from,
            masked,
            cfg.model.trust_remote_code,
            key="model.init_from",
            overrides=cfg.model.config,  # checked by model_check.check_init_from_overrides
        )
        if cfg.model.resize_embeddings:
            from lmtool.pairing import new_embeddings

            new_embeddings(model, cfg, tokenizer)
        elif len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=cfg.model.pad_vocab_multiple)
    else:
        check_arch(cfg.model.arch)
        config = _config_from_scratch(cfg, tokenizer)
        torch.manual_seed(cfg.run.seed)
        model = model_from_config(cfg, config)
    where = "the config of model.init_from" if cfg.model.init_from is not None else "model.config"
    check_fits(cfg, max_positions(model.config), where)  # a hub model's positions are known only now
    record_trained_context(model.config, cfg.data.block_size, from_scratch=cfg.model.init_from is None)
    return model


def model_from_config(cfg: Config, config: PreTrainedConfig) -> PreTrainedModel:
    """The untrained model for `config`; what transformers or torch reject is an exit-2 error."""
    masked = cfg.data.objective == "mlm"
    auto = AutoModelForMaskedLM if masked else AutoModelForCausalLM
    try:
        return auto.from_config(config, **_attention_kwargs(cfg.model.attention))
    except (ValueError, RuntimeError, TypeError, AssertionError) as exc:
        if "Unrecognized configuration class" in str(exc):
            kind = "masked-LM" if masked else "causal-LM"
            raise ConfigError(
                "model.arch",
                f"has no {kind} head for data.objective {cfg.data.objective}",
                value=cfg.model.arch,
            ) from None
        raise model_config_error(cfg, exc) from None


def model_config_error(cfg: Config, exc: BaseException) -> ConfigError:
    """`transformers` or torch rejecting a from-scratch model, as an error naming the keys to fix:
    the model.config keys its message mentions by name (or alias), else those whose number it quotes
    (a shape error), else every key the user set."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines()) or type(exc).__name__
    arch = cfg.model.arch
    if "attn_implementation" in text or "attention implementation" in text:
        return ConfigError(
            "model.attention", f"is not supported by {arch}: {text}", value=cfg.model.attention
        )
    config_class = AutoConfig.for_model(ARCH_ALIASES.get(arch, arch)).__class__
    aliases = getattr(config_class, "attribute_map", {})

    def names(key: str) -> set[str]:
        own = {key, aliases.get(key, key), *(k for k, v in aliases.items() if v == key)}
        return own | {phrase for name in own for phrase in MESSAGE_NAMES.get(name, ())}

    named = [
        key
        for key in cfg.model.config
        if any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", text) for n in names(key))
    ]
    numbers = set(re.findall(r"(?<![\w.])-?\d+(?![\w.])", text))
    quoted = [k for k, v in cfg.model.config.items() if type(v) is int and str(v) in numbers]
    keys = named or quoted or list(cfg.model.config)
    if not keys:
        return ConfigError("model.arch", f"cannot be built with these settings: {text}", value=arch)
    return ConfigError(
        ", ".join(f"model.config.{k}" for k in keys), f"rejected by {arch}: {text}", has_value=False
    )


def _config_from_scratch(cfg: Config, tokenizer: PreTrainedTokenizerBase) -> PreTrainedConfig:
    special = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id
        if tokenizer.bos_token_id is not None
        else tokenizer.cls_token_id,
        "eos_token_id": tokenizer.eos_token_id
        if tokenizer.eos_token_id is not None
        else tokenizer.sep_token_id,
    }
    return scratch_config(cfg, _padded(len(tokenizer), cfg.model.pad_vocab_multiple), special)


def scratch_config(cfg: Config, vocab_size: int, special: dict[str, int | None]) -> PreTrainedConfig:
    """The from-scratch model config: the architecture's defaults, lmtool's scratch defaults, then
    model.config. Set attention heads alone set the key/value heads too (plain multi-head attention):
    an architecture's default key/value head count need not divide the new head count."""
    model_type = ARCH_ALIASES.get(cfg.model.arch, cfg.model.arch)
    config_class = AutoConfig.for_model(model_type).__class__
    known = _config_keys(config_class)
    check_config_keys(cfg.model.config, known, cfg.model.arch, f"{config_class.__name__} for its keys")
    settings = {
        **{k: v for k, v in special.items() if k in known},
        "vocab_size": vocab_size,
        **scratch_defaults(config_class),
        **scratch_positions(config_class, cfg.model.config, special["pad_token_id"], cfg.data.block_size),
        **cfg.model.config,
        **_kv_heads(config_class, cfg.model.config, known),
    }
    try:
        return AutoConfig.for_model(model_type, **settings)
    except (TypeError, ValueError, StrictDataclassError) as exc:
        raise model_config_error(cfg, exc) from None


def check_arch(arch: str) -> None:
    """Exit-2 error for an architecture neither lmtool nor transformers knows."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    known = set(CONFIG_MAPPING_NAMES) | set(ARCH_ALIASES)
    if arch not in known:
        close = difflib.get_close_matches(arch, sorted(known), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(
            "model.arch",
            f"unknown architecture; {hint}known: {', '.join(COMMON_ARCHS)} or any of {len(known)} transformers model types",
            value=arch,
        )


def check_config_keys(overrides: dict, known: set[str], what: str, see: str) -> None:
    """Each `model.config` key must be one of `known`, the settings of `what`'s config (`see` says where)."""
    for key, value in overrides.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean 'model.config.{close[0]}'?" if close else f"see {see}"
            raise ConfigError(f"model.config.{key}", f"is not a {what} config key", value=value, hint=hint)


def _kv_heads(config_class: type[PreTrainedConfig], user: dict, known: set[str]) -> dict:
    """Key/value heads = attention heads when model.config sets only the latter."""
    heads_key = getattr(config_class, "attribute_map", {}).get("num_attention_heads", "num_attention_heads")
    heads = user.get(heads_key, user.get("num_attention_heads"))
    kv_keys = [k for k in KV_HEAD_KEYS if k in known]
    if heads is None or any(k in user for k in kv_keys):
        return {}
    return {k: heads for k in kv_keys}


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


def is_causal_lm(model: PreTrainedModel) -> bool:
    return not any(
        name.endswith("ForMaskedLM") for name in (model.config.architectures or [type(model).__name__])
    )


# Saved architectures with a task head: neither generation nor perplexity means anything for them.
TASK_HEAD_SUFFIXES = (
    "ForSequenceClassification",
    "ForTokenClassification",
    "ForQuestionAnswering",
    "ForMultipleChoice",
)


def load_model(
    path: str | Path,
    *,
    trust_remote_code: bool = False,
    for_masked_lm: bool | None = None,
    key: str = "model",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A trained model and its tokenizer, in eval mode. Causal or masked LM is read from the config.
    `key` names the setting the path came from in errors (e.g. generate.model)."""
    path = str(path)
    if not os.path.isdir(path) and not looks_like_hub_id(path):
        raise LmtoolError(f"model directory not found: {path}")
    check_model_dir(path)
    require_hub(path, key)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as exc:
        raise LmtoolError(
            f"{path} has no usable tokenizer (save one with the model): {first_line(exc)}"
        ) from None
    if for_masked_lm is None:
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise LmtoolError(f"{path} is not a model directory: {first_line(exc)}") from None
        task_heads = [name for name in config.architectures or [] if name.endswith(TASK_HEAD_SUFFIXES)]
        if task_heads:
            raise LmtoolError(
                f"{key}: {path} is a {task_heads[0]}, a fine-tuned task model, not a language model: "
                "use `lmtool predict` with it (or `lmtool evaluate` for its task's metrics)"
            )
        for_masked_lm = any(name.endswith("ForMaskedLM") for name in (config.architectures or []))
    model = _from_pretrained(path, for_masked_lm, trust_remote_code, key=None)
    check_vocab_fits(path, tokenizer, model)
    model.eval()
    return model, tokenizer


def _from_pretrained(
    name: str, masked: bool, trust_remote_code: bool, key: str | None, overrides: dict | None = None
) -> PreTrainedModel:
    if key:
        require_model_source(name, key)
    elif os.path.isdir(name) or looks_like_hub_id(name):
        require_hub(name, "model")
    else:
        raise LmtoolError(f"model directory not found: {name}")
    auto = AutoModelForMaskedLM if masked else AutoModelForCausalLM
    try:
        return auto.from_pretrained(name, trust_remote_code=trust_remote_code, **(overrides or {}))
    except (OSError, ValueError) as exc:
        where = f"{key}: " if key else ""
        raise LmtoolError(f"{where}cannot load model {name}: {first_line(exc)}") from None


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
