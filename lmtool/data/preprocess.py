"""`lmtool preprocess`: sources → cleaned documents → tokenizer → token blocks on disk, cached by content.

Stages (each streams, so memory does not grow with the corpus): read + clean + split → tokenize
(batched, over every core: see data/encode.py) → pack into blocks → write `save_to_disk`-layout
shards. With an existing tokenizer that is one pass; a tokenizer trained on the cleaned training
split needs the documents written to Arrow files first and read back after training.
Everything is written under a temporary sibling directory that is renamed to `processed_dir`
only when complete, so an interrupted run never leaves a directory that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lmtool import __version__, console, ownership
from lmtool.config import Config
from lmtool.data import labeled_build
from lmtool.data import sources as src
from lmtool.data.clean import Cleaner
from lmtool.data.documents import (
    SPLITS,
    SplitCounts,
    check_documents,
    clean_documents,
    first_training_batch,
    read_docs,
    save_documents,
    saved_documents,
)
from lmtool.data.encode import choose_encoder, encoded_batches
from lmtool.data.identity import tokenizer_identity
from lmtool.data.interrupts import stop_raises
from lmtool.data.manifest import write_manifest_file
from lmtool.data.pack import BlockWriter, Packer, id_dtype
from lmtool.data.partial import partial_prefix, remove_stale
from lmtool.data.reuse import link_same_data, up_to_date
from lmtool.data.tokenizer import (
    load_tokenizer,
    tokenizer_fingerprint,
    train_tokenizer,
    train_type,
)
from lmtool.diskfull import disk_full_error
from lmtool.errors import ConfigError, LmtoolError
from lmtool.permissions import apply_umask
from lmtool.positions import model_positions
from lmtool.runlock import DirLock

# Config keys that change how the work is done but not what it produces: left out of the cache key.
NOT_IN_KEY = ("processed_dir", "num_proc", "streaming", "streaming_threshold_mb")
# In the cache key: raised whenever the same inputs and settings start to give other processed data
# (cleaning rules, the split, encoding), since the lmtool version does not change with every commit.
# 2: separators become whitespace, split by hash of the text, special tokens' text is ordinary text.
DATA_FORMAT = 2
# a fine-tune task's builder: (config, training sources, validation sources, out, scratch, content key)
Builder = Callable[[Config, list, list, Path, Path, str], None]


def run_preprocess(config: Config, overwrite: bool = False, build_labeled: Builder | None = None) -> Path:
    """Write `data.processed_dir` (train/, validation/, tokenizer/, manifest.json) and return it; a
    fine-tuning config's data is built by its task's `build_labeled` (lmtool.tasks.registry.preprocess).

    A directory made from the same inputs is reused as is; one made from different inputs is
    refused (exit 2) unless `overwrite`; one lmtool did not make, or that holds a source, always.
    One process at a time builds a given directory (a lock beside it); Ctrl-C and SIGTERM stop the
    build, remove its partial directory and exit 130 / 143.
    """
    data = config.data
    if not data.sources:
        raise ConfigError("data.sources", "is empty: give at least one source", value=[])
    train_sources = [src.resolve(s, f"data.sources.{i}") for i, s in enumerate(data.sources)]
    val_sources = [
        src.resolve(s, f"data.validation_sources.{i}") for i, s in enumerate(data.validation_sources)
    ]
    key = content_key(config, train_sources + val_sources)
    out = Path(os.path.expanduser(data.processed_dir))
    if link_same_data(config, out, key):
        return out
    if up_to_date(out, key):  # read-only: also works on a directory we may not write
        console.info(f"{out} is up to date (same sources and settings); nothing to do")
        return out
    with stop_raises(), DirLock(out, "data.processed_dir"):
        if up_to_date(out, key):  # another run may have finished it just before
            console.info(f"{out} is up to date (same sources and settings); nothing to do")
            return out
        _check_replaceable(config, out, overwrite)
        _quiet_datasets()
        remove_stale(out)
        work = _work_dir(out)
        try:
            _build(config, train_sources, val_sources, work, key, build_labeled)
            _install(work / "out", out, work / "old")
        except LmtoolError:
            raise
        except Exception as exc:
            full = disk_full_error(exc)
            if full is None:
                raise
            raise LmtoolError(
                f"data.processed_dir: no space left on device while writing {out} "
                f"({getattr(full, 'filename', None) or work}); free space or point data.processed_dir at another disk"
            ) from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return out


def _check_replaceable(config: Config, out: Path, overwrite: bool) -> None:
    """An existing, non-empty `out` is replaced only with `overwrite`, only if lmtool preprocess made
    it, and only if no configured source lies inside it (a tokenizer.path inside it is read, and copied
    into the new output, before the old one is removed)."""
    if (not out.exists() and not out.is_symlink()) or ownership.is_empty_dir(out):
        return
    if not ownership.is_processed_dir(out):
        raise LmtoolError(
            f"data.processed_dir: {out} exists and was not made by lmtool preprocess (no manifest.json with "
            "a content key); refusing to replace it, even with --overwrite - remove it yourself or change "
            "data.processed_dir"
        )
    if not overwrite:
        raise LmtoolError(
            f"{out} exists and was made from different sources or settings; "
            "pass --overwrite to replace it or change data.processed_dir"
        )
    inputs = {f"data.sources.{i}.path": s.path for i, s in enumerate(config.data.sources)}
    inputs |= {
        f"data.validation_sources.{i}.path": s.path for i, s in enumerate(config.data.validation_sources)
    }
    inputs |= {f"data.test_sources.{i}.path": s.path for i, s in enumerate(config.data.test_sources)}
    ownership.check_removable(out, "data.processed_dir", inputs)


def content_key(config: Config, sources: list[src.Source]) -> str:
    """Hash of everything the output depends on: data/tokenizer settings, source fingerprints,
    tokenizer files, the lmtool version and the data format."""
    settings = config.data.model_dump(mode="json", exclude=set(NOT_IN_KEY))
    payload = {
        "lmtool": __version__,
        "data_format": DATA_FORMAT,
        "data": settings,
        "tokenizer": config.tokenizer.model_dump(mode="json"),
        "tokenizer_files": tokenizer_fingerprint(config.tokenizer),
        "sources": [src.fingerprint(s) for s in sources],
    }
    if config.finetune is not None:
        payload |= labeled_build.key_parts(config)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _quiet_datasets() -> None:
    import datasets

    datasets.utils.logging.set_verbosity_error()
    if not _bars():
        datasets.disable_progress_bars()


def _bars() -> bool:
    settings = console.settings
    return (
        settings.log_format == "auto"
        and not settings.quiet
        and sys.stderr.isatty()
        and console.is_rank_zero()
    )


def _work_dir(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=partial_prefix(out), dir=out.parent))
        apply_umask(work)  # mkdtemp's 0700 would keep others from reading the processed data
        return work
    except OSError as exc:
        raise ConfigError(
            "data.processed_dir", f"cannot write there: {exc.strerror or exc}", value=str(out)
        ) from None


def _install(built: Path, out: Path, trash: Path) -> None:
    """Put the finished directory in place; an existing one (only with --overwrite) is moved aside first."""
    if out.exists():
        out.rename(trash)
    built.rename(out)


# --------------------------------------------------------------------------- the build


def _build(
    config: Config, train_sources, val_sources, work: Path, key: str, build_labeled: Builder | None = None
) -> None:
    data = config.data
    scratch, out = work / "scratch", work / "out"
    scratch.mkdir()
    out.mkdir()
    if config.finetune is not None:
        if build_labeled is None:
            raise ValueError(
                "a finetune config is preprocessed by its task (lmtool.tasks.registry.preprocess)"
            )
        build_labeled(config, train_sources, val_sources, out, scratch, key)
        return
    started = time.perf_counter()
    timings: dict[str, float] = {}

    streaming = _streaming(config, train_sources + val_sources)
    counts = {split: SplitCounts() for split in SPLITS}
    cleaner = Cleaner(data.clean, data.encoding_errors)
    documents = clean_documents(config, train_sources, val_sources, scratch, cleaner, counts, streaming)
    tick = time.perf_counter()
    if config.tokenizer.train is None:
        # An existing tokenizer: documents go from the cleaner straight to the tokenizer, in one pass
        # that keeps every core busy (cleaning on one, tokenizing on the others).
        tokenizer, tokenizer_info = _load_tokenizer(config)
        timings["tokenizer"] = time.perf_counter() - tick
        batches, stage, bar_total = documents, "read_clean_tokenize_pack_write", None
    else:
        # A tokenizer trained on the cleaned training split needs that split written out first.
        save_documents(documents, scratch)
        timings["read_clean"] = time.perf_counter() - tick
        check_documents(counts, cleaner)
        tick = time.perf_counter()
        tokenizer, tokenizer_info = _train_tokenizer(config, scratch, counts["train"].documents)
        timings["tokenizer"] = time.perf_counter() - tick
        batches, stage = saved_documents(scratch), "tokenize_pack_write"
        bar_total = sum(c.documents for c in counts.values())
    tokenizer.save_pretrained(str(out / "tokenizer"))

    vocab = len(tokenizer)
    dtype = id_dtype(vocab)
    tick = time.perf_counter()
    sample, batches = first_training_batch(batches)
    if sample is None:
        check_documents(counts, cleaner)
    separator = tokenizer.eos_token_id if data.objective == "clm" else tokenizer.sep_token_id
    encoder = choose_encoder(tokenizer, separator, sample, config.tokenizer.engine)
    _tokenize_and_pack(config, tokenizer, encoder, batches, bar_total, dtype, out, counts, key)
    timings[stage] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started

    tokens = sum(c.tokens for c in counts.values())
    manifest = {
        "key": key,
        "lmtool_version": __version__,
        "objective": data.objective,
        "block_size": data.block_size,
        "remainder": data.remainder,
        "vocab_size": vocab,
        "tokenizer_fingerprint": tokenizer_identity(tokenizer),
        "dtype": dtype.name,
        "streaming": streaming,
        "tokenizer": tokenizer_info,
        "tokenize_engine": encoder.name,
        "sources": [s.label for s in train_sources],
        "validation_sources": [s.label for s in val_sources],
        "splits": {split: asdict(c) for split, c in counts.items()},
        "cleaning": cleaner.stats.as_dict(),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "tokens_per_second": round(tokens / max(timings["total"], 1e-9), 1),
    }
    write_manifest_file(out, manifest)
    train = counts["train"]
    console.info(
        f"preprocessed {train.documents} train / {counts['validation'].documents} validation documents into "
        f"{train.blocks} + {counts['validation'].blocks} blocks of {data.block_size} tokens "
        f"({tokens} tokens, {manifest['tokens_per_second']:.0f} tokens/s)"
    )


def _streaming(config: Config, sources: list[src.Source]) -> bool:
    data = config.data
    if data.streaming != "auto":
        return bool(data.streaming)
    size = src.local_bytes(sources)
    on = size > data.streaming_threshold_mb * (1 << 20)
    if on:
        console.info(
            f"sources hold {size / (1 << 20):.0f} MB (> data.streaming_threshold_mb): streaming them"
        )
    return on


def _load_tokenizer(config: Config):
    data, tok_cfg = config.data, config.tokenizer
    tokenizer = load_tokenizer(tok_cfg, data.objective)
    if tokenizer.model_max_length < data.block_size:
        console.warning(
            f"tokenizer.path says its model takes {tokenizer.model_max_length} tokens; data.block_size is {data.block_size}"
        )
    return tokenizer, {"path": tok_cfg.path, "vocab_size": len(tokenizer)}


def _train_tokenizer(config: Config, scratch: Path, documents: int):
    """Train on the `documents` cleaned training documents saved in `scratch`."""
    data, tok_cfg = config.data, config.tokenizer
    limit, _ = model_positions(config)
    kind = train_type(tok_cfg.train, data.objective)
    console.info(f"training a {kind} tokenizer (vocab {tok_cfg.train.vocab_size}) on {documents} documents")
    with console.progress("tokenizer", total=documents, extra="documents") as bar:

        def texts() -> Iterator[str]:
            for batch in read_docs(scratch / "docs-train.arrow"):
                bar.advance(len(batch))
                yield from batch

        tokenizer = train_tokenizer(
            tok_cfg.train,
            data.objective,
            texts(),
            length=documents,
            model_max_length=limit or data.block_size,
        )
    return tokenizer, {"trained": kind, "vocab_size": len(tokenizer)}


def _tokenize_and_pack(
    config: Config,
    tokenizer,
    encoder,
    batches: Iterator[tuple[str, list[str]]],
    documents: int | None,
    dtype: np.dtype,
    out: Path,
    counts: dict[str, SplitCounts],
    key: str,
) -> None:
    """Tokenize (split, documents) batches (in threads or `num_proc` processes), chunk each split's id
    stream into blocks and write them in shards: one pass, memory bounded by a few batches."""
    data = config.data
    wrap = (tokenizer.cls_token_id, tokenizer.sep_token_id) if data.objective == "mlm" else None
    packers = {s: Packer(data.block_size, dtype=dtype, remainder=data.remainder, wrap=wrap) for s in SPLITS}
    writers = {split: BlockWriter(out / split, dtype) for split in SPLITS}
    with console.progress("tokenizing", total=documents, extra="documents") as bar:
        for split, ids, done in encoded_batches(encoder, batches, data.num_proc or 1):
            writers[split].write(packers[split].add(ids))
            bar.advance(done)
    for split, packer in packers.items():
        last = packer.finish()
        if last is not None:
            writers[split].write([last])
        writers[split].close(fingerprint=f"{key[:16]}-{split}")
        count = counts[split]
        count.tokens, count.blocks, count.dropped_tokens = packer.tokens, packer.blocks, packer.dropped_tokens
