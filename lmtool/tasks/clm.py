"""Causal language modelling: predict each next token."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lmtool.data.collate import IGNORE, pad_batch
from lmtool.tasks.base import TokenLossEvaluator, model_inputs


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL (position t predicts labels[t+1]) in fp32, and the number of scored tokens.

    The labels are shifted (the last position gets IGNORE), not the logits: slicing the full-vocabulary
    logits would copy them, and its backward would fill and copy a gradient of the same size.
    """
    shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
    nll = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), shifted.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return nll, (shifted != IGNORE).sum()


class CausalLMTask:
    name = "clm"

    def __init__(self, tokenizer):
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0

    def collate(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = pad_batch(examples, self.pad_id)
        labels = batch["input_ids"].clone()
        if "attention_mask" in batch:
            labels[batch["attention_mask"] == 0] = IGNORE
        batch["labels"] = labels
        return batch

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(**model_inputs(batch)).logits
        nll, count = token_nll(logits, batch["labels"])
        return nll / count.clamp(min=1), count

    def evaluator(self) -> TokenLossEvaluator:
        def stats(model, batch):
            nll, count = token_nll(model(**model_inputs(batch)).logits, batch["labels"])
            return nll, count, 0

        return TokenLossEvaluator(stats)
