"""SFT data (finetune.task: sft): rows → token ids and labels that train on responses only.

An example is a list of (text, trained) segments: plain text is one trained segment; a prompt/response
pair is the `template` with the prompt (not trained) then the response and EOS (trained); a chat is
rendered with the chat template and cut at each assistant turn (the text the template adds for
`add_generation_prompt` stays on the prompt side, so generation continues where training did).
Segments are tokenized separately, as `lmtool generate` tokenizes a prompt alone. Labels are -100
on untrained tokens and on the first token (never a target; in a packed row it would be predicted
from the previous example).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmtool import console
from lmtool.config import ConfigError, FinetuneConfig
from lmtool.data import sources as src
from lmtool.data.labeled_rows import _rows
from lmtool.errors import LmtoolError

IGNORE = -100
KNOWN_ROLES = ("system", "user", "assistant")


@dataclass
class SftExample:
    """One example's text segments; `where` says where it was read ("data.sources.0: a.jsonl line 7")."""

    where: str
    segments: list[tuple[str, bool]]  # (text, trained)


def read_sft_examples(
    source: src.Source, cfg: FinetuneConfig, tokenizer, encoding_errors: str, cache_dir: Path
) -> Iterator[SftExample]:
    """The examples of one resolved source, in file order."""
    sft = cfg.sft
    if source.format == "conll":
        raise ConfigError(
            f"{source.key}.format", "sft reads text, json(l), csv, tsv or parquet", value="conll"
        )
    if source.format == "text":
        if sft.format != "text":
            raise ConfigError(
                "finetune.sft.format", f"{source.label} is plain text: set format: text", value=sft.format
            )
        for path in source.files:
            text = Path(path).read_text(encoding="utf-8", errors=encoding_errors)
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    yield SftExample(f"{source.key}: {path} line {number}", [(line, True)])
        return
    unknown_roles: set[str] = set()
    for where, row in _rows(source, encoding_errors, cache_dir):
        if sft.format == "text":
            yield SftExample(where, [(_string(row, sft.text_field, "text_field", where), True)])
        elif sft.format == "prompt_response":
            prompt = _string(row, sft.prompt_field, "prompt_field", where)
            response = _string(row, sft.response_field, "response_field", where)
            yield SftExample(where, [(sft.template.replace("{prompt}", prompt), False), (response, True)])
        else:
            if sft.messages_field not in row:
                _missing(row, "messages_field", sft.messages_field, where)
            segments = chat_segments(tokenizer, row[sft.messages_field], where)
            _warn_unknown_roles(row[sft.messages_field], where, unknown_roles)
            yield SftExample(where, segments)


def _warn_unknown_roles(messages: list[dict], where: str, warned: set[str]) -> None:
    """A role the template renders but that is not system/user/assistant (e.g. 'bot' for 'assistant'):
    its turns are prompt, never trained; said once per role and source (a typo would train nothing)."""
    for message in messages:
        role = message["role"]
        if role not in KNOWN_ROLES and role not in warned:
            warned.add(role)
            console.warning(
                f"{where}: role '{role}' is not {', '.join(KNOWN_ROLES[:-1])} or {KNOWN_ROLES[-1]}: "
                "its turns are prompt, not trained (only assistant turns are)"
            )


def _string(row: dict, column: str, key: str, where: str) -> str:
    if column not in row:
        _missing(row, key, column, where)
    value = row[column]
    if not isinstance(value, str):
        raise LmtoolError(f"{where} has no text in column '{column}' (finetune.sft.{key})")
    return value


def _missing(row: dict, key: str, column: str, where: str) -> None:
    """A row without the field: named by file and line (rows of one file need not share their fields)."""
    raise ConfigError(
        f"finetune.sft.{key}",
        f"{where} has no field '{column}' (its fields: {', '.join(map(str, row)) or '(none)'})",
        has_value=False,
    )


def require_chat_template(tokenizer, cfg: FinetuneConfig, name: str) -> None:
    """Use `sft.chat_template` when given; exit 2 when neither it nor the tokenizer has one."""
    if cfg.sft.chat_template is not None:
        tokenizer.chat_template = cfg.sft.chat_template
    elif not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "finetune.sft.chat_template",
            f"is needed: the tokenizer of {name} has no chat template to render messages with",
            value=None,
            hint="set finetune.sft.chat_template to a Jinja template, or use format: prompt_response",
        )


def chat_segments(tokenizer, messages: object, where: str) -> list[tuple[str, bool]]:
    """A conversation's rendered text cut into prompt and assistant (trained) segments."""
    if not isinstance(messages, list) or not messages:
        raise LmtoolError(f"{where}: messages must be a non-empty list of {{role, content}} objects")
    for i, message in enumerate(messages):
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise LmtoolError(f"{where}: message {i} is not a {{role, content}} object with text values")
    full = render_chat(tokenizer, messages, False, where)
    for i, message in enumerate(messages):
        if message["content"].strip() and message["content"] not in full:
            raise LmtoolError(
                f"{where}: the chat template does not render role '{message['role']}' (message {i})"
            )
    segments: list[tuple[str, bool]] = []
    done = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i], True, where) if i else ""
        after = render_chat(tokenizer, messages[: i + 1], False, where)
        if not (full.startswith(after) and after.startswith(before) and len(before) >= done):
            raise LmtoolError(
                f"{where}: the chat template renders turn {i} differently inside the conversation"
            )
        segments += [(before[done:], False), (after[len(before) :], True)]
        done = len(after)
    segments.append((full[done:], False))
    return [s for s in segments if s[0]]


def render_chat(tokenizer, messages: list[dict], generation_prompt: bool, where: str) -> str:
    """The chat template's text for `messages` (exit-2 errors name `where`); `lmtool serve` renders chats with it too."""
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as exc:  # noqa: BLE001 - jinja2 raises TemplateError or the template's own exception
        roles = [m["role"] for m in messages if m["role"] not in KNOWN_ROLES]
        detail = f"role '{roles[0]}' " if roles else ""
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LmtoolError(f"{where}: the chat template cannot render {detail}({message})") from None


def encode_sft(tokenizer, examples: list[SftExample], cfg: FinetuneConfig) -> tuple[dict, dict]:
    """Columns input_ids, labels, length, and counts (truncated; dropped with no trained token left)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise LmtoolError("the tokenizer has no EOS token to end responses with")
    columns: dict[str, list] = {"input_ids": [], "labels": [], "length": []}
    truncated = dropped = 0
    chat = cfg.sft.format == "messages"
    for example in examples:
        ids: list[int] = []
        labels: list[int] = []
        for index, (text, trained) in enumerate(example.segments):
            piece = tokenizer(text, add_special_tokens=index == 0 and not chat)["input_ids"]
            if trained and not chat:
                piece = [*piece, eos]
            ids += piece
            labels += piece if trained or cfg.sft.train_on_prompt else [IGNORE] * len(piece)
        if chat and ids and ids[-1] != eos:
            ids.append(eos)
            labels.append(eos)
        if len(ids) > cfg.max_length:
            truncated += 1
            ids, labels = ids[: cfg.max_length], labels[: cfg.max_length]
        labels[0] = IGNORE
        if all(label == IGNORE for label in labels):
            dropped += 1
            continue
        columns["input_ids"].append(ids)
        columns["labels"].append(labels)
        columns["length"].append(len(ids))
    targets = sum(sum(label != IGNORE for label in row) for row in columns["labels"])
    return columns, {"truncated": truncated, "no_target": dropped, "target_tokens": targets}
