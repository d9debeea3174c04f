"""Document cleaning: normalise, strip control characters, collapse whitespace, filter, de-duplicate.

Every document read is either kept or dropped for exactly one named reason, so the counts in
the manifest add up: read = kept + sum(dropped).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from lmtool.config import CleanConfig

REPLACEMENT = "\ufffd"  # what undecodable bytes became when the source was decoded with errors="replace"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0/C1 control characters except tab and newline
# Characters that separate words, lines or pages become whitespace (always, as CR becomes LF) before
# control characters are removed, so "one.\x0cPage" does not turn into "one.Page". The line
# boundaries of str.splitlines() become a line break, or a blank line for the page and paragraph
# breaks FF and PS; the unit separator US, which separates fields, becomes a space.
_SEPARATORS = str.maketrans(
    {
        "\x0b": "\n",  # VT
        "\x0c": "\n\n",  # FF
        "\x1c": "\n",  # FS
        "\x1d": "\n",  # GS
        "\x1e": "\n",  # RS
        "\x1f": " ",  # US
        "\x85": "\n",  # NEL
        "\u2028": "\n",  # LS
        "\u2029": "\n\n",  # PS
    }
)
_SPECIAL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # control characters and separators
# Every ASCII byte that is not a control character by that definition (all ASCII separators are).
_ASCII_NOT_CONTROL = bytes(b for b in range(128) if not _CONTROL.match(chr(b)))
_ODD_SPACE = re.compile(r"[^\S \n]")  # whitespace other than space and newline
_ASCII_NOT_ODD_SPACE = bytes(b for b in range(128) if not _ODD_SPACE.match(chr(b)))
_BLANK_LINES = re.compile(r"\n{3,}")


def _has_special(text: str) -> bool:
    """Whether `text` holds a control character or a separator (the common answer is no, found fast)."""
    if text.isascii():
        # Delete every ordinary byte; whatever is left is a control character.
        return bool(text.encode("ascii").translate(None, _ASCII_NOT_CONTROL))
    return _SPECIAL.search(text) is not None


def _is_collapsed(text: str, keep_linebreaks: bool) -> bool:
    """Whether collapsing whitespace would leave `text` as it is. Most documents already are, and
    these substring scans run at memory speed, while the collapse builds a list of every word."""
    if text[:1].isspace() or text[-1:].isspace() or "  " in text:
        return False
    if "\n" in text and (not keep_linebreaks or " \n" in text or "\n " in text or "\n\n\n" in text):
        return False
    if text.isascii():
        return not text.encode("ascii").translate(None, _ASCII_NOT_ODD_SPACE)
    return _ODD_SPACE.search(text) is None


@dataclass
class CleanStats:
    read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    replaced: int = 0  # kept documents that contain replaced (undecodable) bytes

    def as_dict(self) -> dict:
        return {
            "read": self.read,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "kept_with_replaced_bytes": self.replaced,
        }


class Cleaner:
    """Call it on each raw document, in order: returns the cleaned text, or None if dropped.

    De-duplication keeps an 8-byte hash per kept document (about 60 bytes of memory each).
    """

    def __init__(self, config: CleanConfig, encoding_errors: str = "replace"):
        self.config = config
        self.skip_undecodable = encoding_errors == "skip"
        self.stats = CleanStats()
        self._seen: set[bytes] = set()

    def __call__(self, text: str | None) -> str | None:
        self.stats.read += 1
        reason = None
        if text is None:
            reason = "empty"
        elif self.skip_undecodable and REPLACEMENT in text:
            reason = "undecodable"
        else:
            text = self.normalize(text)
            reason = self._filter(text)
        if reason is not None:
            self.stats.dropped[reason] += 1
            return None
        self.stats.kept += 1
        if REPLACEMENT in text:
            self.stats.replaced += 1
        return text

    def normalize(self, text: str) -> str:
        cfg = self.config
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if cfg.normalize != "none":
            text = unicodedata.normalize(cfg.normalize, text)
        if _has_special(text):
            text = text.translate(_SEPARATORS)
            if cfg.remove_control_chars:
                text = _CONTROL.sub("", text)
        if cfg.collapse_whitespace and not _is_collapsed(text, cfg.keep_linebreaks):
            # str.split() splits on exactly the characters regex \s matches; it is much faster than
            # a regex substitution, which matches every single space.
            if cfg.keep_linebreaks:
                text = "\n".join(" ".join(line.split()) for line in text.split("\n")).strip("\n")
                if "\n\n\n" in text:
                    text = _BLANK_LINES.sub("\n\n", text)
            else:
                text = " ".join(text.split())
        return text

    def _filter(self, text: str) -> str | None:
        cfg = self.config
        if not text.strip():
            return "empty"
        if len(text) < cfg.min_chars:
            return "too_short"
        if cfg.max_chars is not None and len(text) > cfg.max_chars:
            return "too_long"
        if cfg.dedupe:
            digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
            if digest in self._seen:
                return "duplicate"
            self._seen.add(digest)
        return None
