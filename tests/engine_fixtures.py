"""Tiny processed data directories and configs for the training-engine tests.

The data is a small synthetic language (a noisy Markov chain over 40 words) that a 2-layer,
32-wide model learns in a few hundred steps; the layout is exactly what `lmtool preprocess` writes
(train/, validation/, tokenizer/, manifest.json), so these fixtures can be swapped for real
preprocess output.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

WORDS = [f"w{i}" for i in range(40)]
CLM_SPECIAL = ["<|endoftext|>"]
MLM_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# The test configs' logging: no end-of-run report nor TensorBoard (each costs a second or more of CPU per
# run, over a suite of ~150 runs); tests/test_report.py and tests/test_trackers.py turn them on.
QUIET_LOGGING = {"tensorboard": False, "report": False}


def _documents(count: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    docs = []
    for _ in range(count):
        word = rng.randrange(len(WORDS))
        doc = []
        for _ in range(rng.randint(6, 20)):
            doc.append(WORDS[word])
            word = (3 * word + 7 + (rng.random() < 0.2)) % len(WORDS)
        docs.append(doc)
    return docs


def _tokenizer(objective: str):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = CLM_SPECIAL if objective == "clm" else MLM_SPECIAL
    vocab = {token: i for i, token in enumerate(special + WORDS)}
    unk = "<|endoftext|>" if objective == "clm" else "[UNK]"
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if objective == "clm":
        names = {"bos_token": unk, "eos_token": unk, "unk_token": unk, "pad_token": unk}
    else:
        names = {
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        }
    return PreTrainedTokenizerFast(tokenizer_object=core, **names)


def _blocks(docs: list[list[str]], tokenizer, objective: str, block_size: int) -> list[list[int]]:
    ids = [tokenizer.convert_tokens_to_ids(doc) for doc in docs]
    if objective == "clm":
        stream = [t for doc in ids for t in [*doc, tokenizer.eos_token_id]]
        return [stream[i : i + block_size] for i in range(0, len(stream) - block_size + 1, block_size)]
    body = block_size - 2
    stream = [t for doc in ids for t in doc]
    return [
        [tokenizer.cls_token_id, *stream[i : i + body], tokenizer.sep_token_id]
        for i in range(0, len(stream) - body + 1, body)
    ]


def make_processed_dir(
    path: Path, *, objective: str = "clm", block_size: int = 16, documents: int = 120, seed: int = 0
) -> Path:
    """Write a processed data directory (about 10 validation blocks, the rest train) and return it."""
    import datasets
    import numpy as np

    datasets.disable_progress_bars()
    path = Path(path)
    tokenizer = _tokenizer(objective)
    tokenizer.save_pretrained(path / "tokenizer")
    splits = {
        "train": _documents(documents, seed),
        "validation": _documents(max(documents // 10, 4), seed + 1),
    }
    counts = {}
    for split, docs in splits.items():
        blocks = _blocks(docs, tokenizer, objective, block_size)
        data = datasets.Dataset.from_dict({"input_ids": np.asarray(blocks, dtype=np.uint16)})
        data.save_to_disk(str(path / split))
        counts[split] = {"documents": len(docs), "tokens": len(blocks) * block_size, "blocks": len(blocks)}
    manifest = {
        "objective": objective,
        "block_size": block_size,
        "vocab_size": len(tokenizer),
        "splits": counts,
    }
    (path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return path


def tiny_config(
    tmp_path: Path,
    processed: Path,
    *,
    name: str = "cfg",
    objective: str = "clm",
    arch: str = "gpt2",
    model_overrides: dict | None = None,
    **train,
) -> Path:
    """A config for a 2-layer, 32-wide model on `processed`, fp32, no compile, no report or TensorBoard;
    `train` overrides train.*."""
    model_config = {
        "gpt2": {
            "n_layer": 2,
            "n_head": 2,
            "n_embd": 32,
            "n_positions": 64,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
        },
        "bert": {
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        },
        "lstm": {"num_layers": 2, "hidden_size": 32, "dropout": 0.0},
    }[arch]
    model_config.update(model_overrides or {})
    block_size = json.loads((processed / "manifest.json").read_text())["block_size"]
    config = {
        "run": {"name": "tiny", "output_dir": str(tmp_path / "run"), "seed": 7},
        "data": {"processed_dir": str(processed), "objective": objective, "block_size": block_size},
        "model": {"arch": arch, "config": model_config},
        "train": {
            "batch_size": 4,
            "lr": 3e-3,
            "warmup_steps": 5,
            "precision": "fp32",
            "compile": False,
            "max_steps": 40,
            "log_every": 1,
            "eval_every": 0,
            "save_every": 0,
            **train,
        },
        "logging": QUIET_LOGGING,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def read_metrics(run_dir: Path, kind: str = "train") -> dict[int, dict]:
    """metrics.jsonl records of one type, by step (the last record wins)."""
    records = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["type"] == kind:
            records[record["step"]] = record
    return records
