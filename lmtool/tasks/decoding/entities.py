"""Named entities with character offsets into the input text.

Words are the tokenizer's pre-tokenized words; a word's tag is the argmax at its first sub-token, and
entities are merged from word tags by the conlleval chunk rules. A text longer than max_length is cut
into windows overlapping by `stride` tokens; each word is read from the first window that holds all of
its sub-tokens (as the training data labels it), so no part of a long text goes untagged.
"""

from __future__ import annotations

from collections import Counter

import torch

from lmtool.errors import LmtoolError
from lmtool.tasks.metrics.ner import chunks
from lmtool.tasks.predictor import Item, Predictor, forward
from lmtool.text_spans import grapheme_end


def decode(
    pred: Predictor, items: list[Item], batch_size: int, max_length: int, stride: int | None
) -> list[dict]:
    """`lmtool predict`'s records for a tagger (the task's `decode`)."""
    return extract(pred, items, batch_size, max_length, window_settings(pred, max_length, stride))


def window_settings(pred: Predictor, max_length: int, stride: int | None) -> int:
    """The overlap between windows: `stride`, or 32 tokens (at most half a window)."""
    room = max_length - pred.tokenizer.num_special_tokens_to_add()
    if room < 2:
        raise LmtoolError(f"--max-length {max_length} leaves no room for text after the special tokens")
    overlap = min(32, room // 2) if stride is None else stride
    if not 0 <= overlap < room:
        raise LmtoolError(
            f"--stride must be at least 0 and below {room} (the text tokens of a window), got {overlap}"
        )
    return overlap


def extract(pred: Predictor, items: list[Item], batch_size: int, max_length: int, stride: int) -> list[dict]:
    """One record per item: the text and its entities (type, text, start, end, score)."""
    tok = pred.tokenizer
    for item in items:
        if item.pair is not None:
            raise LmtoolError(f"{item.origin}: a token-classification model takes one text, not a text_pair")
    plans, windows = [], []
    for item in items:
        full = tok(item.text, add_special_tokens=False, return_offsets_mapping=True)
        enc = tok(
            item.text, truncation=True, max_length=max_length, stride=stride, return_overflowing_tokens=True
        )
        first = len(windows)
        for k in range(len(enc["input_ids"])):
            windows.append({"input_ids": enc["input_ids"][k]})
            if "token_type_ids" in enc:
                windows[-1]["token_type_ids"] = enc["token_type_ids"][k]
        plans.append((full, [enc.word_ids(k) for k in range(len(enc["input_ids"]))], first))
    logits = forward(pred, windows, batch_size)
    return [
        {"text": item.text, "entities": _entities(pred, item.text, full, word_ids, logits[first:])}
        for item, (full, word_ids, first) in zip(items, plans, strict=True)
    ]


def _entities(
    pred: Predictor, text: str, full, windows: list[list[int | None]], logits: list[torch.Tensor]
) -> list[dict]:
    spans = _word_spans(text, full.word_ids(), full["offset_mapping"])
    where = _owners(full.word_ids(), windows)
    # Whitespace-only words (byte-level BPE pre-tokenizers make them) are no part of any entity.
    words = [w for w, (start, end) in enumerate(spans) if end > start and w in where]
    tags, scores = [], []
    for word in words:
        window, position = where[word]
        probs = logits[window][position].softmax(-1)
        best = int(probs.argmax())
        tags.append(pred.labels[best])
        scores.append(float(probs[best]))
    out = []
    for kind, first, stop in chunks([_prefixed(tag) for tag in tags]):
        last = stop - 1
        start, end = spans[words[first]][0], spans[words[last]][1]
        score = sum(scores[first : last + 1]) / (last - first + 1)
        out.append(
            {"type": kind, "text": text[start:end], "start": start, "end": end, "score": round(score, 6)}
        )
    return out


def _word_spans(
    text: str, word_ids: list[int | None], offsets: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """(start, end) characters of each word, without surrounding whitespace (byte-level BPE tokens carry it),
    ending after any combining mark or variation selector the tokenizer dropped."""
    count = max((w for w in word_ids if w is not None), default=-1) + 1
    spans = [[len(text), 0] for _ in range(count)]
    for word, (start, end) in zip(word_ids, offsets, strict=True):
        if word is not None:
            spans[word] = [min(spans[word][0], start), max(spans[word][1], end)]
    result = []
    for start, end in spans:
        start, end = min(start, end), end
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        result.append((start, grapheme_end(text, end) if end > start else end))
    return result


def _owners(full_ids: list[int | None], windows: list[list[int | None]]) -> dict[int, tuple[int, int]]:
    """word -> (window, position of its first sub-token there): the first window holding the whole word,
    else (a word longer than a window) the first window holding its first sub-token."""
    total = Counter(w for w in full_ids if w is not None)
    owners: dict[int, tuple[int, int]] = {}
    fallback: dict[int, tuple[int, int]] = {}
    for k, ids in enumerate(windows):
        present = Counter(w for w in ids if w is not None)
        for position, word in enumerate(ids):
            if word is None or word in owners:
                continue
            fallback.setdefault(word, (k, position))
            if present[word] == total[word]:
                owners[word] = (k, position)
    return {**fallback, **owners}


def _prefixed(tag: str) -> str:
    """IO tags without a prefix (`PER`; BILOU's L-/U-) in the B/I/E/S form the chunk rules read."""
    prefix, sep, kind = tag.partition("-")
    if tag == "O" or (sep and prefix in ("B", "I", "E", "S")):
        return tag
    if sep and prefix in ("L", "U"):
        return f"{'E' if prefix == 'L' else 'S'}-{kind}"
    return f"I-{tag}"
