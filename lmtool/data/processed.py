"""A processed data directory (what `lmtool preprocess` writes: train/, validation/, tokenizer/,
manifest.json) as every reader opens it: its manifest read and checked once, here, against the config
or the model that reads it, and whether it is stale (made from other inputs than the config gives)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtool import console
from lmtool.config import Config, ConfigError
from lmtool.data.manifest import MANIFEST, read_manifest
from lmtool.errors import LmtoolError
from lmtool.runlock import DirLock, LockBusy


@dataclass
class Processed:
    """An opened processed directory: its manifest ({} when it has none), tokenizer and splits."""

    path: Path
    manifest: dict
    tokenizer: Any
    train: Any  # datasets.Dataset
    validation: Any  # datasets.Dataset, or None when there is no (non-empty) validation split


def ensure_processed(config: Config, preprocess: Callable[[Config], Path]) -> Path:
    """data.processed_dir, made by `preprocess` first if it does not exist (lmtool.tasks.registry's, which
    knows how each fine-tune task builds its data). Every process of the job calls this
    before the process group exists; the lock file beside processed_dir (on the shared filesystem, so
    across nodes too) lets the first one preprocess while the others wait for it without a time limit and
    then find the directory made. If it fails, the directory is not made and the waiting processes exit 2
    naming it (its error is in its own output) rather than preprocess again, one after the other."""
    processed = Path(os.path.expanduser(config.data.processed_dir))
    if processed.exists():
        return processed
    console.info(f"{processed} does not exist: preprocessing first")
    try:
        return preprocess(config)
    except LockBusy as busy:
        holder = busy.holder
    with DirLock(
        processed,
        "data.processed_dir",
        on_wait=lambda h: console.info(f"waiting for {h} to preprocess {processed}"),
    ):
        pass  # taken once its holder is done
    if not processed.exists():
        raise LmtoolError(
            f"data.processed_dir: {holder}, which was preprocessing {processed}, ended without making it "
            "(its error is in its own output); fix that and run again"
        )
    return processed


def open_for_pretraining(processed: Path, config: Config) -> Processed:
    """The tokenizer and splits of language-model data, checked against data.objective and block_size."""
    manifest = read_manifest(processed) or {}
    for key in ("objective", "block_size"):
        made, wanted = manifest.get(key), getattr(config.data, key)
        if made is not None and made != wanted:
            raise ConfigError(
                f"data.{key}",
                f"{processed} was preprocessed with {made}; "
                "run `lmtool preprocess --overwrite` with this config or point data.processed_dir elsewhere",
                value=wanted,
            )
    if not (processed / "train").is_dir() or not (processed / "tokenizer").is_dir():
        raise LmtoolError(
            f"{processed} is not a processed data directory (no train/ or tokenizer/): run `lmtool preprocess` first"
        )
    tokenizer, train, validation = _load(processed)
    return Processed(processed, manifest, tokenizer, train, validation)


def open_for_finetuning(processed: Path, config: Config) -> Processed:
    """The manifest, tokenizer and splits of labeled data, checked against finetune.task; a validation
    split without examples is None."""
    manifest = read_manifest(processed)
    if manifest is None:
        raise LmtoolError(
            f"{processed} has no readable {MANIFEST}: run `lmtool preprocess` with this config first"
        )
    if manifest.get("kind") != "finetune":
        raise ConfigError(
            "data.processed_dir",
            f"{processed} holds language-model data, not labeled data for fine-tuning",
            has_value=False,
            hint="point data.processed_dir elsewhere (fine-tuning data is preprocessed with the finetune: section)",
        )
    if manifest.get("task") != config.finetune.task:
        raise ConfigError(
            "finetune.task",
            f"{processed} was preprocessed for task {manifest.get('task')}",
            value=config.finetune.task,
            hint="run `lmtool preprocess --overwrite` with this config",
        )
    tokenizer, train, validation = _load(processed)
    if len(train) == 0:
        raise LmtoolError(f"{processed / 'train'} holds no examples")
    validation = validation if validation is not None and len(validation) else None
    return Processed(processed, manifest, tokenizer, train, validation)


def _load(processed: Path):
    """(tokenizer, train split, validation split or None)."""
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(processed / "tokenizer")
    train = datasets.load_from_disk(str(processed / "train"))
    validation_dir = processed / "validation"
    validation = datasets.load_from_disk(str(validation_dir)) if validation_dir.is_dir() else None
    return tokenizer, train, validation


def is_stale(processed: Path, config: Config) -> bool:
    """True when `lmtool preprocess` made `processed` with another content key than this config gives
    (changed corpus, cleaning, tokenizer or data settings). A directory without a key (not made by
    lmtool preprocess) or a config without sources cannot be compared and is used as is."""
    from lmtool.data import sources as src
    from lmtool.data.preprocess import content_key

    made = (read_manifest(processed) or {}).get("key")
    data = config.data
    if made is None or not data.sources:
        return False
    try:
        sources = [src.resolve(s, f"data.sources.{i}") for i, s in enumerate(data.sources)]
        sources += [
            src.resolve(s, f"data.validation_sources.{i}") for i, s in enumerate(data.validation_sources)
        ]
    except LmtoolError as exc:
        console.warning(f"cannot check that {processed} is up to date ({exc}); training on it as is")
        return False
    return content_key(config, sources) != made


def check_tokenizer(path: Path, manifest: dict, tokenizer, model: str) -> None:
    """The data's ids must mean what the model's tokenizer means: same fingerprint (older manifests
    have none: then at least the same vocabulary size)."""
    from lmtool.data.identity import tokenizer_identity

    hint = "pass the raw text with --data FILE instead"
    stored = manifest.get("tokenizer_fingerprint")
    if stored is not None:
        own = tokenizer_identity(tokenizer)
        if stored != own:
            raise LmtoolError(
                f"{path} was tokenized with a different tokenizer (fingerprint {stored[:12]}, {path / 'tokenizer'}) "
                f"than the model's ({own[:12]}, {model}): {hint}"
            )
        return
    vocab = manifest.get("vocab_size")
    if vocab is not None and vocab != len(tokenizer):
        raise LmtoolError(
            f"{path} was tokenized with a different tokenizer (vocab {vocab}) than the model's ({len(tokenizer)}): {hint}"
        )
