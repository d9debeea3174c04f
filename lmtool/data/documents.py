"""The cleaned-document stream of `lmtool preprocess`: read every source once, clean and
de-duplicate, assign each document to a split, and (when a tokenizer must be trained on them
first) save the documents to Arrow files in the scratch directory and read them back."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

from lmtool import console
from lmtool.data import sources as src
from lmtool.data.clean import Cleaner
from lmtool.errors import ConfigError, LmtoolError

SPLITS = ("train", "validation")
MISSING = object()  # stands for a row without the text field


@dataclass
class SplitCounts:
    documents: int = 0
    characters: int = 0
    bytes: int = 0
    tokens: int = 0
    blocks: int = 0
    dropped_tokens: int = 0


def clean_documents(
    config, train_sources, val_sources, scratch: Path, cleaner: Cleaner, counts, streaming: bool
) -> Iterator[tuple[str, list[str]]]:
    """(split, cleaned documents) batches from one pass over all sources: clean, de-duplicate and
    assign each document to a split, counting as it goes."""
    data = config.data
    hold_out = HoldOut(data.seed, data.validation_fraction if not val_sources else 0.0)
    cache = scratch / "hf-cache"
    for sources, default_split in ((train_sources, "train"), (val_sources, "validation")):
        for source in sources:
            for batch in src.iter_texts(
                source,
                streaming=streaming,
                encoding_errors=data.encoding_errors,
                cache_dir=cache,
                missing=MISSING,
            ):
                kept = {split: [] for split in SPLITS}
                for raw in batch:
                    if raw is MISSING:  # read, and dropped as missing (not as empty)
                        cleaner.stats.read += 1
                        cleaner.stats.dropped["missing"] += 1
                        continue
                    if not isinstance(raw, str | None):
                        raise ConfigError(
                            f"{source.key}.text_field",
                            f"column holds {type(raw).__name__}, not text",
                            value=source.config.text_field,
                        )
                    text = cleaner(raw)
                    if text is None:
                        continue
                    encoded = text.encode("utf-8", "surrogatepass")
                    split = "validation" if hold_out(encoded) else default_split
                    kept[split].append(text)
                    count = counts[split]
                    count.documents += 1
                    count.characters += len(text)
                    count.bytes += len(encoded)
                for split, texts in kept.items():
                    if texts:
                        yield split, texts
    shutil.rmtree(cache, ignore_errors=True)


class HoldOut:
    """Whether a document goes to validation, decided from a hash of (seed, text): a document stays on
    its side when others are added, removed or reordered (one random draw per document in stream
    order moved most of the validation split into training when one document was added in front),
    and identical documents always land on the same side."""

    def __init__(self, seed: int, fraction: float):
        self.fraction = fraction
        self._seeded = hashlib.blake2b(f"lmtool-validation-split:{seed}:".encode(), digest_size=8)

    def __call__(self, encoded: bytes) -> bool:
        if not self.fraction:
            return False
        digest = self._seeded.copy()
        digest.update(encoded)
        return int.from_bytes(digest.digest(), "big") < self.fraction * 2**64


def check_documents(counts: dict[str, SplitCounts], cleaner: Cleaner) -> None:
    if counts["train"].documents == 0:
        stats = cleaner.stats
        dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(stats.dropped.items())) or "none"
        raise LmtoolError(
            f"no training documents left after cleaning ({stats.read} read; dropped: {dropped}) - "
            "check data.sources, their text_field/doc_split and data.clean"
        )


def save_documents(documents: Iterator[tuple[str, list[str]]], scratch: Path) -> None:
    """Write each split's cleaned documents to an Arrow stream file in `scratch`."""
    import datasets
    from datasets.arrow_writer import ArrowWriter

    features = datasets.Features({"text": datasets.Value("string")})
    writers = {
        split: ArrowWriter(features=features, path=str(scratch / f"docs-{split}.arrow")) for split in SPLITS
    }
    with console.progress("reading", extra="documents") as bar:
        for split, texts in documents:
            writers[split].write_batch({"text": texts})
            bar.advance(len(texts))
    for writer in writers.values():
        writer.finalize()


def saved_documents(scratch: Path) -> Iterator[tuple[str, list[str]]]:
    for split in SPLITS:
        for texts in read_docs(scratch / f"docs-{split}.arrow"):
            yield split, texts


def first_training_batch(
    batches: Iterator[tuple[str, list[str]]],
) -> tuple[list[str] | None, Iterator[tuple[str, list[str]]]]:
    """The first training batch (None if there is none), and all the batches, that one included."""
    seen = []
    for split, texts in batches:
        seen.append((split, texts))
        if split == "train":
            return texts, chain(seen, batches)
    return None, iter(seen)


def read_docs(path: Path) -> Iterator[list[str]]:
    """Batches of documents from an Arrow stream file, read with plain reads (not memory-mapped), so
    pages already processed do not accumulate in the resident set."""
    import pyarrow as pa

    with pa.OSFile(str(path)) as handle:
        for batch in pa.ipc.open_stream(handle):
            yield batch.column(0).to_pylist()
