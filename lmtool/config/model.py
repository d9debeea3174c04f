"""The model section: the architecture to build, or the checkpoint to start from."""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import Field

from lmtool.config.base import Section
from lmtool.errors import ConfigError

# --------------------------------------------------------------------------- model


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


class ModelConfig(Section):
    arch: str = Field(
        "gpt2",
        description="gpt2 | bert | lstm | any transformers model_type (used when building from scratch).",
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides for the architecture's config, e.g. {n_layer: 6, n_embd: 384}. Built from scratch, models default to no dropout and GPT-2's tanh GELU as one fused kernel (gelu_pytorch_tanh) unless set here.",
    )
    init_from: str | None = Field(
        None,
        description="Start from this checkpoint (local dir or hub name) instead of building from scratch.",
    )
    pad_vocab_multiple: int = Field(
        64,
        ge=1,
        description="Pad the vocabulary up to a multiple of this when building from scratch (faster matmuls).",
    )
    attention: Literal["auto", "sdpa", "eager"] = Field(
        "auto", description="Attention kernel; auto = SDPA where the model supports it."
    )
    trust_remote_code: bool = Field(False, description="Allow custom model code from the hub.")
    resize_embeddings: bool = Field(
        False,
        description="With init_from: train with a tokenizer other than the checkpoint's by giving the model new embeddings "
        "for it (tokens both vocabularies share keep their vectors, the others start fresh). Off: the tokenizer must be the checkpoint's.",
    )


def check_arch(arch: str) -> None:
    """Exit-2 error for an architecture neither lmtool nor transformers knows (imports transformers: ~3 s)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    known = set(CONFIG_MAPPING_NAMES) | {"lstm"}
    if arch not in known:
        close = difflib.get_close_matches(arch, sorted(known), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(
            "model.arch",
            f"unknown architecture; {hint}known: {', '.join(COMMON_ARCHS)} or any of {len(known)} transformers model types",
            value=arch,
        )
