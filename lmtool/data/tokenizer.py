"""Train a tokenizer with the `tokenizers` library, or load an existing one, as a fast HF tokenizer.

Saved with `save_pretrained`, so `AutoTokenizer.from_pretrained(dir)` gives back the same
tokenizer with its special tokens set: GPT-2 style byte-level BPE uses `<|endoftext|>` as
bos/eos/unk/pad; BERT style WordPiece uses [PAD] [UNK] [CLS] [SEP] [MASK]. The other pairings
work too: BPE for mlm gets RoBERTa's <s> <pad> </s> <unk> <mask>, WordPiece for clm ends
documents with [SEP].
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


def special_tokens(kind: str, objective: str) -> dict[str, str]:
    """The special tokens a trained tokenizer gets: those the objective needs, in the style of the
    model family that pairs that tokenizer with that objective (GPT-2, RoBERTa, BERT)."""
    if kind == "bpe" and objective == "clm":
        return {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT, "pad_token": EOT}
    if kind == "bpe":  # RoBERTa style
        return {
            "bos_token": "<s>",
            "cls_token": "<s>",
            "pad_token": "<pad>",
            "eos_token": "</s>",
            "sep_token": "</s>",
            "unk_token": "<unk>",
            "mask_token": "<mask>",
        }
    if objective == "mlm":
        return dict(
            zip(
                ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), BERT_SPECIALS, strict=True
            )
        )
    # WordPiece for clm: [SEP] ends each document; no [CLS]/[MASK], so it is not taken for a fill-mask model
    return {"pad_token": "[PAD]", "unk_token": "[UNK]", "eos_token": "[SEP]"}


def train_tokenizer(
    train: TokenizerTrainConfig,
    objective: str,
    texts: Iterator[str],
    *,
    length: int,
    model_max_length: int,
):
    """Train on `texts` (the cleaned training split) and wrap the result as a PreTrainedTokenizerFast.
    The library's own progress bars stay off: preprocess shows one of its own, in lmtool's style."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    kind = train_type(train, objective)
    specials = special_tokens(kind, objective)
    names = list(dict.fromkeys(specials.values()))
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        # As in RoBERTa, <mask> takes the space before it, which belongs to the word it stands for.
        added = [AddedToken(n, lstrip=n == "<mask>", special=True) for n in names]
        trainer = trainers.BpeTrainer(
            vocab_size=train.vocab_size,
            min_frequency=train.min_frequency,
            special_tokens=added,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=train.lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=train.vocab_size,
            min_frequency=train.min_frequency,
            special_tokens=names,
            show_progress=False,
        )
    tok.train_from_iterator(texts, trainer, length=length)
    if objective == "mlm":
        _wrap_in(tok, specials["cls_token"], specials["sep_token"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **specials)


def _wrap_in(tok, cls: str, sep: str) -> None:
    """Encode a text as `cls text sep` (and a pair as BERT/RoBERTa do), as masked LMs expect."""
    from tokenizers import processors

    ids = [(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))]
    pair = f"{cls} $A {sep} $B:1 {sep}:1" if cls == "[CLS]" else f"{cls} $A {sep} {sep} $B {sep}"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=pair, special_tokens=ids
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
