"""`lmtool preprocess` with a `finetune:` section: labeled sources → train/, validation/, test/
(token ids without padding, labels), tokenizer/ and manifest.json, built in preprocess.py's work
directory so the content-keyed cache, the lock and the atomic install are the same as for LM data.

Examples are held in memory: the label set must be known (from the whole training split) before
anything is encoded, and fine-tuning sets are small next to pretraining corpora.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lmtool import __version__, console
from lmtool.config import Config, FinetuneConfig, looks_like_hub_id
from lmtool.data import sources as src
from lmtool.data.documents import HoldOut
from lmtool.data.identity import tokenizer_identity
from lmtool.data.labeled import (
    check_labels,
    encode_classification,
    encode_tokens,
    label_counts,
    label_names,
    sort_labels,
    warn_mixed_labels,
)
from lmtool.data.labeled_rows import Example, read_examples
from lmtool.data.manifest import write_manifest_file
from lmtool.errors import ConfigError, LmtoolError
from lmtool.hub import require_hub

# data keys only language-model preprocessing reads: left out of the finetune cache key
LM_ONLY = ("block_size", "objective", "remainder", "clean", "streaming", "streaming_threshold_mb")
WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".onnx")


def test_sources(config: Config) -> list[src.Source]:
    return [src.resolve(s, f"data.test_sources.{i}") for i, s in enumerate(config.data.test_sources)]


def key_parts(config: Config) -> dict:
    """What the finetune output depends on beyond the training/validation sources: the finetune
    section, the test sources and the tokenizer's files (not the model's weights)."""
    name, _ = tokenizer_source(config)
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.iterdir() if p.is_file() and p.suffix not in WEIGHTS):
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
        files = {"sha256": digest.hexdigest()}
    else:
        files = {"hub": name}
    return {
        # LoRA is training only; packing happens when training starts: neither needs new preprocessing
        "finetune": config.finetune.model_dump(mode="json", exclude={"lora": True, "sft": {"packing": True}}),
        "test_sources": [src.fingerprint(s) for s in test_sources(config)],
        "tokenizer_files": files,
        "data": config.data.model_dump(mode="json", exclude=set(LM_ONLY) | {"processed_dir", "num_proc"}),
    }


def tokenizer_source(config: Config) -> tuple[str, str]:
    """(name, config key) of the tokenizer: tokenizer.path, else the model fine-tuned (model.init_from)."""
    if config.tokenizer.path is not None:
        return config.tokenizer.path, "tokenizer.path"
    if config.model.init_from is None:
        raise ConfigError(
            "model.init_from",
            "finetune starts from a pretrained model: set it (or tokenizer.path)",
            value=None,
        )
    return config.model.init_from, "model.init_from"


def load_finetune_tokenizer(config: Config, *, word_level: bool = False, needs_fast: bool = False):
    """The model's tokenizer; `needs_fast`: a task that reads word ids or offsets needs a fast one, and
    `word_level` (labels per word) gives byte-level BPE tokenizers add_prefix_space, so a word tokenizes
    as it does inside running text."""
    from transformers import AutoTokenizer

    name, key = tokenizer_source(config)
    path = os.path.expanduser(name)
    if not os.path.isdir(path) and not looks_like_hub_id(name):
        raise ConfigError(key, "directory not found (and not a hub name)", value=name)
    require_hub(path, key)
    trust = config.tokenizer.trust_remote_code or config.model.trust_remote_code
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        if word_level and getattr(tokenizer, "add_prefix_space", None) is False:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust, add_prefix_space=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/... for a bad tokenizer
        raise ConfigError(
            key, f"cannot load a tokenizer: {str(exc).strip().splitlines()[0]}", value=name
        ) from None
    if needs_fast and not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            key,
            f"is not a fast (Rust) tokenizer; {config.finetune.task} needs its word ids / offsets",
            value=name,
        )
    if tokenizer.pad_token is None:  # collate pads batches; the pad positions are masked out
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def build_labeled(
    config: Config, train_sources, val_sources, out: Path, scratch: Path, key: str, *, word_level: bool
) -> None:
    """Read, check, tokenize and save every split of the labeled data into `out`: a label per text (or
    pair), or with `word_level` a tag per word."""
    cfg, data = config.finetune, config.data
    tests = test_sources(config)
    tokenizer = load_finetune_tokenizer(config, word_level=word_level, needs_fast=word_level)
    cache = scratch / "hf-cache"
    splits: dict[str, list[Example]] = {"train": [], "validation": []}
    hold_out = HoldOut(data.seed, data.validation_fraction if not val_sources else 0.0)
    for source in train_sources:
        for example in read_examples(source, cfg, data.encoding_errors, cache, word_level):
            splits["validation" if hold_out(_identity(example)) else "train"].append(example)
    for name, sources in (("validation", val_sources), ("test", tests)):
        for source in sources:
            splits.setdefault(name, []).extend(
                read_examples(source, cfg, data.encoding_errors, cache, word_level)
            )
    if not splits["train"]:
        raise LmtoolError("no training examples in data.sources (after holding out data.validation_fraction)")
    labels = _labels(splits, config, word_level)
    counts: dict[str, dict] = {}
    for split, examples in splits.items():
        dataset, counts[split] = encode_examples(tokenizer, examples, cfg, labels, word_level)
        if examples:  # datasets cannot load an empty split back: leave it out (the manifest counts 0)
            dataset.save_to_disk(str(out / split))
    write_manifest(
        out,
        config,
        key,
        tokenizer,
        counts,
        (train_sources, val_sources),
        problem=None if word_level else cfg.problem,
        labels=labels,
        num_labels=1 if not word_level and cfg.problem == "regression" else len(labels),
        **_fields(cfg, word_level),
        stride=cfg.stride if word_level else None,
        label_all_subtokens=cfg.label_all_subtokens if word_level else None,
    )
    shown = ", ".join(f"{counts[s]['examples']} {s}" for s in counts)
    console.info(f"preprocessed {shown} examples ({len(labels)} labels, max_length {cfg.max_length})")


def write_manifest(
    out: Path, config: Config, key: str, tokenizer, counts: dict, sources: tuple[list, list], **fields
) -> None:
    """The tokenizer and manifest.json of a processed fine-tuning directory, the last files a task's
    builder writes: what every task records (`sources`: the train and validation sources), and the task's
    `fields` (problem, labels, num_labels: none by default)."""
    tokenizer.save_pretrained(str(out / "tokenizer"))
    train_sources, val_sources = sources
    fields = {"problem": None, "labels": [], "num_labels": 0, **fields}
    manifest = {
        "kind": "finetune",
        "key": key,
        "lmtool_version": __version__,
        "task": config.finetune.task,
        **fields,
        "max_length": config.finetune.max_length,
        "counts": counts,
        "vocab_size": len(tokenizer),
        "tokenizer_fingerprint": tokenizer_identity(tokenizer),
        "tokenizer": {"path": tokenizer_source(config)[0]},
        "sources": [s.label for s in train_sources],
        "validation_sources": [s.label for s in val_sources],
        "test_sources": [s.label for s in test_sources(config)],
    }
    write_manifest_file(out, manifest)


def encode_examples(
    tokenizer, examples: list[Example], cfg: FinetuneConfig, labels: list[str], word_level: bool
):
    """The examples as a `datasets.Dataset` of model inputs and labels (`word_level`: per word), and their
    counts for the manifest; `labels` is the manifest's label list (checked against the examples beforehand)."""
    import datasets

    if word_level:
        columns, numbers = encode_tokens(tokenizer, examples, cfg, labels)
    else:
        columns, truncated = encode_classification(tokenizer, examples, cfg, labels)
        numbers = {"truncated": truncated}
    counts = {"examples": len(examples), **numbers, "labels": label_counts(examples, cfg, word_level)}
    features = datasets.Features({name: _feature(name, cfg, word_level) for name in columns})
    return datasets.Dataset.from_dict(columns, features=features), counts


