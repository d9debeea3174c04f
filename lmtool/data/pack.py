"""Pack a stream of token ids into fixed-size blocks, carrying the tail across batches.

The tokenized documents arrive in batches; each batch's ids are appended to whatever did not
fill a block last time, so no token is lost or repeated at a batch boundary. CLM blocks are
plain windows of the stream (documents end with EOS). MLM blocks are `[CLS] window [SEP]`
(documents end with [SEP]), block_size counting both. Only the very last, partial block of a
split is special: `remainder: drop` drops it, `remainder: pad` keeps it shorter (the collator
pads it at batch time and the loss ignores the padding).
"""

from __future__ import annotations

from pathlib import Path

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


class BlockWriter:
    """Writes blocks straight into a `save_to_disk` layout (Arrow shards + state.json + dataset_info.json),
    starting a new shard past `max_shard_bytes`, so `datasets.load_from_disk(directory)` reads it
    and no finished split is ever re-read or copied (the data never piles up in memory or page cache)."""

    def __init__(self, directory: Path, dtype: np.dtype, max_shard_bytes: int = 256 << 20):
        import datasets

        self.directory = directory
        self.features = datasets.Features({"input_ids": datasets.List(datasets.Value(dtype.name))})
        self.max_shard_bytes = max_shard_bytes
        self._shards: list[Path] = []
        self._writer = None
        self._shard_bytes = 0
        directory.mkdir(parents=True)

    def write(self, blocks: np.ndarray | list[np.ndarray]) -> None:
        """A 2-D array of equal blocks, or a list of 1-D blocks (the last, shorter one)."""
        import pyarrow as pa

        rows = list(blocks)
        if not rows:
            return
        lengths = [len(r) for r in rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        array = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(rows)))
        if self._writer is None or self._shard_bytes >= self.max_shard_bytes:
            self._next_shard()
        self._writer.write_table(pa.table({"input_ids": array}))
        self._shard_bytes += array.nbytes

    def _next_shard(self) -> None:
        from datasets.arrow_writer import ArrowWriter

        if self._writer is not None:
            self._writer.finalize()
        path = self.directory / f"shard-{len(self._shards):05d}.arrow"
        self._shards.append(path)
        self._writer = ArrowWriter(features=self.features, path=str(path))
        self._shard_bytes = 0

    def close(self, fingerprint: str) -> None:
        """Finish the last shard and write the metadata `load_from_disk` reads."""
        import dataclasses
        import json

        import datasets

        if self._writer is None:  # an empty split still needs one (empty) shard
            self._next_shard()
        self._writer.finalize()
        count = len(self._shards)
        names = [f"data-{i:05d}-of-{count:05d}.arrow" for i in range(count)]
        for path, name in zip(self._shards, names, strict=True):
            path.rename(self.directory / name)
        state = {
            "_data_files": [{"filename": name} for name in names],
            "_fingerprint": fingerprint,
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        (self.directory / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
        info = dataclasses.asdict(datasets.DatasetInfo(features=self.features))
        (self.directory / "dataset_info.json").write_text(
            json.dumps({k: info[k] for k in sorted(info)}, indent=2)
        )
