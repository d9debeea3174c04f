"""What `lmtool evaluate` scores: token rows from a processed data dir, or documents from a raw file.

A processed dir is used as `lmtool preprocess` wrote it (its blocks are what the model trained on);
raw text (.txt, .jsonl, ... as for `data.sources`) is tokenized with the model's own tokenizer, each
record (a .txt file as written, unless `evaluate.doc_split` cuts it; a JSONL/CSV row) on its own, with no
special tokens: the causal scorer joins records with EOS, the masked one packs [CLS] ... [SEP] blocks.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmtool.config import EvaluateConfig, SourceConfig
from lmtool.data.manifest import has_manifest, manifest_of
from lmtool.data.processed import check_tokenizer
from lmtool.errors import ConfigError, LmtoolError


@dataclass
class EvalData:
    """Token ids to score, grouped into documents (raw) or blocks (processed)."""

    rows: list[np.ndarray]
    processed: bool  # rows are preprocess blocks (True) or one row per raw document (False)
    label: str


def load_processed(path: Path, cfg: EvaluateConfig, tokenizer, causal: bool) -> EvalData:
    """The blocks of one split (the first `max_samples` of them), checked against the model's tokenizer."""
    manifest = manifest_of(path)
    if manifest.get("kind") == "finetune":
        raise LmtoolError(
            f"{path} holds labeled data for fine-tuning but {cfg.model} is a language model, not a fine-tuned one"
        )
    objective = manifest.get("objective")
    if objective is not None and (objective == "clm") != causal:
        kind = "causal" if causal else "masked"
        raise LmtoolError(
            f"{path} holds {objective} data but the model is a {kind} LM: evaluate it on matching data"
        )
    check_tokenizer(path, manifest, tokenizer, cfg.model)
    dataset = load_split(path, cfg)
    rows = [np.asarray(row, dtype=np.int64) for row in dataset.with_format("numpy")["input_ids"]]
    if not rows:
        raise LmtoolError(f"{path / cfg.split} has no blocks to evaluate")
    return EvalData(rows, True, f"{path}:{cfg.split}")


def load_split(path: Path, cfg: EvaluateConfig):
    """evaluate.split of processed dir `path` (its first `max_samples` rows), or exit 2 naming the splits it has."""
    import datasets

    split_dir = path / cfg.split
    if not split_dir.is_dir():
        have = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name != "tokenizer")
        raise ConfigError(
            "evaluate.split",
            f"{path} has no such split (it has: {', '.join(have) or 'none'})",
            value=cfg.split,
        )
    datasets.disable_progress_bars()
    dataset = datasets.load_from_disk(str(split_dir))
    if cfg.max_samples is not None:
        dataset = dataset.select(range(min(cfg.max_samples, len(dataset))))
    return dataset


def load_raw(path: str, cfg: EvaluateConfig, tokenizer) -> EvalData:
    """One row of token ids per record (no special tokens), read like a `data.sources` entry."""
    import datasets

    from lmtool.data import sources
    from lmtool.data.tokenizer import encode_batch

    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()  # building a throwaway cache of the file is not progress worth showing
    source = sources.resolve(
        SourceConfig(path=path, text_field=cfg.text_field, doc_split=cfg.doc_split), "evaluate.data"
    )
    texts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lmtool-eval-") as cache:
        for batch in sources.iter_texts(
            source, streaming=False, encoding_errors="replace", cache_dir=Path(cache)
        ):
            texts.extend(t for t in batch if t and t.strip())
            if cfg.max_samples is not None and len(texts) >= cfg.max_samples:
                texts = texts[: cfg.max_samples]
                break
    if not texts:
        raise LmtoolError(f"evaluate.data: {path} has no text to evaluate")
    rows = [np.asarray(ids, dtype=np.int64) for ids in encode_batch(tokenizer, texts)]
    return EvalData(rows, False, path)


def load_data(cfg: EvaluateConfig, default_dir: str, tokenizer, causal: bool) -> EvalData:
    """`evaluate.data` (or the config's processed dir) as a processed dir or a raw text source."""
    name = cfg.data or default_dir
    path = Path(name).expanduser()
    if has_manifest(path):
        return load_processed(path, cfg, tokenizer, causal)
    if not path.exists():
        hint = (
            "" if cfg.data else " (the default, data.processed_dir): run `lmtool preprocess` or pass --data"
        )
        raise ConfigError("evaluate.data", f"not found{hint}", value=name)
    return load_raw(str(path), cfg, tokenizer)


def labeled_source(cfg: EvaluateConfig, default_dir: str) -> tuple[str, Path]:
    """(the name given, its path) of a fine-tuned model's evaluation data: evaluate.data, else the config's
    processed dir; exit 2 when it does not exist."""
    name = cfg.data or default_dir
    path = Path(name).expanduser()
    if not path.exists():
        hint = (
            "" if cfg.data else " (the default, data.processed_dir): run `lmtool preprocess` or pass --data"
        )
        raise ConfigError("evaluate.data", f"not found{hint}", value=name)
    return name, path


def checked_max_length(cfg: EvaluateConfig, positions: int | None) -> int | None:
    """evaluate.max_length (--max-length), refused past the model's `positions`."""
    length = cfg.max_length
    if length is not None and positions is not None and length > positions:
        raise ConfigError(
            "evaluate.max_length",
            f"is larger than the model's {positions} positions ({cfg.model})",
            value=length,
        )
    return length
