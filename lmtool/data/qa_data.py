"""Extractive QA data: SQuAD v1.1/v2.0 JSON or rows (JSON lines, CSV, parquet, hub datasets) with
question, context and answers {text: [...], answer_start: [...]} → windows of token ids with the
answer's token span, and the questions themselves for the evaluator.

Question first, context second, truncated "only_second" into `max_length` windows sharing
`doc_stride` context tokens (a fast tokenizer's overflowing tokens and offset mapping, as HF run_qa
does). A window's labels are the first answer's first and last tokens when the window holds the whole
answer, else the CLS position 0 (an unanswerable question: 0 in every window). Evaluated splits keep,
per window, `example_id` and the character offsets of its context tokens ((-1, -1) elsewhere),
and `<split>_examples/` keeps id, question, context and gold answer texts for SQuAD scoring.
An answer whose `answer_start` does not point at its text is skipped and counted
(`qa.on_bad_answer: skip`) or stops preprocessing (`fail`); a question left with no answer is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lmtool.config import FinetuneConfig
from lmtool.data import sources as src
from lmtool.data.decode import Decoded, text_chunks
from lmtool.data.labeled_rows import _rows
from lmtool.errors import LmtoolError

BATCH = 1000
NO_OFFSET = [-1, -1]


@dataclass
class Question:
    where: str
    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]  # (text, start character); empty: unanswerable


@dataclass
class Tally:
    """What reading dropped, for the manifest."""

    bad_answers: int = 0
    dropped_questions: int = 0
    seen: list[str] = field(default_factory=list)


def read_questions(
    source: src.Source, cfg: FinetuneConfig, encoding_errors: str, cache_dir: Path, tally: Tally
) -> Iterator[Question]:
    """The questions of one source with their answers checked against their contexts."""
    for raw in _raw_questions(source, cfg, encoding_errors, cache_dir):
        good = []
        for n, (text, start) in enumerate(raw.answers):
            if raw.context[start : start + len(text)] == text and text:
                good.append((text, start))
                continue
            problem = (
                f"{raw.where}.answers[{n}]: answer_start {start} does not point at its text {text!r} "
                f"(the context holds {raw.context[start : start + len(text)]!r} there)"
            )
            if cfg.qa.on_bad_answer == "fail":
                raise LmtoolError(problem + " - fix it or set finetune.qa.on_bad_answer: skip")
            tally.bad_answers += 1
            if len(tally.seen) < 3:
                tally.seen.append(problem)
        if raw.answers and not good:
            tally.dropped_questions += 1
            continue
        if not good and not cfg.qa.version_2:
            raise LmtoolError(
                f"{raw.where} has no answer: set finetune.qa.version_2: true for unanswerable questions (SQuAD v2.0)"
            )
        raw.answers = good
        yield raw


def _raw_questions(
    source: src.Source, cfg: FinetuneConfig, encoding_errors: str, cache_dir: Path
) -> Iterator[Question]:
    if source.config.path is not None and source.format == "json":
        rest = []
        for path in source.files:
            document = _json_document(path, source.key, source.config.encoding, encoding_errors)
            if isinstance(document, dict) and "data" in document:
                yield from _squad(document, f"{source.key}: {path}")
            elif isinstance(document, dict) and cfg.qa.question_field not in document:
                keys = ", ".join(map(str, document)) or "(none)"
                raise LmtoolError(
                    f"{source.key}: {path}: the top-level 'data' key is missing (SQuAD JSON is "
                    f"{{data: [{{paragraphs: [...]}}]}}; keys here: {keys}); or give JSON lines with "
                    f"'{cfg.qa.question_field}' in each row"
                )
            else:
                rest.append(path)
        if not rest:
            return
        source = src.Source(source.key, source.config, rest, source.format)
    for where, row in _rows(source, encoding_errors, cache_dir):
        yield _row_question(row, cfg, where)


def _json_document(path: Path, key: str, encoding: str | None, encoding_errors: str) -> object:
    """The whole file as one JSON value, or None when it is JSON lines (or an array of rows)."""
    text = "".join(text_chunks(path, key, encoding, encoding_errors, Decoded(path)))
    if not text.lstrip().startswith("{"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None  # JSON lines: read row by row (which names a bad line)


def _squad(document: dict, origin: str) -> Iterator[Question]:
    """SQuAD's nesting: data[].paragraphs[].qas[] with answers[] (and is_impossible in v2.0)."""
    articles = _list(document, "data", origin)
    for i, article in enumerate(articles):
        at = f"data[{i}]"
        for j, paragraph in enumerate(_list(_object(article, origin, at), "paragraphs", origin, at)):
            pat = f"{at}.paragraphs[{j}]"
            paragraph = _object(paragraph, origin, pat)
            context = _text(paragraph, "context", origin, pat)
            for k, qa in enumerate(_list(paragraph, "qas", origin, pat)):
                qat = f"{pat}.qas[{k}]"
                qa = _object(qa, origin, qat)
                question = _text(qa, "question", origin, qat)
                impossible = qa.get("is_impossible") is True
                answers = [] if impossible and "answers" not in qa else _list(qa, "answers", origin, qat)
                pairs = []
                for m, answer in enumerate([] if impossible else answers):
                    aat = f"{qat}.answers[{m}]"
                    answer = _object(answer, origin, aat)
                    pairs.append(
                        (
                            _string(answer, "text", origin, aat),
                            _start(answer.get("answer_start"), origin, aat),
                        )
                    )
                qid = qa.get("id")
                yield Question(
                    f"{origin}: {qat}", str(qid) if qid is not None else qat, question, context, pairs
                )


