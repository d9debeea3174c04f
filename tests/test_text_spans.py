"""Entity and answer spans end on whole characters: a combining mark or a variation selector the tokenizer
dropped (NFD "Zoë" gave "Zoe", "❤️" gave "❤") is part of the span."""

from __future__ import annotations

import unicodedata

import pytest
import torch

from lmtool.config import TokenizerTrainConfig
from lmtool.data.tokenizer import train_tokenizer
from lmtool.tasks.decoding.entities import _word_spans
from lmtool.tasks.qa_postprocess import NO_OFFSET, Window, best_answer
from lmtool.text_spans import grapheme_end

ZOE = unicodedata.normalize("NFD", "Zoë")  # "Zoe" + U+0308
HEART = "❤\ufe0f"


@pytest.mark.parametrize(
    ("text", "end", "expected"),
    [
        (f"{ZOE} smiled", 3, 4),
        (f"I {HEART} it", 3, 4),
        ("👍\U0001f3fd ok", 1, 2),  # skin tone
        ("👨\u200d👩 ok", 1, 3),  # ZWJ sequence
        ("plain text", 5, 5),
        ("", 0, 0),
    ],
)
def test_grapheme_end(text, end, expected):
    assert grapheme_end(text, end) == expected


def test_entity_word_spans_keep_what_an_accent_stripping_tokenizer_dropped():
    texts = [f"{ZOE} loves {HEART} and tea", "tea and zoe and love"] * 20
    tokenizer = train_tokenizer(TokenizerTrainConfig(type="wordpiece", vocab_size=200, lowercase=True), "mlm",
                                iter(texts), length=len(texts), model_max_length=64)  # fmt: skip
    text = texts[0]
    full = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = _word_spans(text, full.word_ids(), full["offset_mapping"])
    words = [text[start:end] for start, end in spans]
    assert words[0] == ZOE and HEART in words, words


def test_qa_answers_keep_a_trailing_variation_selector():
    context = f"I {HEART} it"
    offsets = [list(NO_OFFSET), [0, 1], [2, 3], [5, 7]]  # the selector (3..4) dropped by the tokenizer
    logits = torch.tensor([0.0, 0.0, 5.0, 0.0])
    answer = best_answer([Window(logits, logits, offsets)], context)
    assert (answer.text, answer.start, answer.end) == (HEART, 2, 4)
