"""Extractive answers with character offsets into the context, decoded exactly as the QA evaluator
decodes them (`lmtool.tasks.qa_postprocess.best_answer`).

Inputs are JSON lines {"question", "context"}; a context longer than max_length is cut into windows
sharing `stride` context tokens, and the best span over all windows wins. Decoding settings
(n_best, max_answer_length, version_2, null threshold) come from the `lmtool_qa` entry the finetune
recipe writes into the model's config.json, else run_qa's defaults.
"""

from __future__ import annotations

import json

import torch

from lmtool.config.finetune import QAConfig
from lmtool.data.qa_data import crowded_question
from lmtool.errors import LmtoolError
from lmtool.tasks.padding import pad_rows
from lmtool.tasks.predictor import Item, Predictor
from lmtool.tasks.qa_postprocess import NO_OFFSET, Window, best_answer


def qa_settings(pred: Predictor) -> QAConfig:
    saved = getattr(pred.model.config, "lmtool_qa", None)
    return QAConfig.model_validate(saved) if isinstance(saved, dict) else QAConfig()


def decode(
    pred: Predictor, items: list[Item], batch_size: int, max_length: int, stride: int | None
) -> list[dict]:
    """`lmtool predict`'s records for a QA model (the task's `decode`)."""
    return answer(pred, items, batch_size, max_length, answer_stride(pred, max_length, stride))


def answer_stride(pred: Predictor, max_length: int, stride: int | None) -> int:
    """Context tokens shared by consecutive windows: `stride`, or the training doc_stride (at most a quarter window)."""
    overlap = min(qa_settings(pred).doc_stride, max_length // 4) if stride is None else stride
    if not 0 <= overlap < max_length // 2:
        raise LmtoolError(f"--stride must be at least 0 and below {max_length // 2} (half of --max-length)")
    return overlap


def answer(pred: Predictor, items: list[Item], batch_size: int, max_length: int, stride: int) -> list[dict]:
    """One record per item: {"question", "context", "answer", "score", "start", "end"}."""
    pairs = [_question(item) for item in items]
    windows, owner, offsets = [], [], []
    crowded = crowded_question(pred.tokenizer, [q.lstrip() for q, _ in pairs], max_length, stride)
    if crowded is not None:
        raise LmtoolError(
            f"{items[crowded].origin}: the question leaves no more than --stride ({stride}) context tokens "
            f"in a window of --max-length ({max_length}) tokens"
        )
    for n, (question, context) in enumerate(pairs):
        enc = pred.tokenizer(
            question.lstrip(), context, truncation="only_second", max_length=max_length, stride=stride,
            return_overflowing_tokens=True, return_offsets_mapping=True,
        )  # fmt: skip
        for w in range(len(enc["input_ids"])):
            windows.append({k: enc[k][w] for k in ("input_ids", "token_type_ids") if k in enc})
            sequence = enc.sequence_ids(w)
            offsets.append(
                [
                    list(o) if s == 1 else list(NO_OFFSET)
                    for o, s in zip(enc["offset_mapping"][w], sequence, strict=True)
                ]
            )
            owner.append(n)
    logits = _forward(pred, windows, batch_size)
    per_item: list[list[Window]] = [[] for _ in items]
    for w, (starts, ends) in enumerate(logits):
        per_item[owner[w]].append(Window(starts, ends, offsets[w]))
    cfg = qa_settings(pred)
    records = []
    for (question, context), found in zip(pairs, per_item, strict=True):
        best = best_answer(found, context, n_best=cfg.n_best, max_answer_length=cfg.max_answer_length,
                           version_2=cfg.version_2, null_threshold=cfg.null_score_diff_threshold)  # fmt: skip
        records.append(
            {"question": question, "context": context, "answer": best.text, "score": round(best.score, 6),
             "start": best.start, "end": best.end}
        )  # fmt: skip
    return records


def _question(item: Item) -> tuple[str, str]:
    try:
        record = json.loads(item.text)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or not all(
        isinstance(record.get(k), str) for k in ("question", "context")
    ):
        raise LmtoolError(
            f'{item.origin}: a question-answering model takes JSON lines {{"question": ..., "context": ...}} '
            "(both strings)"
        )
    return record["question"], record["context"]


def _forward(
    pred: Predictor, windows: list[dict], batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """fp32 (start, end) logits per window without padding, in input order; batches of similar length."""
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i]["input_ids"]))
    pad_id = pred.tokenizer.pad_token_id if pred.tokenizer.pad_token_id is not None else 0
    out: list = [None] * len(windows)
    for first in range(0, len(order), batch_size):
        rows = [windows[i] for i in order[first : first + batch_size]]
        width = max(len(r["input_ids"]) for r in rows)
        batch = {
            "input_ids": pad_rows([r["input_ids"] for r in rows], pad_id, width),
            "attention_mask": pad_rows([[1] * len(r["input_ids"]) for r in rows], 0, width),
        }
        if "token_type_ids" in rows[0]:
            batch["token_type_ids"] = pad_rows([r["token_type_ids"] for r in rows], 0, width)
        with torch.inference_mode():
            result = pred.model(**{k: v.to(pred.device) for k, v in batch.items()})
        starts, ends = result.start_logits.float().cpu(), result.end_logits.float().cpu()
        for row, index in enumerate(order[first : first + batch_size]):
            size = len(windows[index]["input_ids"])
            out[index] = (starts[row, :size], ends[row, :size])
    return out
