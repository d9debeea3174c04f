"""Local text, JSON and CSV/TSV files → the documents of one source, file by file, in order.

Read here rather than through `datasets` builders so that every problem names the file and its
1-based line, a byte-order mark or another encoding is honoured (data/decode.py), a row without
the text field is counted as missing, and nothing is copied to an Arrow cache first: files are
streamed, so memory does not grow with their size (a .json array is the exception: parsed whole).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from lmtool import console
from lmtool.config import SourceConfig
from lmtool.data.decode import Decoded, text_chunks
from lmtool.errors import ConfigError, LmtoolError

REPLACEMENT = "\ufffd"
SHOWN_LINES = 5  # line numbers listed in a warning about rows without the text field
FIRST_ROWS = 1000  # a file whose first rows all lack the text field names the wrong field

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a document may be longer than the 128 KiB default


def read_documents(
    files: list[Path], fmt: str, config: SourceConfig, key: str, encoding_errors: str, missing: object
) -> Iterator[object]:
    """Each document's text (None for a null value, `missing` for a row without the text field)."""
    for path in files:
        found = Decoded(path)
        chunks = text_chunks(path, key, config.encoding, encoding_errors, found)
        if fmt == "text":
            rows = _text(chunks, config.doc_split)
        elif fmt == "json":
            rows = _fields(_json_rows(chunks, path, key), path, key, config.text_field)
        else:
            rows = _fields(_csv_rows(chunks, path, key, fmt), path, key, config.text_field)
        damaged = 0
        for row in rows:
            if found.replaced and isinstance(row, str) and REPLACEMENT in row:
                damaged += 1
            yield missing if row is _MISSING else row
        if found.chars == 0:
            raise LmtoolError(f"{key}: {path} is empty")
        if found.replaced:
            _warn_replaced(found, damaged, key, encoding_errors)


def read_rows(
    files: list[Path], fmt: str, config: SourceConfig, key: str, encoding_errors: str
) -> Iterator[tuple[Path, str, dict]]:
    """(file, "line N" / "item N", row) for every row of local JSON/CSV/TSV files: labeled data, whose
    rows need all their columns. With encoding_errors skip, rows holding replaced bytes are dropped."""
    for path in files:
        found = Decoded(path)
        chunks = text_chunks(path, key, config.encoding, encoding_errors, found)
        rows = _json_rows(chunks, path, key) if fmt == "json" else _csv_rows(chunks, path, key, fmt)
        damaged = 0
        for where, row in rows:
            if found.replaced and REPLACEMENT in json.dumps(row, ensure_ascii=False):
                damaged += 1
                if encoding_errors == "skip":
                    continue
            yield path, where, row
        if found.chars == 0:
            raise LmtoolError(f"{key}: {path} is empty")
        if found.replaced:
            _warn_replaced(found, damaged, key, encoding_errors)


def _warn_replaced(found: Decoded, documents: int, key: str, encoding_errors: str) -> None:
    fate = (
        "dropped (data.encoding_errors: skip)"
        if encoding_errors == "skip"
        else "kept with U+FFFD in their place"
    )
    console.warning(
        f"{key}: {found.path}: {found.replaced} bytes are not valid {found.encoding_name}; "
        f"{documents} document(s) holding them {fate} - set {key}.encoding if the file is in another encoding"
    )


# --------------------------------------------------------------------------- splitting text


def split_stream(chunks: Iterable[str], sep: str) -> Iterator[str]:
    """The pieces `"".join(chunks).split(sep)` gives, holding no more than a chunk and a piece."""
    held: list[str] = []
    reach = len(sep) - 1  # a separator may straddle two chunks
    for chunk in chunks:
        tail = held[-1][-reach:] if held and reach else ""
        if sep not in chunk and sep not in tail + chunk[:reach]:
            held.append(chunk)
            continue
        pieces = ("".join(held) + chunk).split(sep)
        held = [pieces.pop()]
        yield from pieces
    yield "".join(held)


def _text(chunks: Iterable[str], doc_split: str) -> Iterator[str]:
    if doc_split == "file":
        text = "".join(chunks)
        if text:
            yield text
        return
    pieces = split_stream(chunks, "\n" if doc_split == "line" else "\n\n")
    if doc_split == "paragraph":
        yield from (piece for piece in pieces if piece)
        return
    previous = None  # the last line is a document unless the file ends with a newline
    for line in pieces:
        if previous is not None:
            yield previous
        previous = line
    if previous:
        yield previous


