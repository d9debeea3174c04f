"""Causal language modelling: predict each next token."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lmtool.data.collate import IGNORE, pad_batch
from lmtool.tasks.base import TokenLossEvaluator, model_inputs
from lmtool.tasks.linear_ce import linear_cross_entropy


def next_token_labels(labels: torch.Tensor) -> torch.Tensor:
    """Position t predicts labels[t+1]; the last position gets IGNORE. The labels are shifted, not the logits:
    slicing the full-vocabulary logits would copy them, and its backward would fill and copy a gradient of
    the same size."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE)


def token_nll(
    logits: torch.Tensor, labels: torch.Tensor, vocab: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL in fp32, and the number of scored tokens; over the first `vocab` logits (the
    tokenizer's: the rows a model's vocabulary is padded with for the matmuls take no part)."""
    logits = real_vocab(logits, vocab)
    shifted = next_token_labels(labels)
    nll = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), shifted.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return nll, (shifted != IGNORE).sum()


def real_vocab(logits: torch.Tensor, vocab: int | None) -> torch.Tensor:
    """The logits of the tokenizer's `vocab` tokens (a view): padded rows left out."""
    return logits if vocab is None or vocab >= logits.size(-1) else logits[..., :vocab]


def causal_nll(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    fused_head: bool,
    vocab: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """token_nll of the model on `inputs`; with `fused_head` (train.fused_loss, see linear_ce.head_weight)
    from the hidden states and the head's weight, never forming the logits."""
    if not fused_head:
        return token_nll(model(**inputs).logits, labels, vocab)
    hidden = model.base_model(**inputs)[0]
    shifted = next_token_labels(labels)
    weight = model.get_output_embeddings().weight
    return linear_cross_entropy(hidden, weight[:vocab], shifted), (shifted != IGNORE).sum()


class CausalLMTask:
    name = "clm"

    def __init__(self, tokenizer):
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0
        self.vocab = len(tokenizer)
        self.fused_head = False  # train.fused_loss, set by the recipe once the model is known

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
        nll, count = causal_nll(model, model_inputs(batch), batch["labels"], self.fused_head, self.vocab)
        return nll / count.clamp(min=1), count

    def evaluator(self) -> TokenLossEvaluator:
        def stats(model, batch):
            nll, count = token_nll(model(**model_inputs(batch)).logits, batch["labels"], self.vocab)
            return nll, count, 0

        return TokenLossEvaluator(stats)
