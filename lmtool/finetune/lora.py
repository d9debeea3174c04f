"""LoRA via peft (the optional `lora` extra): adapters on the attention projections, the task head trained fully.

The wrapped model is a peft `PeftModel`: its `save_pretrained` writes the adapter and the head only, so
checkpoints stay small and hold exactly what the optimizer trains. `recipes/lora_files.py` tells the engine
how to read such a checkpoint back on resume and what final/ holds, so the engine never imports peft.
"""

from __future__ import annotations

import warnings

import torch

from lmtool import console
from lmtool.config import ConfigError
from lmtool.config.finetune import LoraConfig
from lmtool.errors import LmtoolError, first_line
from lmtool.finetune.heads import head_parameters
from lmtool.models import ARCH_ALIASES

KEY = "finetune.lora"
INSTALL = 'pip install "lmtool[lora]"'
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Attention projections by name, for architectures peft has no default for (q/v as the LoRA paper).
ATTENTION_NAMES = ("q_proj", "v_proj", "query", "value", "q", "v", "c_attn", "query_key_value", "qkv", "Wqkv")


def require_peft() -> None:
    """Exit 2 (before any work) when the lora extra is not installed."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ConfigError(KEY, f"needs the peft package: {INSTALL}", has_value=False) from None


def apply_lora(model: torch.nn.Module, cfg: LoraConfig) -> torch.nn.Module:
    """`model` wrapped with LoRA adapters; only the adapters and `modules_to_save` (default: the head) train."""
    require_peft()
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    model_type = getattr(model.config, "model_type", type(model).__name__)
    if model_type == ARCH_ALIASES["lstm"]:
        raise ConfigError(
            KEY, "needs a transformer model (model.arch lstm has no attention projections)", has_value=False
        )
    names = [name for name, _ in model.named_modules()]
    targets = _targets(model, cfg.target_modules)
    saved = _head_modules(model) if cfg.modules_to_save is None else cfg.modules_to_save
    missing = [m for m in saved if not any(_matches(name, m) for name in names)]
    if missing:
        raise ConfigError(
            f"{KEY}.modules_to_save",
            f"{model_type} has no module named {', '.join(missing)}; its top-level modules: "
            f"{', '.join(name for name, _ in model.named_children())}",
            value=cfg.modules_to_save,
        )
    from transformers.pytorch_utils import Conv1D

    conv1d = any(  # GPT-2 stores its projections transposed
        isinstance(module, Conv1D)
        for name, module in model.named_modules()
        if any(_matches(name, t) for t in targets)
    )
    settings = PeftLoraConfig(
        r=cfg.r,
        fan_in_fan_out=conv1d,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        modules_to_save=saved or None,
        bias="none",
    )
    try:
        with warnings.catch_warnings():  # peft reads transformers' deprecated is_gradient_checkpointing
            warnings.simplefilter("ignore", FutureWarning)
            wrapped = get_peft_model(model, settings)
    except ValueError as exc:
        raise LmtoolError(f"{KEY}: peft cannot add adapters to {model_type}: {first_line(exc)}") from None
    adapted = sum(1 for name in names if any(_matches(name, t) for t in targets))
    console.info(
        f"LoRA r {cfg.r}, alpha {cfg.alpha:g}: adapters on {adapted} modules ({', '.join(targets)}); "
        f"trained fully: {', '.join(saved) or 'nothing'}"
    )
    return wrapped


def _matches(name: str, target: str) -> bool:
    """peft's rule for a name in target_modules / modules_to_save: the module name or its dotted suffix."""
    return name == target or name.endswith(f".{target}")


def _linear_names(model: torch.nn.Module) -> list[str]:
    """Module names of the layers LoRA can adapt (Linear, and GPT-2's Conv1D), the head left out."""
    from transformers.pytorch_utils import Conv1D

    saved = _head_modules(model)
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear | Conv1D)
        and not any(name == s or name.startswith(f"{s}.") for s in saved)
    ]


def _targets(model: torch.nn.Module, setting: str | list[str]) -> list[str]:
    """The module names to adapt: as listed (each must exist), or auto: peft's default for the
    architecture, else the attention projections found by name."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    linear = _linear_names(model)
    suffixes = list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in linear))
    model_type = getattr(model.config, "model_type", "")
    key = f"{KEY}.target_modules"
    if setting == "auto":
        targets = list(DEFAULTS.get(model_type) or [s for s in ATTENTION_NAMES if s in suffixes])
        if not any(_matches(name, t) for name in linear for t in targets):
            raise ConfigError(
                key,
                f"auto finds no attention projections in {model_type}; name the modules to adapt, e.g. "
                f"some of its linear layers: {', '.join(suffixes[:8])}",
                value=setting,
            )
        return targets
    absent = [t for t in setting if not any(_matches(name, t) for name in linear)]
    if absent:
        raise ConfigError(
            key,
            f"{model_type} has no linear module named {', '.join(absent)}; some that exist: "
            f"{', '.join(suffixes[:8])}",
            value=setting,
        )
    return list(setting)


def _head_modules(model: torch.nn.Module) -> list[str]:
    """The modules to train fully and save with the adapter: the task head's top-level modules (e.g.
    classifier) and any other module with weights `init_from` did not have (e.g. a pooler new to a
    checkpoint saved without one: the adapter alone must rebuild the model). None for a causal LM (its
    output layer is the pretrained vocabulary projection, not a new head)."""
    if type(model).__name__.endswith(("ForCausalLM", "LMHeadModel")):
        return []
    try:
        head = [name.split(".")[0] for name in head_parameters(model)]
    except LmtoolError:
        head = []
    new = [name.rsplit(".", 1)[0] for name in getattr(model, "lmtool_new_weights", ())]
    return list(dict.fromkeys([*head, *(name for name in new if name.split(".")[0] not in head)]))
