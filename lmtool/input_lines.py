"""The input lines of `predict` and `generate`, from a file or stdin: UTF-8 text, one input per line.

Lines end at "\\n" only (a "\\r" before it is dropped), not at every boundary `str.splitlines` knows
(form feed, vertical tab, \\x1c-\\x1e, \\x85, U+2028, U+2029): one output per input line, always, so the
outputs line up with the inputs. Bytes that are not UTF-8 are an input error naming the file (or stdin)
and the line, whichever way Python decodes stdin (strictly, or with surrogate escapes under a C locale).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TextIO

from lmtool.errors import LmtoolError

_SURROGATE = re.compile("[\ud800-\udfff]")


def read_lines(file: str | None, stdin: TextIO, noun: str, no_input: str) -> tuple[list[str], str]:
    """(the lines of `file`, else of stdin; the name errors give them: the file or "stdin").
    `noun` names the file in errors ("input", "prompt"); `no_input` is the error for stdin on a terminal."""
    if file:
        path = Path(file)
        if not path.is_file():
            raise LmtoolError(f"{noun} file not found: {file}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LmtoolError(f"cannot read {noun} file {file}: {exc.strerror or exc}") from None
        return split_lines(_decode(data, file)), file
    if stdin.isatty():
        raise LmtoolError(no_input)
    buffer = getattr(stdin, "buffer", None)
    text = _decode(buffer.read(), "stdin") if buffer is not None else _checked(stdin.read(), "stdin")
    return split_lines(text), "stdin"


def split_lines(text: str) -> list[str]:
    """`text` cut at "\\n" (and "\\r\\n") only; a last line without its newline counts."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LmtoolError(
            f"{name}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}): save it as UTF-8"
        ) from None


def _checked(text: str, name: str) -> str:
    """Text a stream decoded with surrogate escapes: an escaped byte is one that was not UTF-8."""
    found = _SURROGATE.search(text)
    if found:
        line = text.count("\n", 0, found.start()) + 1
        raise LmtoolError(
            f"{name}:{line}: not UTF-8 text (byte 0x{ord(found.group()) & 0xFF:02x}): save it as UTF-8"
        )
    return text
