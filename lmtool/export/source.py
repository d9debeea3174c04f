"""The model to export, read from its directory: which kind it is (by its saved architecture), the
PyTorch model in fp32 eval mode on the CPU, its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass

from lmtool.errors import LmtoolError, first_line
from lmtool.model_dir import check_vocab_fits, saved_config


@dataclass
class Source:
    path: str
    kind: str  # the fine-tune task's name (classification, token_classification), or causal_lm
    model: object  # a transformers PreTrainedModel
    tokenizer: object
    token_level: bool  # logits per token (taggers, causal LMs), not per text


def exportable(architectures: list[str]) -> tuple[str, object, bool] | None:
    """(kind, the transformers Auto class, token level) of a saved model export takes: a fine-tuned
    classifier or tagger (its task's head, as the task registry reads it; question answering is not
    exported) or a causal LM; None for anything else."""
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from lmtool.tasks.registry import spec_for_architectures

    spec = spec_for_architectures(architectures)
    if spec is not None and spec.head is not None and not spec.questions:
        return spec.name, spec.head.auto, spec.word_level
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()) | {"LstmForCausalLM"}
    if spec is None and any(arch in causal for arch in architectures):
        return "causal_lm", AutoModelForCausalLM, True
    return None


def load_source(path: str) -> Source:
    """Exit 2 naming the problem when `path` is no model directory or not a kind export supports."""
    from transformers import AutoTokenizer

    import lmtool.models  # noqa: F401  (registers lmtool's LSTM; quiets transformers' load reports)

    config = saved_config(path)
    found = exportable(config.architectures or [])
    if found is None:
        names = ", ".join(config.architectures or []) or "unknown"
        raise LmtoolError(
            f"{path}: lmtool export takes classifiers, taggers and causal LMs, not architecture {names}"
        )
    kind, auto, token_level = found
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = auto.from_pretrained(path, dtype="float32")
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        raise LmtoolError(f"cannot load model {path}: {first_line(exc)}") from None
    check_vocab_fits(path, tokenizer, model)
    return Source(path, kind, model.eval(), tokenizer, token_level)
