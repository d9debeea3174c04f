"""`lmtool evaluate` on fine-tuned models: the task's metrics on a raw labeled file or a processed split,
labels mapped through the model's own label ids, unknown labels refused."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import assert_usage_error
from tests.eval_fixtures import _wordpiece_tokenizer, run_inproc

TINY = dict(
    num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
    max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)  # fmt: skip
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _save(path, auto, labels, favourite):
    """A tiny BERT with a task head whose logits favour label `favourite` whatever the text."""
    from transformers import BertConfig

    tokenizer = _wordpiece_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(**TINY, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})  # fmt: skip
    model = auto(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([5.0 if n == favourite else 0.0 for n in labels]))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def always_pos(tmp_path_factory):
    from transformers import BertForSequenceClassification

    return _save(tmp_path_factory.mktemp("cls"), BertForSequenceClassification, ["neg", "pos"], "pos")


@pytest.fixture(scope="module")
def always_person(tmp_path_factory):
    from transformers import BertForTokenClassification

    return _save(tmp_path_factory.mktemp("ner"), BertForTokenClassification, TAGS, "B-PER")


REVIEWS = "label,text\npos,the king sings\nneg,a dog sleeps\npos,the queen walks\npos,every bird sings\n"


def evaluate(*args):
    result = run_inproc("evaluate", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_classifier_on_a_raw_file_and_on_a_processed_split_with_other_label_ids(always_pos, tmp_path):
    data = tmp_path / "reviews.csv"
    data.write_text(REVIEWS)
    raw = evaluate("--model", str(always_pos), "--data", str(data))
    assert raw["task"] == "classification" and raw["examples"] == 4
    assert raw["accuracy"] == 0.75
    assert raw["confusion_matrix"] == [[0, 1], [0, 3]]  # rows: gold neg, pos (the model's ids)
    assert raw["per_class"]["pos"]["recall"] == 1.0 and raw["per_class"]["neg"]["support"] == 1
    assert json.loads((always_pos / "eval.json").read_text())["accuracy"] == 0.75

    # Preprocessed with the labels in the other order: ids 0/1 mean pos/neg there, neg/pos in the model.
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data:\n  sources: [{{path: {data}}}]\n  validation_sources: [{{path: {data}}}]\n"
        f"  processed_dir: {tmp_path / 'processed'}\nmodel:\n  init_from: {always_pos}\n"
        "finetune:\n  task: classification\n  labels: [pos, neg]\n  max_length: 32\n"
    )
    assert run_inproc("preprocess", str(config)).returncode == 0
    out = tmp_path / "out.json"
    processed = evaluate(str(config), "--model", str(always_pos), "--output", str(out))
    assert processed["data"].endswith("processed:validation")
    assert processed["accuracy"] == 0.75 and processed["confusion_matrix"] == raw["confusion_matrix"]
    assert json.loads(out.read_text())["f1_macro"] == processed["f1_macro"]


def test_tagger_reports_conlleval_entity_scores(always_person, tmp_path):
    data = tmp_path / "news.conll"
    data.write_text("-DOCSTART- O\n\nJohn\tB-PER\nran\tO\n\nParis\tB-LOC\n")
    result = evaluate(
        "--model", str(always_person), "--data", str(data), "--output", str(tmp_path / "e.json")
    )
    # Every word tagged B-PER: entities John, ran, Paris (PER); gold John (PER), Paris (LOC).
    assert result["task"] == "token_classification"
    assert result["precision"] == pytest.approx(1 / 3) and result["recall"] == 0.5
    assert result["f1"] == pytest.approx(0.4) and result["accuracy"] == pytest.approx(1 / 3)
    assert result["per_type"]["PER"]["precision"] == pytest.approx(1 / 3)
    assert result["per_type"]["LOC"]["recall"] == 0.0


def test_a_short_max_length_picks_a_window_overlap_that_fits(always_person, tmp_path):
    """`--max-length 16` exited 2 about finetune.stride, which the user never set (its default, 32)."""
    data = tmp_path / "news.conll"
    data.write_text("John\tB-PER\nran\tO\n\nParis\tB-LOC\n")
    result = evaluate("--model", str(always_person), "--data", str(data), "--max-length", "16",
                      "--output", str(tmp_path / "e.json"))  # fmt: skip
    assert result["recall"] == 0.5


def test_labels_the_model_does_not_know_and_mismatched_data_exit_2(always_pos, always_person, tmp_path):
    data = tmp_path / "r.csv"
    data.write_text(REVIEWS + "neutral,the sea\n")
    result = run_inproc("evaluate", "--model", str(always_pos), "--data", str(data))
    assert_usage_error(result, "'neutral'", "r.csv line 6", "neg, pos")
    assert result.stdout == ""
    conll = tmp_path / "t.conll"
    conll.write_text("IBM\tB-ORG\n")
    assert_usage_error(run_inproc("evaluate", "--model", str(always_person), "--data", str(conll)), "'B-ORG'")
    config = tmp_path / "c.yaml"
    config.write_text("finetune:\n  task: classification\n")
    result = run_inproc("evaluate", str(config), "--model", str(always_person), "--data", str(conll))
    assert_usage_error(result, "finetune.task", "token_classification model")


def test_labeled_and_language_model_data_are_not_mixed_up(always_pos, tmp_path):
    from tests.eval_fixtures import save_masked_model, save_processed

    data = tmp_path / "reviews.csv"
    data.write_text(REVIEWS)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data:\n  sources: [{{path: {data}}}]\n  processed_dir: {tmp_path / 'labeled'}\n"
        f"model:\n  init_from: {always_pos}\nfinetune:\n  task: classification\n  max_length: 32\n"
    )
    assert run_inproc("preprocess", str(config)).returncode == 0
    mlm = save_masked_model(tmp_path / "mlm")
    result = run_inproc("evaluate", "--model", str(mlm), "--data", str(tmp_path / "labeled"))
    assert_usage_error(result, "labeled", "not a fine-tuned one")
    lm_data = save_processed(
        tmp_path / "lm", mlm, objective="mlm", block_size=16, texts=["the king sings"] * 20
    )
    result = run_inproc("evaluate", "--model", str(always_pos), "--data", str(lm_data))
    assert_usage_error(result, "language-model data")


def test_task_models_without_a_metric_here_are_refused_not_scored_as_language_models(tmp_path):
    """A QA model used to be loaded as a causal LM with a random LM head and scored on text, exit 0;
    generate sampled from it likewise. evaluate now reads the data for questions (test_qa scores them)."""
    from transformers import BertConfig, BertForQuestionAnswering

    tokenizer = _wordpiece_tokenizer()
    config = BertConfig(**TINY, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    BertForQuestionAnswering(config).save_pretrained(tmp_path / "qa")
    tokenizer.save_pretrained(tmp_path / "qa")
    (tmp_path / "text.txt").write_text("the king sings. " * 20)
    result = run_inproc("evaluate", "--model", str(tmp_path / "qa"), "--data", str(tmp_path / "text.txt"))
    assert_usage_error(result, "text.txt", "no examples")  # read for questions (EM/F1), not as LM text
    result = run_inproc("generate", "--model", str(tmp_path / "qa"), "the king")
    assert_usage_error(result, "generate.model", "not a language model")
