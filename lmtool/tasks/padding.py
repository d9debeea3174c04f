"""Dynamic padding for labeled batches: every row padded to the batch's longest, optionally rounded
up to a multiple (tensor cores want multiples of 8), with an attention mask always present."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def padded_length(longest: int, multiple_of: int | None) -> int:
    if not multiple_of:
        return longest
    return -(-longest // multiple_of) * multiple_of


def pad_rows(rows: Sequence[Sequence[int]], value: int, length: int) -> torch.Tensor:
    """Rows of ints right-padded with `value` to `length` columns."""
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def pad_inputs(examples: Sequence[dict], pad_id: int, multiple_of: int | None) -> tuple[dict, int]:
    """input_ids, attention_mask and (when the rows have them) token_type_ids, and the padded length."""
    ids = [ex["input_ids"] for ex in examples]
    length = padded_length(max(len(r) for r in ids), multiple_of)
    batch = {
        "input_ids": pad_rows(ids, pad_id, length),
        "attention_mask": pad_rows([[1] * len(r) for r in ids], 0, length),
    }
    if "token_type_ids" in examples[0]:
        batch["token_type_ids"] = pad_rows([ex["token_type_ids"] for ex in examples], 0, length)
    return batch, length
