"""Sliding-window perplexity for causal LMs, token-weighted over the whole corpus.

A window of `window` tokens moves `stride` tokens at a time. Each window scores only the tokens
no earlier window scored, so every token is scored once, with `window - stride` or more tokens of
left context (the first window: whatever precedes the token). A token needs at least one token of
context, so the very first token of a stream is never scored, and with stride = window neither is
the first token of each window (use stride < window to score those too).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from lmtool.data.collate import IGNORE
from lmtool.evaluation.data import EvalData
from lmtool.inference import Loaded


def windows(length: int, window: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(begin, end, first) per window of a stream: tokens [begin, end) go in, tokens [first, end) are targets."""
    scored_to = 0
    for begin in range(0, length, stride):
        end = min(begin + window, length)
        yield begin, end, scored_to
        scored_to = end
        if end == length:
            return


def streams(data: EvalData, *, separate: bool, eos_id: int | None, start_id: int | None) -> list[np.ndarray]:
    """The token streams to score: one for the corpus (documents joined with EOS as in training), or
    one per document, each after a start token (BOS or EOS) so its first token is scored too."""
    if data.processed:
        flat = np.concatenate(data.rows)
        if not separate:
            return [flat]
        docs = np.split(flat, np.flatnonzero(flat == eos_id) + 1) if eos_id is not None else [flat]
    else:
        docs = [np.append(row, eos_id) if eos_id is not None else row for row in data.rows]
        if not separate:
            return [np.concatenate(docs)]
    prefix = np.array([start_id] if start_id is not None else [], dtype=np.int64)
    return [np.concatenate([prefix, d]) for d in docs if len(d)]


def sliding_window_nll(
    loaded: Loaded, seqs: list[np.ndarray], window: int, stride: int, batch_size: int, bar
) -> dict:
    """Loss (mean NLL per scored token), perplexity and scored-token count over all streams."""
    from lmtool.tasks import make_task

    evaluator = make_task("clm", loaded.tokenizer, seed=0).evaluator()
    pad_id = next(
        i for i in (loaded.tokenizer.pad_token_id, loaded.tokenizer.eos_token_id, 0) if i is not None
    )
    pending: list[tuple[np.ndarray, int]] = []

    def flush() -> None:
        evaluator_update(loaded, evaluator, pending, pad_id)
        bar.advance(len(pending))
        pending.clear()

    for seq in seqs:
        for begin, end, first in windows(len(seq), window, stride):
            pending.append((seq[begin:end], first - begin))
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    return evaluator.compute()


def evaluator_update(loaded: Loaded, evaluator, pending: list[tuple[np.ndarray, int]], pad_id: int) -> None:
    """One forward pass over right-padded windows; context-only positions and padding get IGNORE labels."""
    width = max(len(ids) for ids, _ in pending)
    input_ids = torch.full((len(pending), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pending), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(pending), width), dtype=torch.long)
    for row, (ids, context) in enumerate(pending):
        tensor = torch.from_numpy(ids.astype(np.int64))
        input_ids[row, : len(ids)] = tensor
        labels[row, context : len(ids)] = tensor[context:]
        attention[row, : len(ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    batch = {k: v.to(loaded.device) for k, v in batch.items()}
    with loaded.precision.autocast():
        evaluator.update(loaded.model, batch)


def count_windows(seqs: list[np.ndarray], window: int, stride: int) -> int:
    return sum(sum(1 for _ in windows(len(s), window, stride)) for s in seqs)


def bits_per_byte(loss: float, tokens: int, text_bytes: int) -> float | None:
    """Total NLL in bits divided by the text's UTF-8 bytes: comparable across tokenizers."""
    return loss * tokens / math.log(2) / text_bytes if text_bytes else None
