"""Prompts from arguments, a file or stdin: plain lines, or JSON lines with per-prompt settings.

A line whose first non-blank character is `{` is a JSON object with a `prompt` field and any of
the per-prompt settings (e.g. `{"prompt": "Once", "temperature": 1.2, "stop": ["\\n"]}`); other
lines are prompts as they are. Blank lines are skipped; lines end at "\\n" only (lmtool.input_lines).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TextIO

from pydantic import ValidationError

from lmtool.config import GenerateConfig
from lmtool.errors import LmtoolError
from lmtool.input_lines import read_lines

SAMPLING_KEYS = (
    "max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty",
    "num_beams", "num_return_sequences", "stop", "seed",
)  # fmt: skip
PER_PROMPT_KEYS = (*SAMPLING_KEYS, "fill_mask_top_k")


@dataclass
class Prompt:
    index: int
    text: str
    settings: GenerateConfig
    origin: str  # where it came from, for error messages: "argument 2", "prompts.txt:7", "stdin:3"


def read_prompts(args: list[str], file: str | None, base: GenerateConfig, stdin: TextIO) -> list[Prompt]:
    """All prompts with their effective settings; exit-2 errors name the file and line."""
    if args and file:
        raise LmtoolError("give prompts as arguments or with --file, not both")
    if args:
        return [Prompt(i, text, base, f"argument {i + 1}") for i, text in enumerate(args)]
    lines, name = read_lines(
        file, stdin, "prompt", "no prompts: give PROMPT arguments, --file F, or pipe prompts on stdin"
    )
    prompts = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        origin = f"{name}:{lineno}"
        if line.lstrip().startswith("{"):
            text, settings = _parse_json_line(line, base, origin)
        else:
            text, settings = line, base
        prompts.append(Prompt(len(prompts), text, settings, origin))
    if not prompts:
        raise LmtoolError(f"{name}: no prompts (it is empty or has only blank lines)")
    return prompts


def _parse_json_line(line: str, base: GenerateConfig, origin: str) -> tuple[str, GenerateConfig]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LmtoolError(f"{origin}: malformed JSON line: {exc.msg} at column {exc.colno}") from None
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        raise LmtoolError(f'{origin}: a JSON line needs a "prompt" string, e.g. {{"prompt": "Once upon"}}')
    extra = sorted(set(record) - {"prompt", *PER_PROMPT_KEYS})
    if extra:
        raise LmtoolError(
            f"{origin}: unknown key {extra[0]!r} (per-prompt keys: prompt, {', '.join(PER_PROMPT_KEYS)})"
        )
    overrides = {k: v for k, v in record.items() if k != "prompt"}
    if not overrides:
        return record["prompt"], base
    try:
        settings = GenerateConfig.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "settings"
        raise LmtoolError(
            f"{origin}: {key}: {err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})"
        ) from None
    return record["prompt"], settings


def sampling_settings(settings: GenerateConfig) -> dict:
    """The settings echoed in each output record."""
    return {key: getattr(settings, key) for key in SAMPLING_KEYS}
