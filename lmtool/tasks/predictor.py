"""A loaded fine-tuned model as prediction sees it, and batched forward passes over it: what the tasks'
prediction decoding (lmtool.tasks.decoding) works on. `lmtool.prediction.model` loads one from a directory."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmtool.positions import PADDING_OFFSET_TYPES, max_positions


@dataclass
class Item:
    """One input to predict on: a text (or a JSON question line for QA) and an optional second text."""

    text: str
    pair: str | None
    origin: str  # for error messages: "argument 2", "reviews.txt:7", "stdin:3"


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
