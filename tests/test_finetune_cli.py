"""`lmtool finetune` end to end on tiny BERTs: each task learns a learnable problem, the saved label maps
work in plain transformers and agree with `lmtool predict`, and bad input exits 2 leaving nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import assert_usage_error
from tests.engine_fixtures import make_processed_dir, read_metrics
from tests.eval_fixtures import run_inproc
from tests.finetune_fixtures import (
    GAZETTEER,
    KEYWORD,
    finetune_config,
    gazetteer_rows,
    keyword_rows,
    save_tiny_bert,
    write_jsonl,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("bert"))


def _finetune(config: Path, *args: str) -> Path:
    """`lmtool finetune CONFIG` in this process; returns the directory it printed."""
    result = run_inproc("finetune", str(config), *args)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, bert) -> Path:
    """The run directory of a classifier fine-tuned to tell whether a text holds the keyword."""
    base = tmp_path_factory.mktemp("cls")
    train = write_jsonl(base / "train.jsonl", keyword_rows(320, seed=0))
    val = write_jsonl(base / "val.jsonl", keyword_rows(100, seed=1))
    config = finetune_config(base, bert, {"task": "classification", "max_length": 32}, train, val,
                             lr=1e-3, batch_size=16, epochs=3)  # fmt: skip
    assert _finetune(config) == base / "run" / "final"
    return base / "run"


@pytest.fixture(scope="module")
def tagger(tmp_path_factory, bert) -> Path:
    """The run directory of a tagger fine-tuned to find the gazetteer's words."""
    base = tmp_path_factory.mktemp("ner")
    train = write_jsonl(base / "train.jsonl", gazetteer_rows(320, seed=0))
    val = write_jsonl(base / "val.jsonl", gazetteer_rows(100, seed=1))
    config = finetune_config(base, bert, {"task": "token_classification", "max_length": 32, "stride": 8},
                             train, val,
                             lr=1e-3, batch_size=16, epochs=3)  # fmt: skip
    assert _finetune(config) == base / "run" / "final"
    return base / "run"


def test_classification_learns_the_keyword_well_above_chance(classifier):
    evals = read_metrics(classifier, "eval")
    assert len(evals) == 3  # one evaluation per epoch
    first, last = evals[min(evals)], evals[max(evals)]
    assert max(r["accuracy"] for r in evals.values()) >= 0.95, evals  # chance: ~0.5
    assert last["loss"] < first["loss"]
    assert set(last["per_class"]) == {"plain", "royal"} and len(last["confusion_matrix"]) == 2


def test_token_classification_learns_the_gazetteer_well_above_chance(tagger):
    evals = read_metrics(tagger, "eval")
    assert len(evals) == 3
    best = max(evals.values(), key=lambda r: r["f1"])
    assert best["f1"] >= 0.9 and best["accuracy"] >= 0.95, evals  # entity F1 of an untrained tagger: ~0
    assert set(best["per_type"]) == {"PER", "LOC"}


TEXTS = [
    "the king walks to the castle",
    "a dog sleeps near the river",
    "every bird sings a song about the sea and the queen",
    "light of spring",
]


def test_label_names_survive_plain_transformers_and_match_lmtool_predict(classifier):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    final = classifier / "final"
    model = AutoModelForSequenceClassification.from_pretrained(final).eval()
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert model.config.id2label == {0: "plain", 1: "royal"}
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    plain = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
    assert plain == ["royal" if KEYWORD in t.split() else "plain" for t in TEXTS]
    result = run_inproc("predict", "--model", str(final), *TEXTS)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["label"] for r in records] == plain
    probs = logits.softmax(-1)
    for record, row in zip(records, probs, strict=True):
        assert record["scores"] == pytest.approx({"plain": row[0].item(), "royal": row[1].item()}, abs=1e-5)


