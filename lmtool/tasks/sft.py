"""Causal-LM supervised fine-tuning: next-token cross-entropy on the labeled (response) tokens only.

Rows carry `labels` (-100 on prompt tokens); a packed row also carries `position_ids`, restarting at 0
for each example, from which `loss` builds a 4D block-diagonal causal mask in the form the model's
attention implementation takes (boolean for SDPA/flex, additive for eager), so no example sees
another. The count the engine weights micro-batches by is the number of response tokens scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmtool.data.collate import IGNORE
from lmtool.data.sft_build import build_sft
from lmtool.tasks.base import TokenLossEvaluator
from lmtool.tasks.clm import causal_nll
from lmtool.tasks.padding import pad_inputs, pad_rows
from lmtool.tasks.spec import TaskSpec


def block_causal_mask(position_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, 1, L, L) boolean: query i sees key j when j <= i in the same example (an example
    starts where the position is 0). Padding forms its own block, so no query row is empty."""
    starts = (position_ids == 0) | (attention_mask == 0)
    starts[:, 1:] &= ~((attention_mask[:, 1:] == 0) & (attention_mask[:, :-1] == 0))
    segment = starts.long().cumsum(dim=1)
    same = segment[:, :, None] == segment[:, None, :]
    length = position_ids.size(1)
    causal = torch.ones(length, length, dtype=torch.bool, device=position_ids.device).tril()
    return (same & causal)[:, None]


def model_mask(model: torch.nn.Module, mask: torch.Tensor) -> torch.Tensor:
    """The boolean mask as the model's attention takes a prepared 4D mask."""
    config = getattr(getattr(model, "module", model), "config", None)
    if getattr(config, "_attn_implementation", "eager") in ("sdpa", "flex_attention"):
        return mask
    dtype = next(model.parameters()).dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def sft_inputs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's inputs for a padded or packed batch."""
    if "position_ids" not in batch:
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    mask = block_causal_mask(batch["position_ids"], batch["attention_mask"])
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": model_mask(model, mask),
        "position_ids": batch["position_ids"],
    }


class SftTask:
    name = "sft"

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = None):
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0
        self.pad_to_multiple_of = pad_to_multiple_of
        self.vocab = len(tokenizer)
        self.fused_head = False  # train.fused_loss, set by the recipe once the model is known

    def collate(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch, length = pad_inputs(examples, self.pad_id, self.pad_to_multiple_of)
        batch["labels"] = pad_rows([ex["labels"] for ex in examples], IGNORE, length)
        if "position_ids" in examples[0]:
            batch["position_ids"] = pad_rows([ex["position_ids"] for ex in examples], 0, length)
        return batch

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean cross-entropy over the response tokens, number of response tokens)."""
        nll, count = causal_nll(model, sft_inputs(model, batch), batch["labels"], self.fused_head, self.vocab)
        return nll / count.clamp(min=1), count

    def evaluator(self) -> TokenLossEvaluator:
        """Loss and perplexity over the response tokens of the split."""

        def stats(model, batch):
            nll, count = causal_nll(model, sft_inputs(model, batch), batch["labels"], False, self.vocab)
            return nll, count, 0

        return TokenLossEvaluator(stats)


def _make_task(manifest: dict, tokenizer, cfg, multiple: int | None, processed) -> SftTask:
    return SftTask(tokenizer, multiple)


def _rows(model: torch.nn.Module, ft, train, validation):
    """Packed into max_length rows when finetune.sft.packing asks and the model can isolate them."""
    from lmtool.finetune.causal import sft_rows

    return sft_rows(model, ft.sft.packing, ft.max_length, train, validation)


SPEC = TaskSpec(
    name="sft",
    head=None,  # the model's own LM head: nothing new
    build_data=build_sft,
    make_task=_make_task,
    outputs=lambda problem, labels: None,
    is_causal=True,
    has_labels=False,
    prepare_rows=_rows,
)
