"""Tiny saved models for the evaluate/generate tests: a GPT-2 and a BERT with small trained tokenizers.

Built from configs in about a second, so the tests need no network and no other lmtool command.
Test modules wrap `save_causal_model` / `save_masked_model` in module-scoped fixtures.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

from tests.conftest import Result

WORDS = [
    "the",
    "king",
    "and",
    "the",
    "queen",
    "walk",
    "to",
    "the",
    "castle",
    "while",
    "a",
    "dog",
    "sleeps",
    "near",
    "the",
    "river",
    "in",
    "the",
    "morning",
    "light",
    "of",
    "spring",
    "every",
    "bird",
    "sings",
    "a",
    "song",
    "about",
    "the",
    "sea",
    "and",
    "the",
    "hills",
]


def corpus(lines: int = 200) -> list[str]:
    """Deterministic English-like sentences (enough to train a few hundred merges)."""
    out = []
    for i in range(lines):
        words = [WORDS[(i * 7 + j * 3 + (i * j) % 5) % len(WORDS)] for j in range(6 + i % 9)]
        out.append(" ".join(words).capitalize() + ".")
    return out


def _bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus(), trainer)
    eot = "<|endoftext|>"
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot, pad_token=eot
    )


def _wordpiece_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(corpus(), trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def save_causal_model(path: Path) -> Path:
    """A 2-layer, 64-wide GPT-2 (context 64) with a 400-token byte-level BPE, saved like `final/`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = _bpe_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=64, n_head=2, n_positions=64, vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_masked_model(path: Path) -> Path:
    """A 2-layer, 64-wide BERT masked LM with a 300-token WordPiece vocabulary."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = _wordpiece_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=64, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    BertForMaskedLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run_inproc(*args: str, input: str | None = None) -> Result:
    """Run the CLI in this process (no 6 s import per call); stdout/stderr captured as a user sees them."""
    from lmtool import console
    from lmtool.cli import main

    out, err = io.StringIO(), io.StringIO()
    stdin = io.StringIO(input if input is not None else "")
    old_stdin = sys.stdin
    sys.stdin = stdin
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0
    finally:
        sys.stdin = old_stdin
        console.configure()
    return Result(code, out.getvalue(), err.getvalue())


def save_processed(path: Path, model_dir: Path, *, objective: str, block_size: int, texts: list[str]) -> Path:
    """A processed data dir as `lmtool preprocess` lays it out, tokenized with the model's tokenizer:
    validation/ blocks (documents joined with EOS, or [CLS] ... [SEP] blocks), tokenizer/, manifest.json."""
    import json

    import numpy as np
    from datasets import Dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    if objective == "clm":
        stream = np.concatenate([np.array(i + [tok.eos_token_id]) for i in ids])
        blocks = stream[: len(stream) // block_size * block_size].reshape(-1, block_size)
    else:
        stream = np.concatenate([np.array(i + [tok.sep_token_id]) for i in ids])
        inner = block_size - 2
        body = stream[: len(stream) // inner * inner].reshape(-1, inner)
        blocks = np.hstack(
            [np.full((len(body), 1), tok.cls_token_id), body, np.full((len(body), 1), tok.sep_token_id)]
        )
    Dataset.from_dict({"input_ids": blocks.astype(np.uint16).tolist()}).save_to_disk(str(path / "validation"))
    tok.save_pretrained(path / "tokenizer")
    from lmtool.data.identity import tokenizer_identity

    manifest = {"objective": objective, "block_size": block_size, "vocab_size": len(tok), "splits": {},
                "tokenizer_fingerprint": tokenizer_identity(tok)}  # fmt: skip
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def save_lstm_model(path: Path) -> Path:
    """lmtool's LSTM baseline (2 x 64) with the same byte-level BPE as the GPT-2 fixture."""
    import torch

    from lmtool.lstm import LstmConfig, LstmForCausalLM

    tokenizer = _bpe_tokenizer()
    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    config = LstmConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_layers=2,
        initializer_range=0.3,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    model = LstmForCausalLM(config)
    with torch.no_grad():  # trained biases: zero inputs (padding) then move the state, as in a real model
        for name, param in model.lstm.named_parameters():
            if "bias" in name:
                param.uniform_(-1.0, 1.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
