"""CoNLL files → tagged sentences: one token per line with its tag in another column, a blank line
between sentences, `-DOCSTART-` lines skipped. A line without the configured columns is an error
naming its file and 1-based line, so a shifted column never trains on the wrong tags."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lmtool.config import ConllConfig, SourceConfig
from lmtool.data.decode import Decoded, text_chunks
from lmtool.data.readers import REPLACEMENT, _warn_replaced, split_stream
from lmtool.errors import LmtoolError

DOCSTART = "-DOCSTART-"


def read_conll(
    files: list[Path], config: SourceConfig, conll: ConllConfig, key: str, encoding_errors: str
) -> Iterator[tuple[Path, str, list[str], list[str]]]:
    """(file, "line N" of the sentence's first token, tokens, tags) for every sentence."""
    for path in files:
        found = Decoded(path)
        chunks = text_chunks(path, key, config.encoding, encoding_errors, found)
        damaged = 0
        for start, tokens, tags in _sentences(split_stream(chunks, "\n"), conll, path, key):
            if any(REPLACEMENT in item for item in tokens + tags):  # bytes that did not decode
                damaged += 1
                if encoding_errors == "skip":
                    continue
            yield path, f"line {start}", tokens, tags
        if found.chars == 0:
            raise LmtoolError(f"{key}: {path} is empty")
        if found.replaced:
            _warn_replaced(found, damaged, key, encoding_errors)


def _sentences(
    lines: Iterator[str], conll: ConllConfig, path: Path, key: str
) -> Iterator[tuple[int, list[str], list[str]]]:
    """(line of the first token, tokens, tags) of each sentence."""
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    for number, line in enumerate(lines, start=1):
        fields = line.split(conll.separator) if conll.separator else line.split()
        if not line.strip() or fields[0] == DOCSTART:
            if tokens:
                yield start, tokens, tags
            tokens, tags = [], []
            continue
        token, tag = _columns(fields, conll, path, key, number)
        if not tokens:
            start = number
        tokens.append(token)
        tags.append(tag)
    if tokens:
        yield start, tokens, tags


def _columns(fields: list[str], conll: ConllConfig, path: Path, key: str, number: int) -> tuple[str, str]:
    try:
        token, tag = fields[conll.token_column], fields[conll.tag_column]
    except IndexError:
        raise LmtoolError(
            f"{key}: {path} line {number} is malformed: {len(fields)} column(s), needs columns "
            f"{conll.token_column} (token) and {conll.tag_column} (tag) (finetune.conll)"
        ) from None
    if len(fields) < 2 or not tag.strip() or not token.strip():
        raise LmtoolError(
            f"{key}: {path} line {number} is malformed: expected a token and a tag, got {' '.join(fields)!r}"
        )
    return token.strip(), tag.strip()
