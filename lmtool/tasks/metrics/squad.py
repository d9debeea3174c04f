"""Exact match and F1 exactly as the official SQuAD evaluation scripts compute them.

v1.1 (`evaluate-v1.1.py`): each prediction scored against every gold answer, the best kept; F1 over
the bag of normalised tokens. v2.0 (`evaluate-v2.0.py`): gold answers that normalise to nothing are
dropped, an unanswerable question's only gold answer is the empty string, F1 is 1 when prediction
and gold are both empty (0 when only one is), and the totals split into HasAns / NoAns. Scores are
percentages, as the scripts print them.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed, articles removed, whitespace collapsed (in the scripts' order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_v1(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_v1(prediction: str, gold: str) -> float:
    predicted, golden = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(predicted) & Counter(golden)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(golden)
    return 2 * precision * recall / (precision + recall)


def f1_v2(prediction: str, gold: str) -> float:
    predicted = normalize_answer(prediction).split() if prediction else []
    golden = normalize_answer(gold).split() if gold else []
    if not predicted or not golden:
        return float(predicted == golden)
    return f1_v1(prediction, gold)


def squad_v1(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """`exact_match` and `f1` (percent) of predictions against their gold answer lists (v1.1)."""
    total = len(predictions)
    exact = sum(max(exact_v1(p, g) for g in gold) for p, gold in zip(predictions, golds, strict=True))
    f1 = sum(max(f1_v1(p, g) for g in gold) for p, gold in zip(predictions, golds, strict=True))
    return {"exact_match": 100.0 * exact / max(total, 1), "f1": 100.0 * f1 / max(total, 1), "total": total}


def squad_v2(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """v2.0: `exact_match`, `f1` and the HasAns_/NoAns_ breakdown (percent); an empty gold list (or
    one whose answers all normalise to nothing) means unanswerable, an empty prediction abstains."""
    scores: dict[str, list[tuple[float, float]]] = {"HasAns": [], "NoAns": []}
    for prediction, gold in zip(predictions, golds, strict=True):
        answers = [g for g in gold if normalize_answer(g)] or [""]
        exact = max(float(normalize_answer(g) == normalize_answer(prediction)) for g in answers)
        f1 = max(f1_v2(prediction, g) for g in answers)
        scores["HasAns" if gold else "NoAns"].append((exact, f1))
    every = scores["HasAns"] + scores["NoAns"]
    metrics = _percent(every, "")
    for kind, pairs in scores.items():
        if pairs:
            metrics.update(_percent(pairs, kind + "_"))
    return metrics


def _percent(pairs: list[tuple[float, float]], prefix: str) -> dict[str, float]:
    total = len(pairs)
    names = ("exact", "f1") if prefix else ("exact_match", "f1")
    return {
        prefix + names[0]: 100.0 * sum(e for e, _ in pairs) / max(total, 1),
        prefix + names[1]: 100.0 * sum(f for _, f in pairs) / max(total, 1),
        prefix + "total": total,
    }
