"""Train a tokenizer with the `tokenizers` library, or load an existing one, as a fast HF tokenizer.

Saved with `save_pretrained`, so `AutoTokenizer.from_pretrained(dir)` gives back the same
tokenizer with its special tokens set: GPT-2 style byte-level BPE uses `<|endoftext|>` as
bos/eos/unk/pad; BERT style WordPiece uses [PAD] [UNK] [CLS] [SEP] [MASK].
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from lmtool.config import TokenizerConfig, TokenizerTrainConfig, looks_like_hub_id
from lmtool.errors import ConfigError
from lmtool.hub import require_hub

EOT = "<|endoftext|>"
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_type(train: TokenizerTrainConfig, objective: str) -> str:
    if train.type != "auto":
        return train.type
    return "wordpiece" if objective == "mlm" else "bpe"


def train_tokenizer(
    train: TokenizerTrainConfig,
    objective: str,
    texts: Iterator[str],
    *,
    length: int,
    model_max_length: int,
    show_progress: bool,
):
    """Train on `texts` (the cleaned training split) and wrap the result as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    kind = train_type(train, objective)
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=train.vocab_size,
            min_frequency=train.min_frequency,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=show_progress,
        )
        tok.train_from_iterator(texts, trainer, length=length)
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token=EOT,
            eos_token=EOT,
            unk_token=EOT,
            pad_token=EOT,
            model_max_length=model_max_length,
        )
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=train.lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=train.vocab_size,
        min_frequency=train.min_frequency,
        special_tokens=list(BERT_SPECIALS),
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer, length=length)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


def load_tokenizer(config: TokenizerConfig, objective: str):
    """An existing fast tokenizer, checked for the special tokens the objective needs."""
    from transformers import AutoTokenizer

    name = os.path.expanduser(config.path or "")
    if not os.path.isdir(name) and not looks_like_hub_id(name):
        raise ConfigError("tokenizer.path", "directory not found (and not a hub name)", value=config.path)
    require_hub(name, "tokenizer.path")
    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=config.trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/... for a bad tokenizer
        raise ConfigError(
            "tokenizer.path",
            f"cannot load a tokenizer: {str(exc).strip().splitlines()[0]}",
            value=config.path,
        ) from None
    if not getattr(tok, "is_fast", False):
        raise ConfigError(
            "tokenizer.path",
            "is not a fast (Rust) tokenizer; lmtool needs one for batched tokenization",
            value=config.path,
        )
    if objective == "clm":
        if tok.eos_token is None:
            raise ConfigError(
                "tokenizer.path",
                "has no eos token to join documents with (data.objective is clm)",
                value=config.path,
            )
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    else:
        missing = [
            name
            for name in ("cls_token", "sep_token", "mask_token", "pad_token")
            if getattr(tok, name) is None
        ]
        if missing:
            raise ConfigError(
                "tokenizer.path",
                f"lacks {', '.join(missing)} needed for data.objective mlm",
                value=config.path,
            )
    return tok


def tokenizer_fingerprint(config: TokenizerConfig) -> dict:
    """Identifies an existing tokenizer for the cache key: its files' content, or its hub name."""
    if config.path is None:
        return {}
    path = Path(os.path.expanduser(config.path))
    if not path.is_dir():
        return {"hub": config.path}
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return {"sha256": digest.hexdigest()}


def encode_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    """Ids without the tokenizer's own special tokens (the packer adds the separators), straight from
    the Rust backend: no offsets, no Python-side BatchEncoding."""
    backend = tokenizer.backend_tokenizer
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    return [enc.ids for enc in encode(texts, add_special_tokens=False)]
