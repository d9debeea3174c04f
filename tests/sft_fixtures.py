"""A tiny word-level tokenizer and a tiny random GPT-2 for SFT tests (no download, fast)."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

LETTERS = list("abcdefgh")
SPECIAL = ["<unk>", "<pad>", "<eos>"]
WORDS = ["reverse:", "###", "Instruction:", "Response:", "hello", "world", "system", "user", "assistant"]


def word_tokenizer():
    """Whitespace-split word tokenizer over the reversal task's words, with <eos> and <pad>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL + WORDS + LETTERS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )


def tiny_gpt2(path: Path, seed: int = 0, attn: str = "sdpa") -> Path:
    """A random 2-layer, 64-wide GPT-2 with the word tokenizer, saved at `path`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = word_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=64, n_layer=2, n_head=2,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, attn_implementation=attn,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def reversal_rows(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, held-out) prompt/response rows: "reverse: a b c" -> "c b a" over 3 of 8 letters."""
    rows = [
        {"prompt": "reverse: " + " ".join(t), "response": " ".join(reversed(t))}
        for t in itertools.product(LETTERS, repeat=3)
    ]
    random.Random(seed).shuffle(rows)
    return rows[40:], rows[:40]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