def _identity(example: Example) -> bytes:
    """What decides an example's side of the hold-out: its input, not its label."""
    payload = example.tokens if example.tokens is not None else [example.text, example.pair]
    return json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _labels(splits: dict[str, list[Example]], config: Config, word_level: bool) -> list[str]:
    cfg = config.finetune
    if not word_level and cfg.problem == "regression":
        return []
    if not word_level:
        warn_mixed_labels((e for examples in splits.values() for e in examples), cfg)
    if cfg.labels is not None:
        labels = list(cfg.labels)
    else:
        labels = sort_labels(n for e in splits["train"] for n in label_names(e, cfg))
    for split, examples in splits.items():
        check_labels(examples, cfg, labels, split)
    return labels


def _fields(cfg, word_level: bool) -> dict:
    if word_level:
        return {
            "tokens_field": cfg.tokens_field,
            "tags_field": cfg.tags_field,
            "conll": cfg.conll.model_dump(),
        }
    return {
        "text_field": cfg.text_field,
        "text_pair_field": cfg.text_pair_field,
        "label_field": cfg.label_field,
    }


def _feature(name: str, cfg, word_level: bool):
    import datasets

    ints = {"input_ids": "int32", "token_type_ids": "int8", "word_ids": "int32", "length": "int32"}
    if name in ints:
        value = datasets.Value(ints[name])
        return value if name == "length" else datasets.List(value)
    if name == "example_id":
        return datasets.Value("int64")
    if word_level:
        return datasets.List(datasets.Value("int64"))
    if cfg.problem == "multi_label":
        return datasets.List(datasets.Value("float32"))
    return datasets.Value("float32" if cfg.problem == "regression" else "int64")
