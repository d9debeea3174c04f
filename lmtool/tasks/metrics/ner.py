"""Entity-level precision, recall and F1 exactly as CoNLL's conlleval.pl scores them.

Chunk boundaries follow conlleval's startOfChunk/endOfChunk rules (the version that also knows the
S- tag of BIOES): one set of rules reads IOB1, IOB2 and BIOES alike. An I- after O or after another
type starts a chunk; a predicted chunk counts only if it starts and ends where the gold one does and
has its type. A tag is split at its FIRST hyphen (B-geo-loc is type geo-loc); a tag without a
hyphen is a chunk tag with no type ("O" is outside); for such malformed tags (which the task refuses)
a new chunk start or the sentence end closes an open chunk. Precision with no predicted chunks (recall
with no gold ones) is 0, as conlleval prints it; scores are fractions, not percentages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

OUTSIDE = "O"
SCHEMES = {"IOB1": {"B", "I"}, "IOB2": {"B", "I"}, "BIOES": {"B", "I", "E", "S"}}


def split_tag(tag: str) -> tuple[str, str]:
    """("B", "PER") for "B-PER"; ("O", "") for "O"."""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """Did a chunk end between the previous word and this one (conlleval's endOfChunk)?"""
    if prev_tag in ("E", "S"):
        end = tag in ("B", "I", "E", "S", OUTSIDE)
    else:
        end = prev_tag in ("B", "I") and tag in ("B", "S", OUTSIDE)
    if prev_tag not in (OUTSIDE, ".") and prev_type != type_:
        end = True
    return end or prev_tag in ("[", "]")


def start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """Did a chunk start at this word (conlleval's startOfChunk)?"""
    start = tag in ("B", "S") and prev_tag in ("B", "I", OUTSIDE, "E", "S")
    start = start or (tag in ("I", "E") and prev_tag in (OUTSIDE, "E", "S"))
    if tag not in (OUTSIDE, ".") and prev_type != type_:
        start = True
    return start or tag in ("[", "]")


def chunks(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The chunks of one sentence as (type, first word, last word + 1), by the same rules as the
    metric (so predictions can be turned into entity spans consistently)."""
    found: list[tuple[str, int, int]] = []
    start, start_type = None, ""
    prev_tag, prev_type = OUTSIDE, ""
    for i, label in enumerate(tags):
        tag, kind = split_tag(label)
        begins = start_of_chunk(prev_tag, tag, prev_type, kind)
        if start is not None and (begins or end_of_chunk(prev_tag, tag, prev_type, kind)):
            found.append((start_type, start, i))
            start = None
        if begins:
            start, start_type = i, kind
        prev_tag, prev_type = tag, kind
    if start is not None:  # a sentence end closes every chunk
        found.append((start_type, start, len(tags)))
    return found


def _prf(correct: int, guessed: int, gold: int) -> dict[str, float]:
    precision = correct / guessed if guessed else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def ner_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """conlleval over sentences of word tags: overall precision/recall/f1, word accuracy, and
    per_type {type: {precision, recall, f1, support (gold chunks), predicted}}."""
    correct_chunks: Counter[str] = Counter()
    gold_chunks: Counter[str] = Counter()
    guessed_chunks: Counter[str] = Counter()
    correct_words = words = 0
    for gold_tags, guessed_tags in zip(gold, predicted, strict=True):
        if len(gold_tags) != len(guessed_tags):
            raise ValueError(f"a sentence has {len(gold_tags)} gold tags but {len(guessed_tags)} predicted")
        words += len(gold_tags)
        correct_words += sum(g == p for g, p in zip(gold_tags, guessed_tags, strict=True))
        gold_spans, guessed_spans = chunks(gold_tags), chunks(guessed_tags)
        gold_chunks.update(kind for kind, _, _ in gold_spans)
        guessed_chunks.update(kind for kind, _, _ in guessed_spans)
        correct_chunks.update(kind for kind, _, _ in set(gold_spans) & set(guessed_spans))
    overall = _prf(sum(correct_chunks.values()), sum(guessed_chunks.values()), sum(gold_chunks.values()))
    per_type = {
        kind: {
            **_prf(correct_chunks[kind], guessed_chunks[kind], gold_chunks[kind]),
            "support": gold_chunks[kind],
            "predicted": guessed_chunks[kind],
        }  # fmt: skip
        for kind in sorted(set(gold_chunks) | set(guessed_chunks))
        if kind  # conlleval leaves typeless chunks out of the per-type lines
    }
    return {**overall, "accuracy": correct_words / words if words else 0.0, "per_type": per_type}


def infer_scheme(labels: Sequence[str]) -> str:
    """BIOES when any label has an E- or S- prefix, else IOB2 (IOB1 is scored identically)."""
    return "BIOES" if any(split_tag(label)[0] in ("E", "S") for label in labels) else "IOB2"


def scheme_problem(labels: Sequence[str], scheme: str) -> str | None:
    """Why `labels` cannot be read as `scheme` (auto: any of them), or None when they can."""
    allowed = SCHEMES["BIOES"] if scheme == "auto" else SCHEMES[scheme]
    for label in labels:
        prefix, kind = split_tag(label)
        if label == OUTSIDE:
            continue
        if not kind or prefix not in allowed:
            return f"label {label!r} is not O or {'/'.join(sorted(allowed))}-TYPE"
    return None
