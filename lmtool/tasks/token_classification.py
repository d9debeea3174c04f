"""Token classification (NER): a tag per word, trained on sub-tokens, scored on whole entities.

Rows are windows of a sentence (`example_id`, `word_ids`; `labels` is -100 except on the tokens of
the words the window owns), so the loss is a token cross-entropy over the labeled tokens (the count
the engine weights micro-batches by), and the evaluator rebuilds every sentence's word tags from
(example_id, word index) before scoring them with conlleval's rules: each word is scored once by the
first labeled sub-token of the one window that owns it, whatever the batches or window split.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from transformers import AutoModelForTokenClassification

from lmtool.data.collate import IGNORE
from lmtool.data.labeled_build import build_labeled
from lmtool.errors import ConfigError
from lmtool.finetune.heads import Head
from lmtool.tasks.base import model_inputs
from lmtool.tasks.decoding import entities
from lmtool.tasks.metrics.ner import ner_metrics, scheme_problem
from lmtool.tasks.padding import pad_inputs, pad_rows
from lmtool.tasks.spec import TaskSpec


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed fp32 cross-entropy over the labeled tokens, and their number."""
    nll = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return nll, (labels != IGNORE).sum()


class TokenClassificationTask:
    name = "token_classification"

    def __init__(self, tokenizer, labels: Sequence[str], tag_scheme: str, pad_to_multiple_of: int | None):
        problem = scheme_problem(labels, tag_scheme)
        if problem:
            raise ConfigError("finetune.tag_scheme", problem, value=tag_scheme)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.labels = list(labels)
        self.pad_to_multiple_of = pad_to_multiple_of

    def collate(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch, length = pad_inputs(examples, self.pad_id, self.pad_to_multiple_of)
        batch["labels"] = pad_rows([ex["labels"] for ex in examples], IGNORE, length)
        batch["word_ids"] = pad_rows([ex["word_ids"] for ex in examples], -1, length)
        batch["example_id"] = torch.tensor([ex["example_id"] for ex in examples], dtype=torch.long)
        return batch

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean cross-entropy over the labeled tokens, number of labeled tokens)."""
        nll, count = token_nll(model(**model_inputs(batch)).logits, batch["labels"])
        return nll / count.clamp(min=1), count

    def evaluator(self) -> TokenClassificationEvaluator:
        return TokenClassificationEvaluator(self.labels)


class TokenClassificationEvaluator:
    """Token loss over the split; word tags collected per (example_id, word index) for conlleval."""

    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)
        self.nll = 0.0
        self.tokens = 0
        self.words: dict[int, dict[int, tuple[int, int]]] = {}  # example -> word -> (gold, predicted)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
        logits = model(**model_inputs(batch)).logits
        labels = batch["labels"]
        nll, count = token_nll(logits, labels)
        self.nll += float(nll)
        self.tokens += int(count)
        predicted = logits.argmax(dim=-1).tolist()
        for row, example in enumerate(batch["example_id"].tolist()):
            words = self.words.setdefault(example, {})
            row_labels, row_words = labels[row].tolist(), batch["word_ids"][row].tolist()
            for position, (gold, word) in enumerate(zip(row_labels, row_words, strict=True)):
                if gold != IGNORE and word >= 0 and word not in words:  # the word's first labeled sub-token
                    words[word] = (gold, predicted[row][position])

    def state(self) -> tuple[float, int, dict]:
        return self.nll, self.tokens, self.words

    def merge(self, states: Sequence[tuple[float, int, dict]]) -> None:
        """As if `update` had seen the batches in this order: a word keeps its first window's tags."""
        for nll, tokens, words in states:
            self.nll += nll
            self.tokens += tokens
            for example, tags in words.items():
                known = self.words.setdefault(example, {})
                for word, pair in tags.items():
                    known.setdefault(word, pair)

    def compute(self) -> dict:
        gold, predicted = [], []
        for example in sorted(self.words):
            words = self.words[example]
            gold.append([self.labels[words[w][0]] for w in sorted(words)])
            predicted.append([self.labels[words[w][1]] for w in sorted(words)])
        metrics = {"loss": self.nll / max(self.tokens, 1), "tokens": self.tokens}
        metrics.update(ner_metrics(gold, predicted))
        return metrics


def _make_task(manifest: dict, tokenizer, cfg, multiple: int | None, processed) -> TokenClassificationTask:
    return TokenClassificationTask(tokenizer, list(manifest.get("labels") or []), cfg.tag_scheme, multiple)


SPEC = TaskSpec(
    name="token_classification",
    head=Head("token_classification", AutoModelForTokenClassification, "ForTokenClassification"),
    build_data=partial(build_labeled, word_level=True),
    make_task=_make_task,
    outputs=lambda problem, labels: None if labels is None else len(labels),
    word_level=True,
    needs_fast_tokenizer=True,
    decode=entities.decode,
    describe=lambda pred: f"token_classification (entities) with {len(pred.labels)} labels, ",
    route="/entities",
)
