"""A pretrained model with a task's head, and what the recipe does to it (generic: the tasks say which head).

`load_with_head` loads `model.init_from` through the head's Auto class and says which weights are new;
a head trained for other labels is refused unless `finetune.reinit_head` (silently reusing it would
map old classes onto new ones). `freeze` and `layer_lr_scale` find embeddings, encoder layers and the
head from parameter names and the model's base-model prefix, so they work for any transformers encoder.
Seed torch before `load_with_head`: new head weights come from its generator.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import AutoConfig, PreTrainedConfig, PreTrainedModel

from lmtool import console
from lmtool.config import ConfigError, looks_like_hub_id
from lmtool.errors import LmtoolError, first_line
from lmtool.hub import require_hub
from lmtool.model_dir import WEIGHT_FILES, refuse_not_a_model
from lmtool.models import ARCH_ALIASES, TASK_HEAD_SUFFIXES

KEY = "model.init_from"
# `.layer.3.` (BERT), `.layers.3.` (Llama, ModernBERT), `.h.3.` (GPT-2), `.block.3.` (T5).
LAYER_PATTERN = re.compile(r"(?:^|\.)(?:layer|layers|h|block)\.(\d+)\.")
EMBEDDING_MARKS = ("embeddings", "wte", "wpe", "embed_tokens", "embed_positions")


@dataclass(frozen=True)
class Head:
    """A task's head as transformers names it: the Auto class that adds it and the architecture suffix
    a model saved with it has (`BertForTokenClassification`); `task` names the task in messages."""

    task: str
    auto: type
    suffix: str


def load_with_head(
    init_from: str,
    head: Head,
    num_labels: int,
    id2label: dict[int, str] | None,
    reinit_head: bool,
    trust_remote_code: bool = False,
    overrides: dict | None = None,
    what: str | None = None,
) -> PreTrainedModel:
    """`init_from` with `head` of `num_labels` outputs, in train mode; logs the new weights (`what` they
    predict) and lists them in `model.lmtool_new_weights` (LoRA trains and saves them with the adapter).
    `overrides` (model.config, checked by `model_check.check_init_from_overrides`; the task's own settings
    such as `problem_type` too) update the checkpoint's config."""
    config = check_head_model(init_from, head, reinit_head, trust_remote_code)
    same_head = _has_head(config, head)
    if same_head and not reinit_head:
        _check_head_labels(config, init_from, num_labels, id2label)
    kwargs: dict = {**(overrides or {}), "num_labels": num_labels}
    if id2label is not None:
        kwargs.update(id2label=id2label, label2id={name: i for i, name in id2label.items()})
    try:
        model, info = head.auto.from_pretrained(
            init_from,
            output_loading_info=True,
            ignore_mismatched_sizes=reinit_head,
            trust_remote_code=trust_remote_code,
            **kwargs,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise LmtoolError(f"{KEY}: cannot load {init_from} for {head.task}: {first_line(exc)}") from None
    new = set(info["missing_keys"]) | {entry[0] for entry in info["mismatched_keys"]}
    if reinit_head or not same_head:  # a head of another task (e.g. sequence -> token) is not this task's
        new |= _reinit_head(model)
    if new:
        names = ", ".join(sorted(new, key=_param_order(model)))
        what = what or f"{num_labels} label{'s' if num_labels != 1 else ''}"
        console.info(f"new head: {names} ({what})")
    model.lmtool_new_weights = sorted(new, key=_param_order(model))
    model.train()
    return model


def check_head_model(
    init_from: str, head: Head, reinit_head: bool, trust_remote_code: bool = False
) -> PreTrainedConfig:
    """The config of `init_from` once it is known to have weights, an architecture that takes `head`, and
    no head of another task (unless finetune.reinit_head): the recipe checks this before it preprocesses
    or opens a run, so a bad model leaves nothing."""
    config = checkpoint_config(init_from, trust_remote_code)
    _check_architecture(config, head)
    _check_other_task_head(config, init_from, head, reinit_head)
    return config


def _check_other_task_head(config: PreTrainedConfig, init_from: str, head: Head, reinit_head: bool) -> None:
    """A checkpoint fine-tuned for another task (a sequence classifier given to NER) has a head that is never
    this task's: it can only be replaced (its shapes may not even fit), so that takes finetune.reinit_head."""
    if reinit_head:
        return
    other = [
        name
        for name in config.architectures or []
        if name.endswith(TASK_HEAD_SUFFIXES) and not name.endswith(head.suffix)
    ]
    if other:
        problem = (
            f"{init_from} is a {other[0]}, fine-tuned for another task: task {head.task} needs a new head"
        )
        hint = "set finetune.reinit_head: true to replace it (the rest of the model is kept)"
        raise ConfigError("finetune.reinit_head", problem, value=False, hint=hint)


def checkpoint_config(init_from: str, trust_remote_code: bool) -> PreTrainedConfig:
    if not os.path.isdir(init_from) and not looks_like_hub_id(init_from):
        raise ConfigError(KEY, "directory not found (and not a hub model name)", value=init_from)
    require_hub(init_from, KEY)
    if os.path.isdir(init_from):
        refuse_not_a_model(init_from, KEY)
        if not os.path.isfile(os.path.join(init_from, "config.json")):
            raise ConfigError(KEY, "is not a model directory (no config.json)", value=init_from)
        if not any(os.path.isfile(os.path.join(init_from, name)) for name in WEIGHT_FILES):
            raise ConfigError(KEY, f"has no weights (none of {', '.join(WEIGHT_FILES)})", value=init_from)
    try:
        return AutoConfig.from_pretrained(init_from, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise LmtoolError(f"{KEY}: cannot read the config of {init_from}: {first_line(exc)}") from None


def _check_architecture(config: PreTrainedConfig, head: Head) -> None:
    if config.model_type == ARCH_ALIASES["lstm"]:
        raise ConfigError(
            KEY,
            f"task {head.task} needs a transformer model (model.arch lstm has no {head.suffix[3:]} head)",
            has_value=False,
        )
    remote = head.auto.__name__ in (getattr(config, "auto_map", None) or {})
    if type(config) not in head.auto._model_mapping and not remote:
        raise ConfigError(
            KEY,
            f"architecture {config.model_type} has no head for task {head.task} (transformers has no "
            f"{head.auto.__name__} for it)",
            has_value=False,
        )


def _has_head(config: PreTrainedConfig, head: Head) -> bool:
    return any(name.endswith(head.suffix) for name in (config.architectures or []))


def _check_head_labels(
    config: PreTrainedConfig, init_from: str, num_labels: int, id2label: dict[int, str] | None
) -> None:
    """The checkpoint's head predicts other labels (count, or names in order): refuse rather than remap."""
    old = [config.id2label[i] for i in sorted(config.id2label)]
    named = not all(name == f"LABEL_{i}" for i, name in enumerate(old))
    new = [id2label[i] for i in sorted(id2label)] if id2label else None
    if len(old) == num_labels and not (named and new is not None and old != new):
        return
    raise ConfigError(
        "finetune.reinit_head",
        f"{init_from} already has a head for {len(old)} labels ({', '.join(old)}), this task has "
        f"{num_labels}{' (' + ', '.join(new) + ')' if new else ''}",
        value=False,
        hint="set finetune.reinit_head: true to replace the head with a new one",
    )


def head_parameters(model: PreTrainedModel) -> dict[str, torch.nn.Parameter]:
    """The parameters outside the base model (e.g. `classifier.*`): the task head."""
    base = model.base_model
    if base is model:
        raise LmtoolError(f"{type(model).__name__} has no separate base model, so its head cannot be found")
    inside = {id(p) for p in base.parameters()}
    return {name: p for name, p in model.named_parameters() if id(p) not in inside}


@torch.no_grad()
def _reinit_head(model: PreTrainedModel) -> set[str]:
    """Initialise every head module afresh, as the model's own `_init_weights` does for new weights."""
    head = head_parameters(model)
    ids = {id(p) for p in head.values()}
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if own and all(id(p) in ids for p in own):
            for param in own:  # loaded weights carry transformers' "already initialised" mark
                if hasattr(param, "_is_hf_initialized"):
                    del param._is_hf_initialized
            model._init_weights(module)
    return set(head)


def _param_order(model: PreTrainedModel) -> Callable[[str], int]:
    order = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    return lambda name: order.get(name, len(order))


def layer_index(name: str) -> int | None:
    match = LAYER_PATTERN.search(name)
    return int(match.group(1)) if match else None


def is_embedding(name: str) -> bool:
    return any(mark in name for mark in EMBEDDING_MARKS)


def _num_layers(model: torch.nn.Module, key: str) -> int:
    indices = [i for name, _ in model.named_parameters() if (i := layer_index(name)) is not None]
    if not indices:
        raise ConfigError(
            key,
            f"cannot find the encoder layers of {type(model).__name__} (no '.layer.N.' / '.layers.N.' / "
            "'.h.N.' / '.block.N.' in its parameter names)",
            has_value=False,
        )
    return max(indices) + 1


def freeze(model: PreTrainedModel, spec: str | int | None) -> int:
    """Stop gradients for `embeddings`, everything but the head (`all_but_head`), or the embeddings and
    the first N layers (an int); returns how many parameters (elements) were frozen."""
    if spec is None:
        return 0
    if spec == "all_but_head":
        head = {id(p) for p in head_parameters(model).values()}
        chosen = [p for p in model.parameters() if id(p) not in head]
    elif spec == "embeddings":
        chosen = [p for name, p in model.named_parameters() if is_embedding(name)]
    elif isinstance(spec, int) and not isinstance(spec, bool):
        layers = _num_layers(model, "finetune.freeze")
        if not 0 <= spec <= layers:
            raise ConfigError("finetune.freeze", f"the model has {layers} layers", value=spec)
        chosen = [
            p
            for name, p in model.named_parameters()
            if is_embedding(name) or ((i := layer_index(name)) is not None and i < spec)
        ]
    else:
        raise ConfigError("finetune.freeze", "must be embeddings, all_but_head or a layer count", value=spec)
    for param in chosen:
        param.requires_grad_(False)
    frozen = sum(p.numel() for p in chosen)
    console.info(f"frozen: {frozen:,} of {sum(p.numel() for p in model.parameters()):,} parameters ({spec})")
    return frozen


def layer_lr_scale(model: PreTrainedModel, decay: float) -> Callable[[str], float]:
    """Layer-wise LR decay (ELECTRA, DeBERTa): the head and anything above the layers get 1, the top
    layer decay, the one below decay^2, ..., the embeddings decay^(L+1) for L layers. Takes a
    parameter name as `model.named_parameters()` gives it (a DDP `module.` prefix is fine)."""
    if not 0 < decay <= 1:
        raise ConfigError("finetune.layer_lr_decay", "must be in (0, 1]", value=decay)
    layers = _num_layers(model, "finetune.layer_lr_decay")

    def scale(name: str) -> float:
        index = layer_index(name)
        if index is not None:
            return decay ** (layers - index)
        return decay ** (layers + 1) if is_embedding(name) else 1.0

    return scale