def _row_question(row: dict, cfg: FinetuneConfig, where: str) -> Question:
    qa = cfg.qa
    question = _text(row, qa.question_field, where, "", "finetune.qa.question_field")
    context = _text(row, qa.context_field, where, "", "finetune.qa.context_field")
    answers = row.get(qa.answers_field)
    name = qa.answers_field
    if not isinstance(answers, dict):
        raise LmtoolError(
            f"{where}: {name} {'missing' if answers is None else 'is not an object'} "
            f"(want {{text: [...], answer_start: [...]}}; finetune.qa.answers_field)"
        )
    texts, starts = answers.get("text"), answers.get("answer_start")
    for part, value in (("text", texts), ("answer_start", starts)):
        if not isinstance(value, list):
            raise LmtoolError(f"{where}: {name}.{part} {'missing' if value is None else 'is not a list'}")
    if len(texts) != len(starts):
        raise LmtoolError(f"{where}: {name} has {len(texts)} texts but {len(starts)} answer_start values")
    pairs = []
    for m, (text, start) in enumerate(zip(texts, starts, strict=True)):
        if not isinstance(text, str):
            raise LmtoolError(f"{where}: {name}.text[{m}] is not a string")
        pairs.append((text, _start(start, where, f"{name}.answer_start[{m}]")))
    qid = row.get("id")
    return Question(where, str(qid) if qid is not None else where, question, context, pairs)


def _at(origin: str, path: str) -> str:
    return f"{origin}: {path}" if path else origin


def _object(value: object, origin: str, path: str) -> dict:
    if not isinstance(value, dict):
        raise LmtoolError(f"{_at(origin, path)}: is a {type(value).__name__}, not an object")
    return value


def _list(parent: dict, name: str, origin: str, path: str = "") -> list:
    value = parent.get(name)
    where = _at(origin, f"{path}.{name}" if path else name)
    if value is None:
        raise LmtoolError(f"{_at(origin, path)}: {name} missing")
    if not isinstance(value, list):
        raise LmtoolError(f"{where}: is a {type(value).__name__}, not a list")
    return value


def _string(parent: dict, name: str, origin: str, path: str, key: str | None = None) -> str:
    value = parent.get(name)
    if not isinstance(value, str):
        state = "missing" if value is None else f"is a {type(value).__name__}, not a string"
        raise LmtoolError(f"{_at(origin, path)}: {name} {state}" + (f" ({key})" if key else ""))
    return value


def _text(parent: dict, name: str, origin: str, path: str, key: str | None = None) -> str:
    """A question or context: a string with something in it (a blank one cannot be asked or answered)."""
    value = _string(parent, name, origin, path, key)
    if not value.strip():
        raise LmtoolError(f"{_at(origin, path)}: {name} is blank" + (f" ({key})" if key else ""))
    return value