def test_tag_names_survive_plain_transformers_and_match_lmtool_predict(tagger):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    final = tagger / "final"
    model = AutoModelForTokenClassification.from_pretrained(final).eval()
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert set(model.config.id2label.values()) == {"O", "B-PER", "B-LOC"}
    words = [text.split() for text in TEXTS]
    enc = tokenizer(words, is_split_into_words=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        tags = model(**enc).logits.argmax(-1)
    plain = []
    for row, sentence in enumerate(words):
        first = {}
        for pos, word in enumerate(enc.word_ids(row)):
            if word is not None and word not in first:
                first[word] = model.config.id2label[tags[row, pos].item()]
        plain.append([(first[w][2:], sentence[w]) for w in range(len(sentence)) if first[w] != "O"])
    assert plain == [[(GAZETTEER[w], w) for w in s if w in GAZETTEER] for s in words]
    result = run_inproc("predict", "--model", str(final), *TEXTS)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [[(e["type"], e["text"]) for e in r["entities"]] for r in records] == plain


# --------------------------------------------------------------------------- bad input


def _no_weights(bert: Path, tmp_path: Path) -> Path:
    """A model directory with config and tokenizer but no weights file."""
    path = tmp_path / "no-weights"
    path.mkdir()
    for file in bert.iterdir():
        if not file.name.startswith("model"):
            (path / file.name).write_bytes(file.read_bytes())
    return path


def _causal_only(bert: Path, tmp_path: Path) -> Path:
    """A tiny CodeGen (transformers has no CodeGenForTokenClassification) with the BERT's tokenizer."""
    from transformers import AutoTokenizer, CodeGenConfig, CodeGenForCausalLM

    path = tmp_path / "codegen"
    tokenizer = AutoTokenizer.from_pretrained(bert)
    config = CodeGenConfig(n_layer=1, n_embd=32, n_head=2, rotary_dim=8, vocab_size=len(tokenizer),
                           n_positions=64, bos_token_id=0, eos_token_id=0)  # fmt: skip
    CodeGenForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _sequence_classifier(bert: Path, tmp_path: Path) -> Path:
    """The BERT with a 3-label sequence-classification head, as a fine-tuned classifier's final/ holds."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    path = tmp_path / "classifier"
    BertForSequenceClassification.from_pretrained(bert, num_labels=3).save_pretrained(path)
    AutoTokenizer.from_pretrained(bert).save_pretrained(path)
    return path


CLS, NER = (
    {"task": "classification", "max_length": 32},
    {"task": "token_classification", "max_length": 32, "stride": 8},
)
GOOD_CSV = "label,text\na,the king\nb,a dog\n"
GOOD_JSONL = '{"tokens": ["the", "king"], "tags": ["O", "B-PER"]}\n'
# case: (finetune section, train file name and text, validation text, model, fragments of the error)
BAD = {
    "label column missing": (
        {**CLS, "label_field": "sentiment"}, "t.csv", GOOD_CSV, GOOD_CSV, None,
        ["finetune.label_field", "columns: label, text"],
    ),
    "validation label unseen": (
        CLS, "t.csv", GOOD_CSV, "label,text\nc,the queen\n", None, ["'c'", "validation split"],
    ),
    "empty label": (CLS, "t.csv", GOOD_CSV + ",the sea\n", GOOD_CSV, None, ["t.csv line 4", "empty label"]),
    "malformed conll line": (
        NER, "t.conll", "the O\nking B-PER\nsea\n", "the O\n", None, ["t.conll line 3", "malformed"],
    ),
    "tokens and tags differ": (
        NER, "t.jsonl", GOOD_JSONL + '{"tokens": ["a", "b"], "tags": ["O"]}\n', GOOD_JSONL, None,
        ["t.jsonl line 2", "2 tokens but 1 tags"],
    ),
    "pair missing in a row": (
        {**CLS, "text_pair_field": "h"}, "t.jsonl",
        '{"text": "a", "h": "b", "label": 1}\n{"text": "a", "label": 0}\n', '{"text": "a", "h": "b", "label": 1}\n',
        None, ["t.jsonl line 2", "finetune.text_pair_field"],
    ),
    "init_from without weights": (CLS, "t.csv", GOOD_CSV, GOOD_CSV, _no_weights, ["model.init_from", "no weights"]),
    "NER from a fine-tuned classifier": (
        NER, "t.jsonl", GOOD_JSONL, GOOD_JSONL, _sequence_classifier,
        ["finetune.reinit_head", "is a BertForSequenceClassification", "set finetune.reinit_head: true"],
    ),
    "causal-only architecture": (
        NER, "t.jsonl", GOOD_JSONL, GOOD_JSONL, _causal_only,
        ["model.init_from", "codegen has no head for task token_classification"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(tmp_path, bert, case):
    finetune, name, train, validation, model, fragments = BAD[case]
    (tmp_path / "v").mkdir()
    (tmp_path / name).write_text(train, encoding="utf-8")
    (tmp_path / "v" / name).write_text(validation, encoding="utf-8")
    model_dir = model(bert, tmp_path) if model else bert
    config = finetune_config(tmp_path, model_dir, finetune, tmp_path / name, tmp_path / "v" / name)
    result = run_inproc("finetune", str(config))
    assert_usage_error(result, *fragments)
    assert result.stdout == ""
    assert not (tmp_path / "run").exists() and not (tmp_path / "processed").exists()


def test_model_config_overrides_are_checked_against_init_from_and_the_data(tmp_path, bert):
    from lmtool.tasks.registry import finetune_spec

    train = write_jsonl(tmp_path / "t.jsonl", keyword_rows(40, seed=0))  # labels plain and royal
    config = finetune_config(tmp_path, bert, CLS, train)
    result = run_inproc("finetune", str(config), "--set", "model.config.bogus_key=1")
    assert_usage_error(result, "model.config.bogus_key", "is not a", "(bert) config key")
    assert not (tmp_path / "processed").exists()  # refused before preprocessing
    result = run_inproc("finetune", str(config), "--set", "model.config.num_labels=3")
    assert_usage_error(result, "model.config.num_labels", "the data has 2 labels")
    assert not (tmp_path / "run").exists()  # refused once the data's labels are known, before the run
    model = finetune_spec("classification").load_model(
        str(bert), "single_label", ["a", "b"], False, overrides={"hidden_dropout_prob": 0.25}
    )
    assert model.config.hidden_dropout_prob == 0.25  # a valid override is applied, not dropped


def test_lm_data_or_no_finetune_section_exits_2(tmp_path, bert):
    lm = make_processed_dir(tmp_path / "lm", objective="mlm")
    train = write_jsonl(tmp_path / "t.jsonl", keyword_rows(8, seed=0))
    config = finetune_config(tmp_path, bert, CLS, train)
    result = run_inproc("finetune", str(config), "--set", f"data.processed_dir={lm}")
    assert_usage_error(result, "data.processed_dir", "language-model data")
    assert result.stdout == "" and not (tmp_path / "run").exists()
    result = run_inproc("finetune", str(config), "--set", "finetune=null")
    assert_usage_error(result, "finetune", "is missing")
    assert result.stdout == "" and not (tmp_path / "run").exists() and not (tmp_path / "processed").exists()


def test_no_validation_split_trains_all_epochs_and_final_holds_the_last_weights(tmp_path, bert):
    """validation_fraction 0 and no validation sources: no evaluation, final/ = the last step's weights."""
    from safetensors.torch import load_file

    train = write_jsonl(tmp_path / "t.jsonl", keyword_rows(40, seed=0))
    config = finetune_config(tmp_path, bert, {"task": "classification", "max_length": 32}, train,
                             batch_size=8, epochs=2, save_every=10)  # fmt: skip
    final = _finetune(config, "--set", "data.validation_fraction=0")
    assert final == tmp_path / "run" / "final"
    assert not (tmp_path / "processed" / "validation").exists()
    assert sorted(read_metrics(tmp_path / "run")) == list(range(1, 11))
    assert read_metrics(tmp_path / "run", "eval") == {}
    last = load_file(tmp_path / "run" / "checkpoints" / "step-00000010" / "model.safetensors")
    saved = load_file(final / "model.safetensors")
    assert saved.keys() == last.keys() and all(torch.equal(saved[k], last[k]) for k in saved)
