"""Pack a stream of token ids into fixed-size blocks, carrying the tail across batches.

The tokenized documents arrive in batches; each batch's ids are appended to whatever did not
fill a block last time, so no token is lost or repeated at a batch boundary. CLM blocks are
plain windows of the stream (documents end with EOS). MLM blocks are `[CLS] window [SEP]`
(documents end with [SEP]), block_size counting both. Only the very last, partial block of a
split is special: `remainder: drop` drops it, `remainder: pad` keeps it shorter (the collator
pads it at batch time and the loss ignores the padding).
"""

from __future__ import annotations

import numpy as np


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every token id."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


class Packer:
    """Feed flat id arrays with `add`; it returns the full blocks they complete. `finish` returns the
    last partial block (or None when dropped or empty)."""

    def __init__(
        self, block_size: int, *, dtype: np.dtype, remainder: str, wrap: tuple[int, int] | None = None
    ):
        self.dtype = dtype
        self.remainder = remainder
        self.wrap = wrap  # (cls_id, sep_id) for MLM blocks
        self.window = block_size - 2 if wrap else block_size
        if self.window < 1:
            raise ValueError("block_size must leave room for at least one token between [CLS] and [SEP]")
        self._tail = np.zeros(0, dtype=dtype)
        self.tokens = 0  # ids seen
        self.blocks = 0
        self.dropped_tokens = 0

    def add(self, ids: np.ndarray) -> np.ndarray:
        self.tokens += len(ids)
        stream = np.concatenate([self._tail, ids.astype(self.dtype, copy=False)])
        full = len(stream) // self.window
        self._tail = stream[full * self.window :].copy()
        blocks = stream[: full * self.window].reshape(full, self.window)
        self.blocks += full
        return self._wrap(blocks)

    def finish(self) -> np.ndarray | None:
        tail, self._tail = self._tail, np.zeros(0, dtype=self.dtype)
        if len(tail) == 0:
            return None
        if self.remainder == "drop":
            self.dropped_tokens = len(tail)
            return None
        self.blocks += 1
        return self._wrap(tail[None, :])[0]

    def _wrap(self, blocks: np.ndarray) -> np.ndarray:
        if self.wrap is None:
            return blocks
        cls_id, sep_id = self.wrap
        rows = blocks.shape[0]
        left = np.full((rows, 1), cls_id, dtype=self.dtype)
        right = np.full((rows, 1), sep_id, dtype=self.dtype)
        return np.hstack([left, blocks, right])
