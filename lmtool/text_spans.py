"""Character spans that end on a whole character as the reader sees it. A tokenizer that drops combining
marks or variation selectors (BERT's accent stripping, normalizers that remove U+FE0F) gives offsets that
end before them, so an entity or an answer would lose the diaeresis of an NFD "Zoë" or turn "❤️" into "❤"."""

from __future__ import annotations

import unicodedata

ZWJ = "\u200d"


def _extends(char: str) -> bool:
    """A character that belongs to the one before it: a combining mark, a variation selector, a skin tone."""
    code = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Me", "Mc")
        or 0xFE00 <= code <= 0xFE0F
        or 0xE0100 <= code <= 0xE01EF
        or 0x1F3FB <= code <= 0x1F3FF
    )


def grapheme_end(text: str, end: int) -> int:
    """`end` moved past the marks, selectors and zero-width-joined characters that complete the character
    before it (`text[start:end]` then ends on a whole grapheme)."""
    if end <= 0:
        return end
    while end < len(text):
        if _extends(text[end]):
            end += 1
        elif text[end] == ZWJ and end + 1 < len(text) and not text[end + 1].isspace():
            end += 2  # an emoji ZWJ sequence: the joiner and the character it joins
        else:
            break
    return end
