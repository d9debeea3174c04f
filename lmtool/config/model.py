"""The model section: the architecture to build, or the checkpoint to start from."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lmtool.config.base import Count, Section
from lmtool.config.errors import ConfigError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_hub_id(name: str) -> bool:
    """`gpt2` or `org/model` (not a path that starts with . or / and has no more than one slash)."""
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "/", "~"))


# --------------------------------------------------------------------------- model


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
    pad_vocab_multiple: Count = Field(
        64,
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

    @model_validator(mode="after")
    def _resize_needs_init_from(self) -> ModelConfig:
        if self.resize_embeddings and self.init_from is None:
            raise ConfigError(
                "model.resize_embeddings",
                "applies only with model.init_from (a model built from scratch gets embeddings for its tokenizer)",
                value=True,
            )
        return self

    @field_validator("config")
    @classmethod
    def _finite(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        """Free-form, so the sections' finite-numbers rule does not reach inside: checked here, key by key."""
        for key, value in overrides.items():
            _check_finite(f"model.config.{key}", value)
        return overrides


def _check_finite(key: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, "must be a finite number", value=value)
    if isinstance(value, dict):
        for name, item in value.items():
            _check_finite(f"{key}.{name}", item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(f"{key}.{index}", item)
