"""Byte-level BPE through tiktoken: the ids of the `tokenizers` backend, several times faster.

`tokenizers` builds a full Encoding per text (token strings, offsets, masks) even when only ids
are wanted; tiktoken fills a buffer of ids and releases the GIL, so threads scale across cores.
For GPT-2-style tokenizers (byte-level pre-tokenizer with a split regex, no normaliser, merge
results numbered in merge order, every merge result rebuilt by the merges) the two merge the same
pairs in the same order. `agrees` still checks that on real text before the fast path is taken;
anything else stays on `tokenizers`. Both encode documents as ordinary text: a special token's
text inside a document is not the special token.
"""

from __future__ import annotations

import json

import numpy as np

from lmtool import console

# The split regex of `pre_tokenizers.ByteLevel(use_regex=True)` (GPT-2's), in tiktoken's dialect.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Text that exercises what the two implementations could disagree on: contractions, digits,
# non-Latin letters, emoji, runs of whitespace and line breaks (added tokens are appended).
PROBE = (
    "It's 2024: they'll pay $3.50 for 12345 apples, aren't they?  \n\n\tTabs\u00a0and  spaces   end \n"
    "Café naïve Übermaß, 東京は晴れ, Привет мир, مرحبا, 🙂🚀 x²+y³ ½ \u2028 — «quoted» 'single' \"double\"\n"
)


def tiktoken_encoding(backend, separator: int | None = None):
    """A tiktoken Encoding with the same ids as the `tokenizers.Tokenizer` `backend` on ordinary text,
    or None when the tokenizer uses something tiktoken does not have (or has merges tiktoken would
    not follow: then with a warning). Its one special token is the added token with id `separator`,
    if there is one, so that documents joined by it can be encoded as one text."""
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    options = ("dropout", "byte_fallback", "continuing_subword_prefix", "end_of_word_suffix")
    if model.get("type") != "BPE" or any(model.get(k) for k in options) or spec.get("normalizer"):
        return None
    pattern = _split_pattern(spec.get("pre_tokenizer"))
    added = spec.get("added_tokens") or []
    # A non-special added token is matched in ordinary text by `tokenizers`; tiktoken has no such thing.
    if pattern is None or any(
        t.get("lstrip") or t.get("rstrip") or t.get("single_word") or not t.get("special") for t in added
    ):
        return None
    ranks = _merge_ranks(model)
    if ranks is None:
        return None
    # With ignore_merges, `tokenizers` gives a piece that is a whole token as that token, even one no
    # merge makes; tiktoken knows only single bytes and merge results.
    unranked = set(model["vocab"].values()) - set(ranks.values()) - {t["id"] for t in added}
    if model.get("ignore_merges") and unranked:
        return None
    unreached = _unreached_merge(model)
    if unreached is not None:
        console.warning(
            f"tiktoken would disagree with `tokenizers` on this tokenizer: its merges do not rebuild the token "
            f"{unreached!r} (merges added or edited by hand?); tokenizing with `tokenizers` (slower)"
        )
        return None
    import tiktoken

    try:
        return tiktoken.Encoding(
            "lmtool",
            pat_str=pattern,
            mergeable_ranks=ranks,
            special_tokens={t["content"]: t["id"] for t in added if t["id"] == separator},
        )
    except ValueError:  # a split regex tiktoken's engine does not accept
        return None


def agrees(encoding, backend, texts: list[str]) -> bool:
    """Whether `encoding` gives exactly the ids `backend` gives on `texts` and on a built-in probe, all
    encoded as ordinary text (`backend` must have `encode_special_tokens` set)."""
    specials = "".join(f"a{token.content}b" for token in backend.get_added_tokens_decoder().values())
    texts = [*texts, PROBE + specials]
    expected = backend.encode_batch_fast(texts, add_special_tokens=False)
    return all(
        np.array_equal(encode_ordinary(encoding, text), enc.ids)
        for text, enc in zip(texts, expected, strict=True)
    )


def encode_ordinary(encoding, text: str) -> np.ndarray:
    """`text`'s ids, special tokens' text included as ordinary text, in a numpy array."""
    return encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())


def _split_pattern(pre_tokenizer: dict | None) -> str | None:
    """The regex the byte-level pre-tokenizer splits on: GPT-2's built-in one, or a Split step's."""
    if pre_tokenizer is None:
        return None
    if pre_tokenizer.get("type") == "ByteLevel":
        if pre_tokenizer.get("add_prefix_space") or not pre_tokenizer.get("use_regex", True):
            return None
        return GPT2_PATTERN
    steps = pre_tokenizer.get("pretokenizers") if pre_tokenizer.get("type") == "Sequence" else None
    if not steps or len(steps) != 2:
        return None
    split, byte_level = steps
    regex = (split.get("pattern") or {}).get("Regex")
    if (
        split.get("type") != "Split"
        or regex is None
        or split.get("behavior") != "Isolated"
        or split.get("invert")
        or byte_level.get("type") != "ByteLevel"
        or byte_level.get("add_prefix_space")
        or byte_level.get("use_regex", True)
    ):
        return None
    return regex


def _unreached_merge(model: dict) -> str | None:
    """The first merge result (as text) that the merges themselves do not turn into that one token, or
    None. tiktoken merges any adjacent pair whose concatenation is a token, `tokenizers` only the pairs
    listed as merges; where a token is not rebuilt by its own merges (a merge appended by hand, say)
    the two part ways, possibly on a word first seen deep into the corpus, which no sample check
    would catch. Each merge result goes through a bare BPE model: ~0.15 s for GPT-2's 50k merges on
    one core (a batch encode of them all took 0.25-0.55 s on two: it builds an Encoding per text)."""
    from tokenizers import models
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges") or []]
    bpe = models.BPE(vocab=model["vocab"], merges=merges)  # merges as `tokenizers` does
    for left, right in merges:
        if len(bpe.tokenize(left + right)) != 1:
            byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
            return bytes(byte_of[char] for char in left + right).decode("utf-8", "replace")
    return None


def _merge_ranks(model: dict) -> dict[bytes, int] | None:
    """Token bytes → id for the 256 single bytes and every merge result. tiktoken merges the pair
    whose result has the lowest rank, so ids must grow in merge order (they do when the vocabulary
    came from BPE training, as GPT-2's did)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    vocab: dict[str, int] = model.get("vocab") or {}
    try:
        ranks = {bytes([byte]): vocab[char] for char, byte in byte_of.items()}
        last = -1
        for merge in model.get("merges") or []:
            left, right = merge.split(" ") if isinstance(merge, str) else merge
            token = left + right
            rank = vocab[token]
            if rank <= last:
                return None
            last = rank
            ranks[bytes(byte_of[char] for char in token)] = rank
    except (KeyError, ValueError):  # a byte or merge result missing from the vocabulary
        return None
    return ranks
