"""Sliding-window perplexity for causal LMs, token-weighted over the whole corpus.

The Hugging Face "perplexity of fixed-length models" recipe: a window of `window` tokens moves
`stride` tokens at a time and scores only the tokens no earlier window scored, so every token is
scored once, with `window - stride` or more tokens of left context (the first window: whatever
precedes the token). A token needs at least one token of context, so the very first token of a
stream is never scored, and with stride = window neither is the first token of each window (use
stride < window to score those too).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

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


def scored_ranges(length: int, window: int, stride: int) -> list[tuple[int, int]]:
    """The token ranges [a, b) of a stream that get scored (a target needs one token before it in its window)."""
    ranges: list[tuple[int, int]] = []
    for begin, end, first in windows(length, window, stride):
        a = max(first, begin + 1)
        if a >= end:
            continue
        if ranges and ranges[-1][1] == a:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((a, end))
    return ranges


def streams(data: EvalData, *, separate: bool, eos_id: int | None, start_id: int | None) -> list[np.ndarray]:
    """The token streams to score.

    Processed blocks are scored as they are, EOS tokens included, as in training. Raw text adds no
    token to the text: a file is one stream; records (JSONL/CSV rows, or files and paragraphs when asked
    for) are joined with EOS between them. `separate` scores each document on its own, after a start
    token (BOS or EOS) that is context only, so its first token is scored too.
    """
    if data.processed:
        flat = np.concatenate(data.rows)
        if not separate:
            return [flat]
        docs = np.split(flat, np.flatnonzero(flat == eos_id) + 1) if eos_id is not None else [flat]
    else:
        docs = list(data.rows)
        if not separate:
            if eos_id is None or len(docs) == 1:
                return [np.concatenate(docs)]
            joined = [part for doc in docs for part in (doc, np.array([eos_id], dtype=np.int64))]
            return [np.concatenate(joined[:-1])]
    prefix = np.array([start_id] if start_id is not None else [], dtype=np.int64)
    return [np.concatenate([prefix, d]) for d in docs if len(d)]


@dataclass
class Totals:
    """Summed NLL (nats) over all scored tokens, and over the scored tokens that are text (not special)."""

    nll: float = 0.0
    tokens: int = 0
    text_nll: float = 0.0


def sliding_window_nll(
    loaded: Loaded, seqs: list[np.ndarray], window: int, stride: int, batch_size: int, bar
) -> Totals:
    """Scores every stream window by window, `batch_size` windows per forward pass."""
    tok = loaded.tokenizer
    pad_id = next(i for i in (tok.pad_token_id, tok.eos_token_id, 0) if i is not None)
    special = torch.tensor(sorted(set(tok.all_special_ids)), dtype=torch.long, device=loaded.device)
    totals = Totals()
    pending: list[tuple[np.ndarray, int]] = []

    def flush() -> None:
        _score(loaded, pending, pad_id, special, totals)
        bar.advance(len(pending))
        pending.clear()

    for seq in seqs:
        for begin, end, first in windows(len(seq), window, stride):
            pending.append((seq[begin:end], first - begin))
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    return totals


@torch.no_grad()
def _score(
    loaded: Loaded, pending: list[tuple[np.ndarray, int]], pad_id: int, special: torch.Tensor, totals: Totals
) -> None:
    """One forward pass over right-padded windows; context-only positions and padding get IGNORE labels.
    Sums go to Python floats (float64) batch by batch: exact enough on every device, MPS included."""
    width = max(len(ids) for ids, _ in pending)
    input_ids = torch.full((len(pending), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pending), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(pending), width), dtype=torch.long)
    for row, (ids, context) in enumerate(pending):
        tensor = torch.from_numpy(ids.astype(np.int64))
        input_ids[row, : len(ids)] = tensor
        labels[row, context : len(ids)] = tensor[context:]
        attention[row, : len(ids)] = 1
    input_ids, labels, attention = (t.to(loaded.device) for t in (input_ids, labels, attention))
    with loaded.precision.autocast():
        logits = loaded.model(input_ids=input_ids, attention_mask=attention).logits
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE)  # position t predicts token t + 1
    nll = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view_as(targets)
    scored = targets != IGNORE
    text = scored & ~torch.isin(targets, special)
    totals.nll += float(nll[scored].sum())
    totals.tokens += int(scored.sum())
    totals.text_nll += float(nll[text].sum())


def count_windows(seqs: list[np.ndarray], window: int, stride: int) -> int:
    return sum(sum(1 for _ in windows(len(s), window, stride)) for s in seqs)


def metrics(totals: Totals, text_bytes: int) -> dict:
    """Loss and perplexity over all scored tokens; bits per byte over the scored text tokens only
    (special tokens have no bytes), so numerator and denominator count the same tokens."""
    loss = totals.nll / max(totals.tokens, 1)
    bpb = totals.text_nll / math.log(2) / text_bytes if text_bytes else None
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": totals.tokens,
            "bits_per_byte": bpb, "bytes": text_bytes}  # fmt: skip
