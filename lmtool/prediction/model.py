"""A fine-tuned classifier or tagger, read from its directory, and batched forward passes over it.

The task comes from the saved config: its architecture (`...ForSequenceClassification` or
`...ForTokenClassification`), `id2label` and `problem_type`, all written by `save_pretrained`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

import lmtool.models  # noqa: F401  (its import quiets transformers' load reports)
from lmtool.config import ConfigError
from lmtool.errors import LmtoolError
from lmtool.model_dir import check_model_dir, check_vocab_fits
from lmtool.positions import PADDING_OFFSET_TYPES, max_positions
from lmtool.prediction.onnx_model import is_export_dir, load_onnx_model
from lmtool.train.precision import resolve_device

TASKS = {
    "ForSequenceClassification": ("classification", AutoModelForSequenceClassification),
    "ForTokenClassification": ("token_classification", AutoModelForTokenClassification),
    "ForQuestionAnswering": ("qa", AutoModelForQuestionAnswering),
}


@dataclass
class Predictor:
    model: PreTrainedModel  # or an OnnxModel (an `lmtool export` directory), called the same way
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    task: str  # classification | token_classification | qa
    problem: str  # single_label | multi_label | regression (token_classification: single_label)
    labels: list[str]

    def positions(self) -> int | None:
        """The longest input the model takes (RoBERTa-style tables less their offset); None: unbounded."""
        config = self.model.config
        positions = max_positions(config)
        if positions is not None and config.model_type in PADDING_OFFSET_TYPES:
            positions -= (config.pad_token_id or 0) + 1
        return positions

    def default_max_length(self) -> int:
        """The tokenizer's limit, within the model's positions."""
        positions = self.positions()
        limit = self.tokenizer.model_max_length
        limit = limit if isinstance(limit, int) and limit < 1_000_000 else None
        return min([v for v in (positions, limit) if v] or [512])


def load_predictor(path: str, device: str) -> Predictor:
    """The model at `path` in eval mode on `device`; exit 2 when it is no fine-tuned classifier."""
    if not os.path.isdir(path):
        raise LmtoolError(f"model directory not found: {path}")
    onnx = is_export_dir(path)
    if not onnx:
        check_model_dir(path)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise LmtoolError(f"{path} is not a model directory: {_first_line(exc)}") from None
    archs = config.architectures or []
    found = [TASKS[s] for s in TASKS for a in archs if a.endswith(s)]
    if not found:
        raise LmtoolError(
            f"{path} is not a fine-tuned classification, token-classification or question-answering model "
            f"(architecture {', '.join(archs) or 'unknown'}): lmtool predict needs one that lmtool finetune saved"
        )
    task, auto = found[0]
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as exc:
        raise LmtoolError(
            f"{path} has no usable tokenizer (save one with the model): {_first_line(exc)}"
        ) from None
    if task in ("token_classification", "qa") and not tokenizer.is_fast:
        raise LmtoolError(
            f"{path}: character offsets need a fast tokenizer (tokenizer.json); this one is slow"
        )
    try:
        dev = resolve_device(device)
    except ConfigError as exc:
        raise LmtoolError(str(exc).replace("train.device", "--device", 1)) from None
    if onnx:  # an `lmtool export` directory: onnxruntime on the CPU
        model, dev = load_onnx_model(path, config), torch.device("cpu")
    else:
        model = _load_torch(auto, path, tokenizer, dev)
    labels = [] if task == "qa" else [config.id2label[i] for i in sorted(config.id2label)]
    problem = {"multi_label_classification": "multi_label", "regression": "regression"}.get(
        config.problem_type or "",
        "regression" if task == "classification" and config.num_labels == 1 else "single_label",
    )
    return Predictor(model, tokenizer, dev, task, problem, labels)


def _load_torch(auto, path: str, tokenizer: PreTrainedTokenizerBase, dev: torch.device) -> PreTrainedModel:
    try:
        model = auto.from_pretrained(path)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise LmtoolError(f"cannot load model {path}: {_first_line(exc)}") from None
    check_vocab_fits(path, tokenizer, model)
    return model.to(dev).eval()


def forward(pred: Predictor, encodings: list[dict[str, list[int]]], batch_size: int) -> list[torch.Tensor]:
    """fp32 logits per encoding, in input order: batches of similar length (longest first), each padded
    to its longest row only. Token models give one row of logits per token, without the padding."""
    order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i]["input_ids"]))
    pad_id = pred.tokenizer.pad_token_id if pred.tokenizer.pad_token_id is not None else 0
    out: list[torch.Tensor | None] = [None] * len(encodings)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encodings[i]["input_ids"]) for i in rows)
        batch: dict[str, torch.Tensor] = {}
        for key, fill in (("input_ids", pad_id), ("token_type_ids", 0)):
            if key in encodings[rows[0]]:
                batch[key] = torch.tensor([_pad(encodings[i][key], width, fill) for i in rows])
        batch["attention_mask"] = torch.tensor(
            [_pad([1] * len(encodings[i]["input_ids"]), width, 0) for i in rows]
        )
        with torch.inference_mode():
            logits = pred.model(**{k: v.to(pred.device) for k, v in batch.items()}).logits.float().cpu()
        for row, index in enumerate(rows):
            out[index] = (
                logits[row, : len(encodings[index]["input_ids"])] if logits.dim() == 3 else logits[row]
            )
    return out  # type: ignore[return-value]


def _pad(values: list[int], width: int, fill: int) -> list[int]:
    return values + [fill] * (width - len(values))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
