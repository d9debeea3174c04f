"""Window logits → one answer per question, as Hugging Face's run_qa (`postprocess_qa_predictions`)
does it: the `n_best` start and end positions of every window, pairs kept only when both ends lie in
the context, end >= start and the span is at most `max_answer_length` tokens, the best score
(start logit + end logit) over all windows; for SQuAD v2 the lowest null score (CLS start + end) over
the windows against the best span: no answer when null - best > `null_score_diff_threshold`.
The evaluator and `lmtool predict` both call `best_answer`, so they cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lmtool.text_spans import grapheme_end

NO_OFFSET = (-1, -1)  # offset of a token outside the context (question, special tokens, padding)


@dataclass
class Window:
    """One window's fp32 start/end logits and, per token, its (start, end) characters in the context."""

    start_logits: torch.Tensor
    end_logits: torch.Tensor
    offsets: Sequence[Sequence[int]]


@dataclass
class Answer:
    text: str
    start: int  # characters into the context; -1 for no answer
    end: int
    score: float  # softmax probability among the n-best candidates (and the null one for v2)


def best_answer(
    windows: Sequence[Window],
    context: str,
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
    version_2: bool = False,
    null_threshold: float = 0.0,
) -> Answer:
    """The predicted answer to one question from all of its windows."""
    candidates: list[tuple[float, int, int]] = []  # (score, start char, end char)
    null_score = math.inf
    for window in windows:
        starts, ends = window.start_logits.tolist(), window.end_logits.tolist()
        null_score = min(null_score, starts[0] + ends[0])
        size = min(len(starts), len(window.offsets))
        top_starts = _top(starts[:size], n_best)
        top_ends = _top(ends[:size], n_best)
        for s in top_starts:
            for e in top_ends:
                if tuple(window.offsets[s]) == NO_OFFSET or tuple(window.offsets[e]) == NO_OFFSET:
                    continue
                if e < s or e - s + 1 > max_answer_length:
                    continue
                candidates.append((starts[s] + ends[e], window.offsets[s][0], window.offsets[e][1]))
    ranked = sorted(candidates, key=lambda c: -c[0])[:n_best]
    scores = [c[0] for c in ranked] + ([null_score] if version_2 and windows else [])
    if not ranked:
        return Answer("", -1, -1, 1.0 if version_2 and windows else 0.0)
    top = max(scores)
    total = sum(math.exp(s - top) for s in scores)
    best_score, start, end = ranked[0]
    if version_2 and null_score - best_score > null_threshold:
        return Answer("", -1, -1, math.exp(null_score - top) / total)
    end = grapheme_end(context, end)  # offsets may end before a combining mark the tokenizer dropped
    return Answer(context[start:end], start, end, math.exp(best_score - top) / total)


def _top(values: list[float], n: int) -> list[int]:
    """Indices of the n largest values, largest first (ties: the later index first, like numpy's argsort)."""
    return sorted(range(len(values)), key=lambda i: (values[i], i), reverse=True)[:n]
