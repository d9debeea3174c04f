"""The model to export, read from its directory: which kind it is (by its saved architecture), the
PyTorch model in fp32 eval mode on the CPU, its tokenizer."""

from __future__ import annotations

import os
from dataclasses import dataclass

from lmtool.errors import LmtoolError, first_line
from lmtool.model_dir import check_model_dir, check_vocab_fits

KINDS = {
    "ForSequenceClassification": "classification",
    "ForTokenClassification": "token_classification",
}


@dataclass
class Source:
    path: str
    kind: str  # classification | token_classification | causal_lm
    model: object  # a transformers PreTrainedModel
    tokenizer: object


def model_kind(architectures: list[str]) -> str | None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()) | {"LstmForCausalLM"}
    for arch in architectures:
        for suffix, kind in KINDS.items():
            if arch.endswith(suffix):
                return kind
        if arch in causal:
            return "causal_lm"
    return None


def load_source(path: str) -> Source:
    """Exit 2 naming the problem when `path` is no model directory or not a kind export supports."""
    import lmtool.models  # noqa: F401  (registers lmtool's LSTM; quiets transformers' load reports)

    if not os.path.isdir(path):
        raise LmtoolError(f"model directory not found: {path}")
    check_model_dir(path)
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise LmtoolError(f"{path} is not a model directory: {first_line(exc)}") from None
    archs = config.architectures or []
    kind = model_kind(archs)
    if kind is None:
        raise LmtoolError(
            f"{path}: lmtool export takes classifiers, taggers and causal LMs, not architecture "
            f"{', '.join(archs) or 'unknown'}"
        )
    auto = {"classification": AutoModelForSequenceClassification,
            "token_classification": AutoModelForTokenClassification, "causal_lm": AutoModelForCausalLM}[kind]  # fmt: skip
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = auto.from_pretrained(path, dtype="float32")
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        raise LmtoolError(f"cannot load model {path}: {first_line(exc)}") from None
    check_vocab_fits(path, tokenizer, model)
    return Source(path, kind, model.eval(), tokenizer)
