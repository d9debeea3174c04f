"""Fine-tuning tasks on tiny random BERTs: collate padding, losses equal to hand computations, exact
count-weighted accumulation over micro-batches, and NER evaluation rebuilt from windows."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    PreTrainedTokenizerFast,
)

from lmtool.data.collate import IGNORE
from lmtool.errors import ConfigError, LmtoolError
from lmtool.tasks import make_finetune_task
from lmtool.tasks.classification import SequenceClassificationTask
from lmtool.tasks.metrics.ner import ner_metrics
from lmtool.tasks.token_classification import TokenClassificationTask

TEXT = ["the film was great", "a dull and boring plot", "john lives in paris", "acme hired mary"] * 10
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.fixture(scope="module")
def tokenizer():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        TEXT, trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials, show_progress=False)
    )
    tok.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def tiny_bert(cls, tokenizer, num_labels: int):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=64, num_labels=num_labels,
    )  # fmt: skip
    return cls(config).eval()


def pair_rows(tokenizer, labels) -> list[dict]:
    """Rows as the preprocess stores them: ids, token types (sentence pairs), length, label."""
    rows = []
    for i, label in enumerate(labels):
        enc = tokenizer(TEXT[i], TEXT[i + 1])
        rows.append({**enc, "length": len(enc["input_ids"]), "labels": label, "sample_id": i})
        rows[-1].pop("attention_mask")
    return rows


def test_classification_collate_pads_dynamically(tokenizer):
    task = SequenceClassificationTask(tokenizer, 2, "single_label", None, None)
    rows = [{"input_ids": [2, 7, 3], "labels": 1}, {"input_ids": [2, 7, 8, 9, 3], "labels": 0}]
    batch = task.collate(rows)
    assert batch["input_ids"].tolist() == [[2, 7, 3, 0, 0], [2, 7, 8, 9, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.long
    assert "token_type_ids" not in batch
    # the mask is there even when nothing is padded, and rounding to a multiple pads further
    assert task.collate(rows[:1])["attention_mask"].tolist() == [[1, 1, 1]]
    rounded = SequenceClassificationTask(tokenizer, 2, "single_label", None, 8).collate(
        [{**r, "token_type_ids": [0] * (len(r["input_ids"]) - 1) + [1]} for r in rows]
    )
    assert rounded["input_ids"].shape == (2, 8) and rounded["attention_mask"][1].tolist() == [1] * 5 + [0] * 3
    assert rounded["token_type_ids"].tolist() == [[0, 0, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0, 0]]


def test_single_label_loss_is_weighted_cross_entropy_over_examples_with_token_types(tokenizer):
    model = tiny_bert(BertForSequenceClassification, tokenizer, 3)
    weights = [0.5, 2.0, 1.0]
    task = SequenceClassificationTask(tokenizer, 3, "single_label", weights, None)
    batch = task.collate(pair_rows(tokenizer, [0, 1, 2, 1]))
    assert batch["token_type_ids"].max() == 1
    loss, count = task.loss(model, batch)
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        ).logits
    nll = -F.log_softmax(logits, dim=-1)[torch.arange(4), batch["labels"]]
    expected = (nll * torch.tensor(weights)[batch["labels"]]).sum() / 4
    assert int(count) == 4
    torch.testing.assert_close(loss.detach(), expected)


@pytest.mark.parametrize("problem", ["single_label", "multi_label", "regression"])
def test_micro_batches_weighted_by_count_give_the_whole_batch_loss(tokenizer, problem):
    labels = {
        "single_label": [0, 2, 1, 2, 0],
        "multi_label": [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]],
        "regression": [0.5, -1.0, 2.0, 0.0, 1.5],
    }[problem]
    num_labels = 1 if problem == "regression" else 3
    model = tiny_bert(BertForSequenceClassification, tokenizer, num_labels)
    weights = None if problem == "regression" else [1.0, 3.0, 0.5]
    task = SequenceClassificationTask(tokenizer, num_labels, problem, weights, None)
    rows = pair_rows(tokenizer, labels)
    with torch.no_grad():
        whole, count = task.loss(model, task.collate(rows))
        parts = [task.loss(model, task.collate(part)) for part in (rows[:2], rows[2:])]
    assert int(count) == 5
    torch.testing.assert_close(sum(loss * n for loss, n in parts) / 5, whole, rtol=1e-5, atol=1e-6)
    # and the loss is the hand-computed one
    batch = task.collate(rows)
    with torch.no_grad():
        logits = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    gold = batch["labels"]
    if problem == "regression":
        expected = ((logits.squeeze(-1) - gold) ** 2).mean()
    elif problem == "multi_label":
        p = torch.sigmoid(logits)
        bce = -(gold * torch.log(p) + (1 - gold) * torch.log(1 - p)) * torch.tensor(weights)
        expected = bce.mean()
    else:
        expected = (F.cross_entropy(logits, gold, reduction="none") * torch.tensor(weights)[gold]).mean()
    torch.testing.assert_close(whole, expected, rtol=1e-5, atol=1e-6)


def test_classification_evaluator_metrics(tokenizer):
    model = tiny_bert(BertForSequenceClassification, tokenizer, 2)
    task = SequenceClassificationTask(tokenizer, 2, "single_label", None, None, labels=["neg", "pos"])
    rows = pair_rows(tokenizer, [0, 1, 1, 0, 1])
    evaluator = task.evaluator()
    with torch.no_grad():
        for part in (rows[:3], rows[3:]):
            evaluator.update(model, task.collate(part))
        batch = task.collate(rows)
        logits = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    metrics = evaluator.compute()
    predicted = logits.argmax(-1)
    assert metrics["examples"] == 5
    assert metrics["accuracy"] == pytest.approx(float((predicted == batch["labels"]).float().mean()))
    assert metrics["loss"] == pytest.approx(float(F.cross_entropy(logits, batch["labels"])), rel=1e-5)
    assert sum(map(sum, metrics["confusion_matrix"])) == 5
    assert set(metrics["per_class"]) == {"neg", "pos"}


# ---------------------------------------------------------------- token classification


class TableTagger(torch.nn.Module):
    """Predicts a fixed tag per token id whatever its context, so a sentence's predictions do not
    depend on how it was cut into windows."""

    def __init__(self, table: dict[int, int], vocab: int):
        super().__init__()
        self.table = torch.zeros(vocab, dtype=torch.long)
        for token, tag in table.items():
            self.table[token] = tag

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return SimpleNamespace(logits=F.one_hot(self.table[input_ids], len(TAGS)).float() * 5.0)


# One sentence of 6 words (word 2 has two sub-tokens: ids 22, 23); gold tags per word:
WORD_TOKENS = [[20], [21], [22, 23], [24], [25], [26]]
GOLD = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]
TABLE = {20: 1, 21: 0, 22: 0, 23: 2, 24: 3, 25: 4, 26: 1}  # predicts B-PER O O B-LOC I-LOC B-PER
PREDICTED = ["B-PER", "O", "O", "B-LOC", "I-LOC", "B-PER"]


def window(example_id: int, words: list[int], owned: list[int]) -> dict:
    """A row as the preprocess writes it: [CLS] the words' sub-tokens [SEP], labels on the first
    sub-token of the owned words only."""
    ids, word_ids, labels = [2], [-1], [IGNORE]
    for w in words:
        for k, token in enumerate(WORD_TOKENS[w]):
            ids.append(token)
            word_ids.append(w)
            labels.append(TAGS.index(GOLD[w]) if w in owned and k == 0 else IGNORE)
    ids.append(3), word_ids.append(-1), labels.append(IGNORE)
    return {
        "input_ids": ids,
        "word_ids": word_ids,
        "labels": labels,
        "example_id": example_id,
        "length": len(ids),
    }


def evaluate(task, model, batches) -> dict:
    evaluator = task.evaluator()
    with torch.no_grad():
        for rows in batches:
            evaluator.update(model, task.collate(rows))
    return evaluator.compute()


def test_token_collate_pads_labels_and_word_ids(tokenizer):
    task = TokenClassificationTask(tokenizer, TAGS, "auto", None)
    batch = task.collate([window(7, [0, 1], [0, 1]), window(3, [0, 1, 2], [2])])
    assert batch["input_ids"].tolist() == [[2, 20, 21, 3, 0, 0], [2, 20, 21, 22, 23, 3]]
    assert batch["labels"][0].tolist() == [IGNORE, 1, 2, IGNORE, IGNORE, IGNORE]
    assert batch["word_ids"][0].tolist() == [-1, 0, 1, -1, -1, -1]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0]
    assert batch["example_id"].tolist() == [7, 3]


def test_token_loss_is_cross_entropy_over_labeled_tokens(tokenizer):
    model = tiny_bert(BertForTokenClassification, tokenizer, len(TAGS))
    task = TokenClassificationTask(tokenizer, TAGS, "IOB2", None)
    rows = [window(0, [0, 1, 2, 3], [0, 1, 2, 3]), window(1, [2, 3, 4, 5], [4, 5]), window(2, [1, 2], [1, 2])]
    batch = task.collate(rows)
    with torch.no_grad():
        loss, count = task.loss(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        parts = [task.loss(model, task.collate(part)) for part in (rows[:1], rows[1:])]
    labeled = batch["labels"] != IGNORE
    assert int(count) == int(labeled.sum()) == 4 + 2 + 2
    torch.testing.assert_close(loss, F.cross_entropy(logits[labeled], batch["labels"][labeled]))
    torch.testing.assert_close(
        sum(part_loss * n for part_loss, n in parts) / count, loss, rtol=1e-5, atol=1e-6
    )


def test_token_evaluator_rebuilds_words_whatever_the_windows_and_batches(tokenizer):
    task = TokenClassificationTask(tokenizer, TAGS, "auto", None)
    model = TableTagger(TABLE, len(tokenizer))
    expected = ner_metrics([GOLD, GOLD[:3]], [PREDICTED, PREDICTED[:3]])
    assert (expected["precision"], expected["recall"]) == (0.25, pytest.approx(1 / 3))
    whole = window(0, list(range(6)), list(range(6)))
    # sentence 0 in two overlapping windows (words 2-3 in both, owned by the first), sentence 1 short
    first, second = window(0, [0, 1, 2, 3], [0, 1, 2, 3]), window(0, [2, 3, 4, 5], [4, 5])
    short = window(1, [0, 1, 2], [0, 1, 2])
    layouts = [
        [[whole, short]],
        [[first, second, short]],
        [[second], [short, first]],
        [[short], [second], [first]],
    ]
    for batches in layouts:
        metrics = evaluate(task, model, batches)
        for key in ("precision", "recall", "f1", "accuracy", "per_type"):
            assert metrics[key] == expected[key], (key, batches)
    assert metrics["accuracy"] == pytest.approx(6 / 9)


def test_label_all_subtokens_scores_each_word_once(tokenizer):
    task = TokenClassificationTask(tokenizer, TAGS, "auto", None)
    row = window(0, list(range(6)), list(range(6)))
    row["labels"][4] = TAGS.index(GOLD[2])  # the second sub-token of word 2 labeled too
    metrics = evaluate(task, TableTagger(TABLE, len(tokenizer)), [[row]])
    assert metrics["accuracy"] == pytest.approx(4 / 6)  # word 2 judged by its first sub-token (O: right)
    assert metrics["tokens"] == 7


def test_make_finetune_task(tokenizer):
    cfg = SimpleNamespace(
        task="classification", problem="single_label", class_weights="balanced", tag_scheme="auto"
    )
    manifest = {"task": "classification", "problem": "single_label", "labels": ["neg", "pos"],
                "counts": {"train": {"examples": 40, "labels": {"neg": 30, "pos": 10}}}}  # fmt: skip
    task = make_finetune_task(manifest, tokenizer, cfg, torch.device("cpu"))
    assert isinstance(task, SequenceClassificationTask) and task.pad_to_multiple_of is None
    assert task.weights.tolist() == pytest.approx([40 / 60, 40 / 20])
    assert task.labels == ["neg", "pos"]
    assert make_finetune_task(manifest, tokenizer, cfg, "cuda").pad_to_multiple_of == 8
    with pytest.raises(ConfigError, match="finetune.class_weights"):
        make_finetune_task(
            manifest, tokenizer, SimpleNamespace(**{**vars(cfg), "class_weights": [1.0]}), "cpu"
        )
    with pytest.raises(LmtoolError, match="label counts"):
        make_finetune_task({**manifest, "counts": {}}, tokenizer, cfg, "cpu")
    regression = make_finetune_task(
        {"task": "classification", "problem": "regression", "labels": []}, tokenizer,
        SimpleNamespace(**{**vars(cfg), "class_weights": None}), "cpu",
    )  # fmt: skip
    assert regression.num_labels == 1
    ner = SimpleNamespace(task="token_classification", tag_scheme="IOB2")
    assert isinstance(make_finetune_task({"labels": TAGS}, tokenizer, ner, "cpu"), TokenClassificationTask)
    with pytest.raises(ConfigError, match="finetune.tag_scheme.*S-PER"):
        make_finetune_task({"labels": [*TAGS, "S-PER"]}, tokenizer, ner, "cpu")
