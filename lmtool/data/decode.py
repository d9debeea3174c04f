"""Bytes of a local source file → text.

The encoding is the source's `encoding:`, else what a byte-order mark says (UTF-8/16/32, as
Windows tools write them), else UTF-8; a leading BOM never reaches the text. Newlines are
translated to "\\n". Undecodable bytes are counted as they are replaced, so a file in another
encoding is reported (or refused) instead of being trained on as U+FFFD soup.
"""

from __future__ import annotations

import codecs
import gzip
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lmtool.errors import LmtoolError

CHUNK = 1 << 20
# A file with more undecodable bytes than this fraction is taken to be in another encoding: exit 2.
UNDECODABLE_LIMIT = 0.25
JUDGE_AFTER = 1 << 16  # bytes read before that fraction is judged (it always is at the end of a file)
BOMS = (  # longest first: the UTF-32-LE mark starts with the UTF-16-LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class _Replaced(threading.local):
    bytes = 0


_REPLACED = _Replaced()


def _replace_and_count(err: UnicodeDecodeError) -> tuple[str, int]:
    _REPLACED.bytes += err.end - err.start
    return "\ufffd", err.end


codecs.register_error("lmtool-replace", _replace_and_count)


@dataclass
class Decoded:
    """What reading one file found: the encoding used, bytes read and bytes replaced with U+FFFD."""

    path: Path
    encoding: str = "utf-8"
    bytes_read: int = 0
    replaced: int = 0
    chars: int = 0

    @property
    def encoding_name(self) -> str:
        name = codecs.lookup(self.encoding).name
        return "UTF-8" if name in ("utf-8", "utf-8-sig") else name


def unreadable(key: str, path: Path | str, exc: OSError) -> LmtoolError:
    """The one-line error for a file or directory that cannot be opened or read."""
    if isinstance(exc, PermissionError):
        return LmtoolError(f"{key}.path: {path} is not readable (permission denied)")
    return LmtoolError(f"{key}.path: cannot read {path}: {exc.strerror or exc}")


def open_binary(path: Path, key: str) -> BinaryIO:
    try:
        return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise unreadable(key, path, exc) from None


def text_chunks(
    path: Path, key: str, encoding: str | None, encoding_errors: str, found: Decoded
) -> Iterator[str]:
    """The decoded text of `path` in pieces of about a megabyte; `found` is filled in as it goes.
    encoding_errors `fail` stops at the first undecodable byte (exit 2, naming its offset)."""
    errors = "strict" if encoding_errors == "fail" else "lmtool-replace"
    with open_binary(path, key) as handle:
        chunk = _read(handle, path, key)
        found.encoding = encoding or _bom_encoding(chunk) or "utf-8"
        inner = codecs.getincrementaldecoder(found.encoding)(errors=errors)
        decoder = io.IncrementalNewlineDecoder(inner, translate=True)
        first = True
        while True:
            pending = len(inner.getstate()[0])
            before = _REPLACED.bytes
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                offset = found.bytes_read - pending + err.start
                raise LmtoolError(
                    f"{key}: {path} is not valid {found.encoding_name} (byte {offset}); data.encoding_errors "
                    f"is fail - set {key}.encoding if the file is in another encoding, or use replace or skip"
                ) from None
            found.replaced += _REPLACED.bytes - before
            found.bytes_read += len(chunk)
            if (found.bytes_read >= JUDGE_AFTER or not chunk) and found.replaced:
                _judge(found, key)
            if first and text:
                text, first = text.removeprefix("\ufeff"), False
            if text:
                found.chars += len(text)
                yield text
            if not chunk:
                return
            chunk = _read(handle, path, key)


def _read(handle: BinaryIO, path: Path, key: str) -> bytes:
    try:
        return handle.read(CHUNK)
    except OSError as exc:  # includes a corrupt .gz (gzip.BadGzipFile)
        raise unreadable(key, path, exc) from None
    except EOFError:
        raise LmtoolError(f"{key}.path: {path} is truncated (compressed stream ends early)") from None


def _bom_encoding(head: bytes) -> str | None:
    return next((name for bom, name in BOMS if head.startswith(bom)), None)


def _judge(found: Decoded, key: str) -> None:
    share = found.replaced / max(found.bytes_read, 1)
    if share > UNDECODABLE_LIMIT:
        raise LmtoolError(
            f"{key}: {found.path}: {share:.0%} of its bytes are not valid {found.encoding_name}, so it is in "
            f"another encoding - set {key}.encoding (e.g. latin-1, cp1252, utf-16)"
        )
