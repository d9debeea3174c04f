"""Masked language modelling: predict the masked tokens (loss on masked positions only)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lmtool.config import MLMConfig
from lmtool.data.collate import IGNORE, Masker, continuation_table, pad_batch
from lmtool.errors import LmtoolError
from lmtool.tasks.base import TokenLossEvaluator, model_inputs
from lmtool.tasks.clm import real_vocab


def masked_stats(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed NLL (fp32), number of correct argmax predictions, and number of masked positions."""
    selected = labels != IGNORE
    picked = logits[selected].float()
    targets = labels[selected]
    nll = F.cross_entropy(picked, targets, reduction="sum")
    correct = (picked.argmax(dim=-1) == targets).sum()
    return nll, correct, selected.sum()


class MaskedLMTask:
    name = "mlm"

    def __init__(self, tokenizer, *, seed: int, cfg: MLMConfig):
        if tokenizer.mask_token_id is None:
            raise LmtoolError(
                "the tokenizer has no mask token, which the mlm objective needs (train a wordpiece tokenizer)"
            )
        self.seed = seed
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        vocab = self.vocab = len(tokenizer)
        continuation = continuation_table(tokenizer, vocab) if cfg.whole_word else None
        self.masker = Masker(
            cfg,
            mask_id=tokenizer.mask_token_id,
            vocab_size=vocab,
            special_ids=tokenizer.all_special_ids,
            continuation=continuation,
        )

    def collate(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = pad_batch(examples, self.pad_id)
        sample_ids = [ex["sample_id"] for ex in examples]
        batch["input_ids"], batch["labels"] = self.masker(
            batch["input_ids"], batch.get("attention_mask"), self.seed, sample_ids
        )
        return batch

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, labels = real_vocab(model(**model_inputs(batch)).logits, self.vocab), batch["labels"]
        if torch.compiler.is_compiling():
            # Over every position with the others ignored: no data-dependent shape (which would split the
            # graph and read the mask's count back from the GPU), and inductor fuses it with the logits.
            nll = F.cross_entropy(
                logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum"
            )
            count = (labels != IGNORE).sum()
        else:  # eager: the masked rows only, an fp32 copy of 15% of the logits instead of all of them
            nll, _, count = masked_stats(logits, labels)
        return nll / count.clamp(min=1), count

    def evaluator(self) -> TokenLossEvaluator:
        def stats(model, batch):
            logits = real_vocab(model(**model_inputs(batch)).logits, self.vocab)
            nll, correct, count = masked_stats(logits, batch["labels"])
            return nll, count, correct

        return TokenLossEvaluator(stats, with_accuracy=True)