def _start(value: object, origin: str, path: str) -> int:
    if value is None:
        raise LmtoolError(f"{_at(origin, path)}: answer_start missing")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LmtoolError(f"{_at(origin, path)}: answer_start must be a character index >= 0 (got {value!r})")
    return value


# --------------------------------------------------------------------------- tokenization


def encode_questions(
    tokenizer, questions: list[Question], cfg: FinetuneConfig, keep_offsets: bool
) -> tuple[dict[str, list], dict[str, int]]:
    """Window columns (input_ids, token_type_ids when made, length, start_positions, end_positions, and
    with keep_offsets window (the row), example_id, offset_mapping) and counts: windows, answers outside every window."""
    columns: dict[str, list] = {"input_ids": [], "length": [], "start_positions": [], "end_positions": []}
    if keep_offsets:
        columns |= {"window": [], "example_id": [], "offset_mapping": []}
    counts = {"windows": 0, "answers_cut": 0}
    for first in range(0, len(questions), BATCH):
        batch = questions[first : first + BATCH]
        encoded = _tokenize(tokenizer, batch, cfg)
        found = set()
        for w, offsets in enumerate(encoded["offset_mapping"]):
            q = encoded["overflow_to_sample_mapping"][w]
            ids, sequence = encoded["input_ids"][w], encoded.sequence_ids(w)
            context_offsets = [
                list(o) if s == 1 else NO_OFFSET for o, s in zip(offsets, sequence, strict=True)
            ]
            start, end, hit = _span(batch[q].answers[:1], context_offsets, ids, tokenizer)
            if hit:
                found.add(q)
            columns["input_ids"].append(ids)
            if "token_type_ids" in encoded:
                columns.setdefault("token_type_ids", []).append(encoded["token_type_ids"][w])
            columns["length"].append(len(ids))
            columns["start_positions"].append(start)
            columns["end_positions"].append(end)
            if keep_offsets:
                columns["window"].append(len(columns["window"]))
                columns["example_id"].append(first + q)
                columns["offset_mapping"].append(context_offsets)
        counts["windows"] += len(encoded["input_ids"])
        counts["answers_cut"] += sum(1 for q, item in enumerate(batch) if item.answers and q not in found)
    return columns, counts


def crowded_question(tokenizer, questions: list[str], max_length: int, stride: int) -> int | None:
    """The index of the first question that leaves a window no more than `stride` context tokens (the
    tokenizer would panic on it), or None."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    lengths = tokenizer(questions, add_special_tokens=False, verbose=False)["input_ids"]
    return next((i for i, ids in enumerate(lengths) if max_length - specials - len(ids) <= stride), None)


def _tokenize(tokenizer, batch: list[Question], cfg: FinetuneConfig):
    questions = [item.question.lstrip() for item in batch]
    crowded = crowded_question(tokenizer, questions, cfg.max_length, cfg.qa.doc_stride)
    if crowded is not None:
        raise LmtoolError(
            f"{batch[crowded].where}: the question leaves no more than finetune.qa.doc_stride "
            f"({cfg.qa.doc_stride}) context tokens in a window of finetune.max_length ({cfg.max_length}) "
            "tokens: raise max_length or lower doc_stride"
        )
    return tokenizer(
        questions,
        [item.context for item in batch],
        truncation="only_second",
        max_length=cfg.max_length,
        stride=cfg.qa.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        verbose=False,
    )


def _span(
    answers: list[tuple[str, int]], offsets: list[list[int]], ids: list[int], tokenizer
) -> tuple[int, int, bool]:
    """Token positions of the answer's first and last characters in this window and True, or the
    CLS position twice and False when the window does not hold the whole answer."""
    cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
    if not answers:
        return cls, cls, False
    text, start_char = answers[0]
    end_char = start_char + len(text)
    inside = [i for i, o in enumerate(offsets) if o != NO_OFFSET]
    if not inside or offsets[inside[0]][0] > start_char or offsets[inside[-1]][1] < end_char:
        return cls, cls, False
    start = max(i for i in inside if offsets[i][0] <= start_char)
    end = min(i for i in inside if offsets[i][1] >= end_char)
    return start, end, True
