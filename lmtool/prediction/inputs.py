"""Texts to predict on, from arguments, a file or stdin: one per line, or JSON lines for text pairs.

A line that parses as a JSON object with a string `text` (and optionally `text_pair`) is taken as
such; any other line is the text as it is, so plain text that happens to start with `{` still works.
Blank lines are skipped; lines end at "\\n" only (lmtool.input_lines).
"""

from __future__ import annotations

import json
from typing import TextIO

from lmtool.errors import LmtoolError
from lmtool.input_lines import read_lines
from lmtool.tasks.predictor import Item


def read_inputs(args: list[str], file: str | None, stdin: TextIO) -> list[Item]:
    """All inputs in order; exit-2 errors name the file."""
    if args and file:
        raise LmtoolError("give texts as arguments or with --file, not both")
    if args:
        return [Item(text, None, f"argument {i + 1}") for i, text in enumerate(args)]
    lines, name = read_lines(
        file, stdin, "input", "no input: give TEXT arguments, --file F, or pipe texts on stdin"
    )
    items = [_parse(line, f"{name}:{n}") for n, line in enumerate(lines, start=1) if line.strip()]
    if not items:
        raise LmtoolError(f"{name}: no input (it is empty or has only blank lines)")
    return items


def _parse(line: str, origin: str) -> Item:
    if line.lstrip().startswith("{"):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("text"), str):
            pair = record.get("text_pair")
            if pair is not None and not isinstance(pair, str):
                raise LmtoolError(f'{origin}: "text_pair" must be a string (got {type(pair).__name__})')
            return Item(record["text"], pair, origin)
    return Item(line, None, origin)
