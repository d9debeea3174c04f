"""Classification and regression metrics as pure functions of gold and predicted values.

Scores are fractions. An undefined precision, recall or F1 (nothing predicted, nothing gold) is 0,
as scikit-learn's zero_division=0 gives. Macro averages run over the labels that occur in the gold
or the predicted values (scikit-learn's default for single-label input), so a label absent from a
small validation split does not pull the average down. A correlation with a constant side is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _per_class(labels: Sequence[str], tp: list[int], fp: list[int], fn: list[int]) -> tuple[dict, float]:
    """({label: {precision, recall, f1, support}}, macro F1 over the labels seen in gold or predictions)."""
    per_class = {
        label: {**_prf(tp[i], fp[i], fn[i]), "support": tp[i] + fn[i]} for i, label in enumerate(labels)
    }
    seen = [per_class[label]["f1"] for i, label in enumerate(labels) if tp[i] + fp[i] + fn[i]]
    return per_class, sum(seen) / len(seen) if seen else 0.0


def single_label_metrics(gold: Sequence[int], predicted: Sequence[int], labels: Sequence[str]) -> dict:
    """accuracy, f1_macro, per_class and confusion_matrix (rows = gold label id, columns = predicted)."""
    k = len(labels)
    confusion = [[0] * k for _ in range(k)]
    for g, p in zip(gold, predicted, strict=True):
        confusion[g][p] += 1
    tp = [confusion[i][i] for i in range(k)]
    fp = [sum(confusion[r][i] for r in range(k)) - tp[i] for i in range(k)]
    fn = [sum(confusion[i]) - tp[i] for i in range(k)]
    per_class, macro = _per_class(labels, tp, fp, fn)
    total = len(gold)
    return {
        "accuracy": sum(tp) / total if total else 0.0,
        "f1_macro": macro,
        "per_class": per_class,
        "confusion_matrix": confusion,
    }


def multi_label_metrics(
    gold: Sequence[Sequence[int]], predicted: Sequence[Sequence[int]], labels: Sequence[str]
) -> dict:
    """f1_micro, f1_macro, exact_match (all labels of an example right) and per_class, from 0/1 rows."""
    k = len(labels)
    tp, fp, fn = [0] * k, [0] * k, [0] * k
    exact = 0
    for g_row, p_row in zip(gold, predicted, strict=True):
        exact += list(g_row) == list(p_row)
        for i, (g, p) in enumerate(zip(g_row, p_row, strict=True)):
            tp[i] += bool(g and p)
            fp[i] += bool(p and not g)
            fn[i] += bool(g and not p)
    per_class, macro = _per_class(labels, tp, fp, fn)
    return {
        "f1_micro": _prf(sum(tp), sum(fp), sum(fn))["f1"],
        "f1_macro": macro,
        "exact_match": exact / len(gold) if len(gold) else 0.0,
        "per_class": per_class,
    }


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span (as Spearman needs)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for position in range(i, j + 1):
            ranks[order[position]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    if n == 0:
        return 0.0
    mean_x, mean_y = sum(x) / n, sum(y) / n
    cov = sum((a - mean_x) * (b - mean_y) for a, b in zip(x, y, strict=True))
    var_x = sum((a - mean_x) ** 2 for a in x)
    var_y = sum((b - mean_y) ** 2 for b in y)
    return cov / math.sqrt(var_x * var_y) if var_x > 0 and var_y > 0 else 0.0


def regression_metrics(gold: Sequence[float], predicted: Sequence[float]) -> dict:
    """mse, pearson and spearman (Pearson of average ranks)."""
    n = len(gold)
    mse = sum((g - p) ** 2 for g, p in zip(gold, predicted, strict=True)) / n if n else 0.0
    return {
        "mse": mse,
        "pearson": pearson(gold, predicted),
        "spearman": pearson(average_ranks(gold), average_ranks(predicted)),
    }
