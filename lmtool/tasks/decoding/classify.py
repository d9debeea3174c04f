"""Sequence classification: a label and the probability of every label per text (or pair of texts)."""

from __future__ import annotations

from lmtool import console
from lmtool.tasks.predictor import Item, Predictor, forward


def decode(
    pred: Predictor, items: list[Item], batch_size: int, max_length: int, stride: int | None
) -> list[dict]:
    """`lmtool predict`'s records for a classifier (the task's `decode`; one forward per text: no stride)."""
    return classify(pred, items, batch_size, max_length)


def classify(pred: Predictor, items: list[Item], batch_size: int, max_length: int) -> list[dict]:
    """One record per item: `label`, `score`, `scores` (softmax); multi-label: `labels` above 0.5 and
    `scores` (sigmoid per label); regression: `score`. Texts longer than max_length are truncated."""
    tok = pred.tokenizer
    encodings, truncated = [], 0
    for item in items:
        enc = dict(tok(item.text, item.pair))
        if len(enc["input_ids"]) > max_length:
            truncated += 1
            enc = dict(tok(item.text, item.pair, truncation=True, max_length=max_length))
        encodings.append({k: v for k, v in enc.items() if k in ("input_ids", "token_type_ids")})
    if truncated:
        console.info(f"{truncated} of {len(items)} inputs truncated to {max_length} tokens (--max-length)")
    records = []
    for item, logits in zip(items, forward(pred, encodings, batch_size), strict=True):
        record: dict = {"text": item.text, **({"text_pair": item.pair} if item.pair is not None else {})}
        if pred.problem == "regression":
            record["score"] = round(logits[0].item(), 6)
        elif pred.problem == "multi_label":
            probs = logits.sigmoid().tolist()
            record["labels"] = [label for label, p in zip(pred.labels, probs, strict=True) if p > 0.5]
            record["scores"] = {label: round(p, 6) for label, p in zip(pred.labels, probs, strict=True)}
        else:
            probs = logits.softmax(-1).tolist()
            best = max(range(len(probs)), key=probs.__getitem__)
            record["label"], record["score"] = pred.labels[best], round(probs[best], 6)
            record["scores"] = {label: round(p, 6) for label, p in zip(pred.labels, probs, strict=True)}
        records.append(record)
    return records
