"""Labeled examples → model inputs: the label map, tokenization without padding (classification:
truncated to max_length; token classification: word-aligned windows), and label ids per token.

Token classification windows: a sentence longer than max_length is cut into windows that start at
word boundaries and overlap by at most `stride` tokens. Every word is owned (labeled) by exactly one
window, the first that holds all of its sub-tokens, so per-word predictions can be rebuilt from
(example_id, word_ids) without double counting; a word longer than a whole window is truncated to
it (its first sub-token keeps the label) and counted. A word the tokenizer turns into no tokens at
all (e.g. a zero-width space) is read as the unknown token, so no word and no gold entity is lost.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

from lmtool import console
from lmtool.config import FinetuneConfig
from lmtool.data.labeled_rows import Example
from lmtool.errors import ConfigError, LmtoolError

IGNORE = -100  # label id the loss skips
BATCH = 1000
_INT = re.compile(r"^[+-]?\d+$")


# --------------------------------------------------------------------------- labels


def label_names(example: Example, cfg: FinetuneConfig) -> list[str]:
    """The label(s) of an example as strings: ints as their value; multi_label takes a list or a
    comma-separated string; token classification: its tags."""
    if example.tags is not None:
        return example.tags
    value = example.label
    if cfg.problem == "multi_label":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list):
            raise LmtoolError(f"{example.where}: a multi_label label is a list or comma-separated labels")
        return [_name(item, example.where) for item in items]
    return [_name(value, example.where)]


def _name(value: object, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise LmtoolError(f"{where} has an empty or unusable label ({value!r})")


def warn_mixed_labels(examples: Iterable[Example], cfg: FinetuneConfig) -> None:
    """Labels written as numbers in some rows and as text in others (JSON `1` and `"1"`) are matched by
    their text, so `1` and `"1"` are one class but `2.0` and `"2.0"` two: say so once, naming a row of each."""
    if cfg.problem == "regression":
        return
    number = text = None
    for example in examples:
        for value in example.label if isinstance(example.label, list) else [example.label]:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                number = number or (value, example.where)
            elif isinstance(value, str):
                text = text or (value, example.where)
        if number and text:
            console.warning(
                f"labels mix numbers ({number[0]!r} in {number[1]}) and text ({text[0]!r} in {text[1]}): "
                "a number is the class its digits name (1 is '1', 2.0 is '2', not '2.0'); write labels one way"
            )
            return


def sort_labels(names: Iterable[str]) -> list[str]:
    """Sorted and stable across runs: numerically when every label is an integer, else as text."""
    unique = set(names)
    if unique and all(_INT.match(n) for n in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def check_labels(examples: list[Example], cfg: FinetuneConfig, labels: list[str], split: str) -> None:
    """Every label of `split` is in the label set (given, or taken from the training split)."""
    known = set(labels)
    for example in examples:
        for name in label_names(example, cfg):
            if name in known:
                continue
            if cfg.labels is not None:
                raise ConfigError(
                    "finetune.labels", f"lacks the label '{name}' found in {example.where}", value=cfg.labels
                )
            raise LmtoolError(
                f"label '{name}' in the {split} split ({example.where}) never occurs in the training data"
            )


def regression_value(example: Example) -> float:
    value = example.label
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise LmtoolError(f"{example.where} has a label that is not a finite number ({value!r})")
    return number


def label_counts(examples: list[Example], cfg: FinetuneConfig, word_level: bool) -> dict[str, int]:
    """How often each label occurs (multi_label: examples holding it; NER (`word_level`): words tagged with it)."""
    if not word_level and cfg.problem == "regression":
        return {}
    counts: Counter[str] = Counter()
    for example in examples:
        names = label_names(example, cfg)
        counts.update(names if example.tags is not None else set(names))
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------- classification


def encode_classification(
    tokenizer, examples: list[Example], cfg: FinetuneConfig, labels: list[str]
) -> tuple[dict[str, list], int]:
    """Columns input_ids, token_type_ids (when the tokenizer makes them), length, labels; and how many
    examples were longer than max_length (truncated, pairs longest first)."""
    ids = {name: i for i, name in enumerate(labels)}
    columns: dict[str, list] = {"input_ids": [], "length": [], "labels": []}
    truncated = 0
    for start in range(0, len(examples), BATCH):
        batch = examples[start : start + BATCH]
        texts = [e.text for e in batch]
        pairs = [e.pair for e in batch] if cfg.text_pair_field else None
        full = tokenizer(texts, pairs, truncation=False, verbose=False)
        long = [i for i, row in enumerate(full["input_ids"]) if len(row) > cfg.max_length]
        if long:
            cut = tokenizer(
                [texts[i] for i in long],
                [pairs[i] for i in long] if pairs else None,
                truncation="longest_first",
                max_length=cfg.max_length,
                verbose=False,
            )
            for j, i in enumerate(long):
                for name in full:
                    full[name][i] = cut[name][j]
            truncated += len(long)
        columns["input_ids"] += full["input_ids"]
        if "token_type_ids" in full:
            columns.setdefault("token_type_ids", []).extend(full["token_type_ids"])
        columns["length"] += [len(row) for row in full["input_ids"]]
        for example in batch:
            if cfg.problem == "regression":
                columns["labels"].append(regression_value(example))
            elif cfg.problem == "multi_label":
                hot = [0.0] * len(labels)
                for name in label_names(example, cfg):
                    hot[ids[name]] = 1.0
                columns["labels"].append(hot)
            else:
                columns["labels"].append(ids[label_names(example, cfg)[0]])
    return columns, truncated


# --------------------------------------------------------------------------- token classification


def encode_tokens(
    tokenizer, examples: list[Example], cfg: FinetuneConfig, labels: list[str]
) -> tuple[dict[str, list], dict[str, int]]:
    """Columns input_ids, token_type_ids (when made), length, labels, example_id, word_ids (one row
    per window), and counts: windows, truncated (words cut to a window), unknown_words."""
    body = cfg.max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if cfg.stride >= body:
        raise ConfigError(
            "finetune.stride",
            f"must be smaller than the {body} tokens a window holds besides special tokens (finetune.max_length)",
            value=cfg.stride,
        )
    tag_ids = {name: i for i, name in enumerate(labels)}
    inside = {tag_ids[n]: tag_ids.get("I-" + n[2:], tag_ids[n]) for n in labels if n.startswith("B-")}
    columns: dict[str, list] = {"input_ids": [], "length": [], "labels": [], "example_id": [], "word_ids": []}
    counts = {"windows": 0, "truncated": 0, "unknown_words": 0}
    for start in range(0, len(examples), BATCH):
        batch = examples[start : start + BATCH]
        sentences = [list(e.tokens or []) for e in batch]
        encoded = tokenizer(sentences, is_split_into_words=True, truncation=False, verbose=False)
        lost = [
            _replace_lost(tokenizer, e, words, encoded.word_ids(i))
            for i, (e, words) in enumerate(zip(batch, sentences, strict=True))
        ]
        if any(lost):
            counts["unknown_words"] += sum(lost)
            encoded = tokenizer(sentences, is_split_into_words=True, truncation=False, verbose=False)
        windows: list[tuple[int, int, int, int]] = []  # (sentence, first word, owned from, end word)
        for i, words in enumerate(sentences):
            if len(encoded["input_ids"][i]) <= cfg.max_length:
                windows.append((i, 0, 0, len(words)))
                continue
            sizes = Counter(w for w in encoded.word_ids(i) if w is not None)
            spans, cut = _windows([sizes[w] for w in range(len(words))], body, cfg.stride)
            windows += [(i, a, owned, b) for a, owned, b in spans]
            counts["truncated"] += cut
        pieces = tokenizer(
            [sentences[i][a:b] for i, a, _, b in windows],
            is_split_into_words=True,
            truncation=True,
            max_length=cfg.max_length,
            verbose=False,
        )
        for k, (i, a, owned, b) in enumerate(windows):
            example = examples[start + i]
            tags = [tag_ids[t] for t in example.tags]
            word_ids = [-1 if w is None else w + a for w in pieces.word_ids(k)]
            row_labels, previous = [], -1
            for w in word_ids:
                if w < owned or w >= b:
                    row_labels.append(IGNORE)
                elif w != previous:
                    row_labels.append(tags[w])
                else:
                    row_labels.append(inside.get(tags[w], tags[w]) if cfg.label_all_subtokens else IGNORE)
                previous = w
            columns["input_ids"].append(pieces["input_ids"][k])
            if "token_type_ids" in pieces:
                columns.setdefault("token_type_ids", []).append(pieces["token_type_ids"][k])
            columns["length"].append(len(word_ids))
            columns["labels"].append(row_labels)
            columns["example_id"].append(start + i)
            columns["word_ids"].append(word_ids)
        counts["windows"] += len(windows)
    return columns, counts


def _replace_lost(tokenizer, example: Example, words: list[str], word_ids: list[int | None]) -> int:
    """Replace the words the tokenizer drops entirely by its unknown token; how many there were."""
    present = {w for w in word_ids if w is not None}
    lost = [w for w in range(len(words)) if w not in present]
    if lost and tokenizer.unk_token is None:
        raise LmtoolError(
            f"{example.where}: word {lost[0] + 1} ({words[lost[0]]!r}) gives no tokens and the tokenizer has no unknown token"
        )
    for w in lost:
        words[w] = tokenizer.unk_token
    return len(lost)


def _windows(sizes: list[int], body: int, stride: int) -> tuple[list[tuple[int, int, int]], int]:
    """Word spans (first word, first owned word, end word) of the windows of one sentence whose words
    have `sizes` tokens, each window at most `body` tokens; and how many words were too long for one."""
    spans, truncated = [], 0
    a, owned, n = 0, 0, len(sizes)
    while True:
        b, used = a, 0
        while b < n and used + sizes[b] <= body:
            used += sizes[b]
            b += 1
        if b == a:  # one word longer than a whole window: it gets a window, truncated
            b, truncated = a + 1, truncated + 1
        spans.append((a, owned, b))
        owned = b
        if b >= n:
            return spans, truncated
        # Step back over at most `stride` tokens of context, leaving room for the next word.
        start, back = b, 0
        while (
            start - 1 > a and back + sizes[start - 1] <= stride and back + sizes[start - 1] + sizes[b] <= body
        ):
            back += sizes[start - 1]
            start -= 1
        a = start
