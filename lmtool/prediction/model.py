"""A fine-tuned classifier, tagger or QA model read from its directory (lmtool.tasks.predictor.Predictor).

The task comes from the saved config: its architecture's head (`...ForSequenceClassification`, ...: the
task registry says whose), `id2label` and `problem_type`, all written by `save_pretrained`.
"""

from __future__ import annotations

import torch
from safetensors import SafetensorError
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

import lmtool.models  # noqa: F401  (its import quiets transformers' load reports)
from lmtool.errors import LmtoolError, first_line
from lmtool.model_dir import check_vocab_fits, saved_config
from lmtool.prediction.onnx_model import is_export_dir, load_onnx_model
from lmtool.runtime import resolve_device
from lmtool.tasks.predictor import Predictor
from lmtool.tasks.registry import spec_for_architectures


def load_predictor(path: str, device: str) -> Predictor:
    """The model at `path` in eval mode on `device`; exit 2 when it is no fine-tuned classifier."""
    onnx = is_export_dir(path)
    config = saved_config(path, whole=not onnx)
    archs = config.architectures or []
    spec = spec_for_architectures(archs)
    if spec is None:
        raise LmtoolError(
            f"{path} is not a fine-tuned classification, token-classification or question-answering model "
            f"(architecture {', '.join(archs) or 'unknown'}): lmtool predict needs one that lmtool finetune saved"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as exc:
        raise LmtoolError(
            f"{path} has no usable tokenizer (save one with the model): {first_line(exc)}"
        ) from None
    if spec.needs_fast_tokenizer and not tokenizer.is_fast:
        raise LmtoolError(
            f"{path}: character offsets need a fast tokenizer (tokenizer.json); this one is slow"
        )
    dev = resolve_device(device, key="--device")
    if onnx:  # an `lmtool export` directory: onnxruntime on the CPU
        model, dev = load_onnx_model(path, config), torch.device("cpu")
    else:
        model = _load_torch(spec.head.auto, path, tokenizer, dev)
    labels = [config.id2label[i] for i in sorted(config.id2label)] if spec.has_labels else []
    problem = {"multi_label_classification": "multi_label", "regression": "regression"}.get(
        config.problem_type or "",
        "regression" if spec.has_problem and config.num_labels == 1 else "single_label",
    )
    return Predictor(model, tokenizer, dev, spec.name, problem, labels)


def _load_torch(auto, path: str, tokenizer: PreTrainedTokenizerBase, dev: torch.device) -> PreTrainedModel:
    try:
        model = auto.from_pretrained(path)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise LmtoolError(f"cannot load model {path}: {first_line(exc)}") from None
    check_vocab_fits(path, tokenizer, model)
    return model.to(dev).eval()
