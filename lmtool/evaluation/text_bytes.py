"""UTF-8 bytes of exactly the scored tokens: the denominator of bits per byte.

A character may span several tokens (byte-level BPE splits an emoji into two or three), so a
token on its own may decode to a partial character. Its bytes go to the token that completes it:
the bytes of tokens [a, b) are those of the complete characters ids[:b] decodes to, minus those of
ids[:a]. Each difference is computed on a local slice (a few tokens of context before a, a few of
look-ahead after b), so long ranges are decoded in blocks and the blocks' bytes add up exactly.
Special tokens (EOS separators, start tokens) decode to nothing: they count no bytes.
"""

from __future__ import annotations

import os

import numpy as np

BLOCK = 4096  # tokens decoded at a time
CONTEXT = 8  # tokens before and after a block; a UTF-8 character is at most 4 bytes (4 tokens)


def range_bytes(tokenizer, ids: np.ndarray, ranges: list[tuple[int, int]]) -> int:
    """Bytes of the tokens ids[a:b] over all (a, b) in `ranges`, decoded in blocks."""
    return sum(
        _block_bytes(tokenizer, ids, lo, min(lo + BLOCK, b)) for a, b in ranges for lo in range(a, b, BLOCK)
    )


def _block_bytes(tokenizer, ids: np.ndarray, a: int, b: int) -> int:
    start, stop = max(0, a - CONTEXT), min(len(ids), b + CONTEXT)
    full = _decode(tokenizer, ids[start:stop])
    return _complete_bytes(_decode(tokenizer, ids[start:b]), full) - _complete_bytes(
        _decode(tokenizer, ids[start:a]), full
    )


def _decode(tokenizer, ids: np.ndarray) -> str:
    # No clean-up of spaces: the bytes are those the tokens stand for, not a prettified text.
    return tokenizer.decode(ids.tolist(), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _complete_bytes(prefix: str, full: str) -> int:
    """Bytes of the characters `prefix` shares with the longer decode `full`: a partial character at the
    end of `prefix` (U+FFFD there, the real character in `full`) is not counted."""
    return len(os.path.commonprefix([prefix, full]).encode("utf-8"))