def _numbered_lines(chunks: Iterable[str]) -> Iterator[tuple[int, str]]:
    return enumerate(split_stream(chunks, "\n"), start=1)


# --------------------------------------------------------------------------- rows and their text field


_MISSING = object()


def _fields(rows: Iterator[tuple[str, dict]], path: Path, key: str, field: str) -> Iterator[object]:
    """The text field of each (where, row); rows without it are reported (line numbers) and yielded
    as _MISSING; a file whose first rows all lack it names the wrong field."""
    lacking: list[str] = []  # where the first rows without the field are
    seen = with_field = without = 0
    first_fields: list[str] = []
    for where, row in rows:
        seen += 1
        if seen == 1:
            first_fields = list(row)
        if field not in row:
            without += 1
            if without <= SHOWN_LINES:
                lacking.append(where)
            if with_field == 0 and seen >= FIRST_ROWS:
                raise _no_field(path, key, field, first_fields)
            yield _MISSING
            continue
        with_field += 1
        value = row[field]
        if value is not None and not isinstance(value, str):
            raise ConfigError(
                f"{key}.text_field",
                f"{path} {where} holds a {type(value).__name__} there, not text",
                value=field,
            )
        yield value
    if seen and with_field == 0:
        raise _no_field(path, key, field, first_fields)
    if without:
        shown = ", ".join(lacking) + (", ..." if without > SHOWN_LINES else "")
        console.warning(
            f"{key}: {path}: {without} row(s) without the text field '{field}' counted as missing ({shown})"
        )


def _no_field(path: Path, key: str, field: str, names: list[str]) -> ConfigError:
    return ConfigError(
        f"{key}.text_field", f"no such column in {path}; columns: {', '.join(names) or '(none)'}", value=field
    )


def _json_rows(chunks: Iterator[str], path: Path, key: str) -> Iterator[tuple[str, dict]]:
    """JSON lines, or one JSON array (of objects, or of strings taken as `text`). A .jsonl file is JSON
    lines (.jsonl.gz too) whatever its first character: a first line `[1, 2]` is a bad row, not an array."""
    chunks = iter(chunks)
    head: list[str] = []
    for chunk in chunks:
        head.append(chunk)
        if chunk.strip():
            break
    lines = Path(path).name.lower().endswith((".jsonl", ".jsonl.gz"))
    if not lines and "".join(head).lstrip().startswith("["):
        text = "".join(head) + "".join(chunks)
        try:
            items = json.loads(text)
        except ValueError as err:
            raise _bad_json(path, key, getattr(err, "lineno", None), err) from None
        for number, item in enumerate(items, start=1):
            yield (
                f"item {number}",
                _as_row({"text": item} if isinstance(item, str) else item, path, key, f"item {number}"),
            )
        return
    for number, line in _numbered_lines(_chain(head, chunks)):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise _bad_json(path, key, number, err) from None
        yield f"line {number}", _as_row(row, path, key, f"line {number}")


def _chain(head: list[str], rest: Iterator[str]) -> Iterator[str]:
    yield from head
    yield from rest


def _as_row(row: object, path: Path, key: str, where: str) -> dict:
    if not isinstance(row, dict):
        raise LmtoolError(f"{key}: {path} {where} is a JSON {type(row).__name__}, not an object")
    return row


def _bad_json(path: Path, key: str, line: int | None, err: ValueError) -> LmtoolError:
    reason = getattr(err, "msg", None) or str(err)
    where = f" line {line}" if line else ""
    return LmtoolError(f"{key}: {path}{where} is not valid JSON ({reason})")


def _csv_rows(chunks: Iterator[str], path: Path, key: str, fmt: str) -> Iterator[tuple[str, dict]]:
    """Rows under the header line; a row with more or fewer fields than the header is an error."""
    lines = (line + "\n" for line in split_stream(chunks, "\n"))
    reader = csv.reader(lines, delimiter="\t" if fmt == "tsv" else ",")
    header: list[str] | None = None
    start = 1
    try:
        for fields in reader:
            if fields:  # blank lines are skipped
                if header is None:
                    header = fields
                elif len(fields) != len(header):
                    raise LmtoolError(
                        f"{key}: {path} line {start} has {len(fields)} fields where the header has {len(header)}"
                    )
                else:
                    yield f"line {start}", dict(zip(header, fields, strict=True))
            start = reader.line_num + 1
    except csv.Error as err:
        raise LmtoolError(f"{key}: {path} line {start} is not valid {fmt.upper()} ({err})") from None
