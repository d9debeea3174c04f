"""Batches of documents → one id stream per batch (each document's ids, then a separator), in parallel.

Two engines give the same ids: tiktoken for GPT-2-style byte-level BPE (several times faster,
taken only after it matched the tokenizer on a sample of the corpus) and the `tokenizers`
backend for everything else. Both encode documents as ordinary text, as nanoGPT's OpenWebText
preparation does: a literal `<|endoftext|>` or `[SEP]` in a document is text, and the only
separator ids are those added between documents. Batches come back in order, with a bounded
number in flight.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import chain

import numpy as np

from lmtool import console
from lmtool.data.fast_bpe import agrees, encode_ordinary, tiktoken_encoding
from lmtool.data.interrupts import worker_pool

SAMPLE_CHARS = 100_000  # how much of the corpus the engines are compared on


def ordinary_backend(tokenizer):
    """A copy of the tokenizer's Rust backend that encodes special tokens' text as ordinary text."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.encode_special_tokens = True
    return backend


class TokenizersEncoder:
    """The `tokenizers` backend; it spreads a batch over every core itself."""

    name = "tokenizers"
    parallel_inside = True

    def __init__(self, backend, separator: int):
        self.backend = backend
        self.separator = separator

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.backend.encode_special_tokens = True  # again: pickling (to a worker process) drops it
        ids = [enc.ids for enc in self.backend.encode_batch_fast(texts, add_special_tokens=False)]
        total = sum(len(x) for x in ids) + len(ids)
        flat = chain.from_iterable(chain(x, (self.separator,)) for x in ids)
        return np.fromiter(flat, dtype=np.int64, count=total)


class TiktokenEncoder:
    """tiktoken on the whole batch at once where it can: documents joined by the separator's text,
    which tiktoken (its only special token) splits out before pre-tokenizing, so no piece spans two
    documents. A batch where a document holds that text is encoded document by document instead."""

    name = "tiktoken"
    parallel_inside = False

    def __init__(self, encoding, separator: int):
        self.encoding = encoding
        self.separator = separator
        joiners = [text for text in encoding.special_tokens_set if not _overlaps_itself(text)]
        self.joiner = joiners[0] if joiners else None

    def __call__(self, texts: list[str]) -> np.ndarray:
        if self.joiner is not None:
            joined = self.joiner.join(texts) + self.joiner
            if joined.count(self.joiner) == len(texts):  # no document holds the separator's text
                return self.encoding.encode_to_numpy(joined, allowed_special="all")
        separator = np.array([self.separator], dtype=np.uint32)
        return np.concatenate(
            [part for text in texts for part in (encode_ordinary(self.encoding, text), separator)]
        )


def _overlaps_itself(text: str) -> bool:
    """Whether a proper prefix of `text` is also a suffix: two occurrences could overlap, and one could
    straddle a document boundary, so counting occurrences would not prove the documents free of it."""
    return any(text[:k] == text[-k:] for k in range(1, len(text)))


def choose_encoder(tokenizer, separator: int, sample: list[str], engine: str):
    """tiktoken when `engine` allows it, the tokenizer converts, and the two agree on `sample`."""
    backend = ordinary_backend(tokenizer)
    fallback = TokenizersEncoder(backend, separator)
    if engine == "tokenizers":
        return fallback
    encoding = tiktoken_encoding(backend, separator)
    if encoding is None:
        return fallback
    if not agrees(encoding, backend, _head(sample, SAMPLE_CHARS)):
        console.warning(
            "tiktoken and `tokenizers` disagree on a sample of this corpus; tokenizing with `tokenizers` (slower)"
        )
        return fallback
    return TiktokenEncoder(encoding, separator)


def encoded_batches(
    encoder, batches: Iterable[tuple[str, list[str]]], procs: int
) -> Iterator[tuple[str, np.ndarray, int]]:
    """(tag, id stream, number of documents) for each (tag, documents) batch, in order. procs > 1: that
    many worker processes, one thread each; otherwise one process, with a thread per core when the
    engine needs them."""
    if procs > 1:
        yield from _in_worker_processes(encoder, batches, procs)
    elif encoder.parallel_inside:
        for tag, texts in batches:
            yield tag, encoder(texts), len(texts)
    else:
        with ThreadPoolExecutor(cpu_count()) as pool:
            yield from _in_order(lambda texts: pool.submit(encoder, texts).result, batches, 2 * cpu_count())


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _in_order(
    submit: Callable[[list[str]], Callable[[], np.ndarray]],
    batches: Iterable[tuple[str, list[str]]],
    window: int,
) -> Iterator[tuple[str, np.ndarray, int]]:
    """Run `submit` ahead on up to `window` batches and yield their results in submission order."""
    pending: deque = deque()
    for tag, texts in batches:
        pending.append((tag, submit(texts), len(texts)))
        if len(pending) >= window:
            tag, result, documents = pending.popleft()
            yield tag, result(), documents
    while pending:
        tag, result, documents = pending.popleft()
        yield tag, result(), documents


def _in_worker_processes(
    encoder, batches: Iterable[tuple[str, list[str]]], procs: int
) -> Iterator[tuple[str, np.ndarray, int]]:
    context = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    )
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    # Set before forking: the workers then stay single-threaded, without the fork warning.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        with worker_pool(context, procs, _init_worker, (encoder,)) as pool:
            yield from _in_order(
                lambda texts: pool.submit(_encode_in_worker, texts).result, batches, 2 * procs
            )
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


_worker: dict = {}


def _init_worker(encoder) -> None:
    _worker["encoder"] = encoder


def _encode_in_worker(texts: list[str]) -> np.ndarray:
    return _worker["encoder"](texts)


def _head(texts: list[str], chars: int) -> list[str]:
    """The leading texts, up to about `chars` characters in all."""
    taken, total = [], 0
    for text in texts:
        if total >= chars:
            break
        taken.append(text[: chars - total])
        total += len(taken[-1])
    return taken
