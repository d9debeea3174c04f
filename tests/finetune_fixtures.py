"""Tiny pretrained encoders and learnable labeled data for the `lmtool finetune` tests.

A 2-layer, 64-wide BERT with a 300-token WordPiece vocabulary (the one tests/eval_fixtures.py trains),
saved with save_pretrained like any pretrained model, and two tasks it learns in a few seconds from a
random start: classification (is the keyword "king" in the text?) and NER (words of a small gazetteer).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

from tests.engine_fixtures import QUIET_LOGGING
from tests.eval_fixtures import WORDS, _wordpiece_tokenizer

TINY_BERT = dict(
    num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
    max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)  # fmt: skip
KEYWORD = "king"
GAZETTEER = {"king": "PER", "queen": "PER", "castle": "LOC", "river": "LOC", "sea": "LOC"}
FILLER = sorted(set(WORDS) - set(GAZETTEER))


def save_tiny_bert(path: Path, *, dropout: float = 0.0) -> Path:
    """A randomly initialised tiny BERT (no task head) and its tokenizer in `path`."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = _wordpiece_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(
        **{**TINY_BERT, "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout},
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


def save_classifier(
    path: Path, labels: list[str], problem: str | None = None, bias: list[float] | None = None, auto=None
) -> Path:
    """A randomly initialised tiny BERT classifier (logits = `bias` for every text, if given) and its tokenizer;
    `auto` another task's class (e.g. BertForTokenClassification)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = _wordpiece_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(**TINY_BERT, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
                        problem_type=problem)  # fmt: skip
    model = (auto or BertForSequenceClassification)(config)
    if bias is not None:  # logits = bias whatever the text
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def keyword_rows(count: int, seed: int) -> list[dict]:
    """Texts of 3-14 words; label royal when the keyword is in the text (half of them), else plain."""
    rng = random.Random(seed)
    vocab = sorted(set(WORDS) - {KEYWORD})
    rows = []
    for _ in range(count):
        words = [rng.choice(vocab) for _ in range(rng.randint(3, 14))]
        if rng.random() < 0.5:
            words[rng.randrange(len(words))] = KEYWORD
        rows.append({"text": " ".join(words), "label": "royal" if KEYWORD in words else "plain"})
    return rows


def gazetteer_rows(count: int, seed: int) -> list[dict]:
    """Sentences of 3-14 words, gazetteer words tagged B-<type>, the rest O."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        tokens = [
            rng.choice(sorted(GAZETTEER)) if rng.random() < 0.25 else rng.choice(FILLER)
            for _ in range(rng.randint(3, 14))
        ]
        tags = [f"B-{GAZETTEER[t]}" if t in GAZETTEER else "O" for t in tokens]
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def finetune_config(
    tmp_path: Path,
    model: Path,
    finetune: dict,
    train: Path,
    validation: Path | None = None,
    *,
    name: str = "c",
    **train_settings,
) -> Path:
    """A finetune config: `train_settings` override train.* (fp32, no compile, log every step; no report or
    TensorBoard)."""
    config = {
        "run": {"name": "ft", "output_dir": str(tmp_path / "run"), "seed": 0},
        "data": {
            "sources": [{"path": str(train)}],
            "validation_sources": [{"path": str(validation)}] if validation else [],
            "processed_dir": str(tmp_path / "processed"),
        },
        "model": {"init_from": str(model)},
        "finetune": finetune,
        "train": {"precision": "fp32", "compile": False, "log_every": 1, **train_settings},
        "logging": QUIET_LOGGING,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def load_for_task(init_from: str, task: str, *args, **kwargs):
    """`init_from` with the head of the fine-tune task called `task` (its spec's load_model)."""
    from lmtool.tasks.registry import finetune_spec

    return finetune_spec(task).load_model(init_from, *args, **kwargs)
