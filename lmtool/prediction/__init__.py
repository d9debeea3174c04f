"""`lmtool predict`: labels for texts (or text pairs) and named entities with character offsets.

JSON lines on stdout when it is a pipe or file (one object per input, in input order), a readable
table on a terminal. Inputs are batched by length with dynamic padding, then put back in order.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from lmtool import console
from lmtool.errors import LmtoolError
from lmtool.prediction.inputs import read_inputs
from lmtool.prediction.model import load_predictor
from lmtool.tasks.registry import finetune_spec

FORMATS = ("auto", "text", "jsonl")
DEVICES = ("auto", "cpu", "cuda", "mps")


def run_predict(
    model: str,
    args: list[str],
    file: str | None,
    *,
    batch_size: int = 32,
    output_format: str = "auto",
    max_length: int | None = None,
    stride: int | None = None,
    device: str = "auto",
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Predict for every input and write the records; returns how many were written."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    if output_format not in FORMATS:
        raise LmtoolError(f"--format must be one of {', '.join(FORMATS)} (got {output_format!r})")
    if device not in DEVICES:
        raise LmtoolError(f"--device must be one of {', '.join(DEVICES)} (got {device!r})")
    if batch_size < 1:
        raise LmtoolError(f"--batch-size must be at least 1 (got {batch_size})")
    if max_length is not None and max_length < 2:
        raise LmtoolError(f"--max-length must be at least 2 (got {max_length})")
    items = read_inputs(args, file, stdin)
    pred = load_predictor(model, device)
    positions = pred.positions()
    if max_length is not None and positions is not None and max_length > positions:
        raise LmtoolError(
            f"--max-length must be at most the model's {positions} positions (got {max_length}; model {model})"
        )
    spec = finetune_spec(pred.task)
    length = max_length or spec.default_max_length(pred)
    console.info(f"{spec.describe(pred)}{len(items)} inputs, max_length {length}")
    records = spec.decode(pred, items, batch_size, length, stride)
    as_text = output_format == "text" or (output_format == "auto" and stdout.isatty())
    for record in records:
        stdout.write((_as_text(record) if as_text else json.dumps(record, ensure_ascii=False)) + "\n")
    stdout.flush()
    return len(records)


def _as_text(record: dict) -> str:
    """One line per classified text; a text and one indented line per entity for NER; the question
    and its answer for QA."""
    if "answer" in record:
        return f"{record['question']}\n  {record['score']:.3f}  [{record['start']}:{record['end']}]  {record['answer'] or '(no answer)'}"
    text = record["text"] + (f"  ||  {record['text_pair']}" if "text_pair" in record else "")
    if "entities" in record:
        lines = [text] + [
            f"  {e['type']:<8} {e['score']:.3f}  [{e['start']}:{e['end']}]  {e['text']}"
            for e in record["entities"]
        ]
        return "\n".join(lines if record["entities"] else [text, "  (no entities)"])
    if "labels" in record:
        return f"{','.join(record['labels']) or '-':<20} {text}"
    if "label" in record:
        return f"{record['label']:<12} {record['score']:.3f}  {text}"
    return f"{record['score']:<12.4f} {text}"
