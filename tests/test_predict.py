"""`lmtool predict`: labels agree with the model run text by text, input order survives batching,
entity offsets index the input exactly (extra spaces, accents, emoji, long texts), pipeline-friendly."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import assert_usage_error, run_cli
from tests.eval_fixtures import WORDS, _wordpiece_tokenizer, run_inproc, save_masked_model
from tests.finetune_fixtures import TINY_BERT as TINY
from tests.finetune_fixtures import save_classifier

TAGS = {"king": "B-PER", "queen": "I-PER", "castle": "B-LOC"}
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return save_classifier(tmp_path_factory.mktemp("cls"), ["neg", "pos"])


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory):
    """A tiny BERT tagger trained (plain torch, seeded, ~2 s) to tag king B-PER, queen I-PER, castle B-LOC."""
    from transformers import BertConfig, BertForTokenClassification

    tokenizer = _wordpiece_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(**TINY, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                        id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})  # fmt: skip
    model = BertForTokenClassification(config)
    vocab = sorted(set(WORDS))
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is faster, and the other xdist worker keeps its core
    try:
        for _ in range(150):
            sentences = [
                [vocab[i] for i in torch.randint(len(vocab), (12,), generator=gen)] for _ in range(16)
            ]
            enc = tokenizer(sentences, is_split_into_words=True, padding=True, return_tensors="pt")
            labels = torch.full_like(enc["input_ids"], -100)
            for row, words in enumerate(sentences):
                for pos, word in enumerate(enc.word_ids(row)):
                    if word is not None:
                        labels[row, pos] = LABELS.index(TAGS.get(words[word], "O"))
            loss = model(**enc, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("ner")
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def predict(model_dir, *args, input=None) -> list[dict]:
    result = run_inproc("predict", "--model", str(model_dir), *args, input=input)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


TEXTS = [
    "the king and the queen walk to the castle while a dog sleeps near the river",
    "every bird",
    "a song about the sea and the hills in the morning light of spring",
    "queen",
    "the dog sleeps",
    "while the king sings a song about the river and the castle",
    "light",
]


def test_labels_match_the_model_text_by_text_and_keep_input_order(classifier_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir).eval()
    tok = AutoTokenizer.from_pretrained(classifier_dir)
    records = predict(classifier_dir, "--batch-size", "2", *TEXTS)
    assert [r["text"] for r in records] == TEXTS
    for text, record in zip(TEXTS, records, strict=True):
        with torch.no_grad():
            probs = model(**tok(text, return_tensors="pt")).logits.softmax(-1)[0].tolist()
        assert record["scores"] == pytest.approx({"neg": probs[0], "pos": probs[1]}, abs=1e-5)
        assert record["label"] == ("pos" if probs[1] > probs[0] else "neg")
        assert record["score"] == pytest.approx(max(probs), abs=1e-5)
    assert predict(classifier_dir, "--batch-size", "7", *TEXTS) == records


def test_pairs_stdin_and_file(classifier_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir).eval()
    tok = AutoTokenizer.from_pretrained(classifier_dir)
    lines = [
        json.dumps({"text": "the king", "text_pair": "a dog sleeps"}),
        "{not json, so plain text",
        "",
        "queen",
    ]
    records = predict(classifier_dir, input="\n".join(lines) + "\n")
    assert [r["text"] for r in records] == ["the king", "{not json, so plain text", "queen"]
    assert records[0]["text_pair"] == "a dog sleeps" and "text_pair" not in records[1]
    with torch.no_grad():
        probs = model(**tok("the king", "a dog sleeps", return_tensors="pt")).logits.softmax(-1)[0].tolist()
    assert records[0]["scores"]["pos"] == pytest.approx(probs[1], abs=1e-5)
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    assert predict(classifier_dir, "--file", str(tmp_path / "in.txt")) == records


def test_multi_label_and_regression(tmp_path):
    multi = save_classifier(
        tmp_path / "multi", ["a", "b", "c"], "multi_label_classification", [2.0, -2.0, 3.0]
    )
    (record,) = predict(multi, "the king")
    assert record["labels"] == ["a", "c"] and "label" not in record
    assert record["scores"]["b"] == pytest.approx(torch.tensor(-2.0).sigmoid().item(), abs=1e-6)
    regression = save_classifier(tmp_path / "reg", ["score"], "regression", [0.25])
    assert predict(regression, "the king", "queen") == [{"text": "the king", "score": 0.25},
                                                         {"text": "queen", "score": 0.25}]  # fmt: skip


def test_entities_have_exact_offsets(tagger_dir):
    text = "  the  KÍNG 😀 walks to   the castle , Queen   "
    (record,) = predict(tagger_dir, text)
    entities = record["entities"]
    assert [(e["type"], e["text"]) for e in entities] == [
        ("PER", "KÍNG"),
        ("LOC", "castle"),
        ("PER", "Queen"),
    ]
    for e in entities:
        assert text[e["start"] : e["end"]] == e["text"]
        assert 0.5 < e["score"] <= 1.0
    (joined,) = predict(tagger_dir, "the king queen walk")  # B-PER I-PER: one entity of two words
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in joined["entities"]] == [
        ("PER", "king queen", 4, 14)
    ]


def test_byte_level_bpe_offsets_leave_out_whitespace(tmp_path):
    """GPT-2-style pre-tokenizers make whitespace-only words and carry the space in offsets: an entity
    still starts and ends on its first and last visible character, in every window."""
    from transformers import RobertaConfig, RobertaForTokenClassification

    from tests.eval_fixtures import _bpe_tokenizer

    tokenizer = _bpe_tokenizer()
    config = RobertaConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                           vocab_size=len(tokenizer), max_position_embeddings=40, pad_token_id=tokenizer.pad_token_id,
                           id2label={0: "O", 1: "I-X"}, label2id={"O": 0, "I-X": 1})  # fmt: skip
    model = RobertaForTokenClassification(config)
    with torch.no_grad():  # every word I-X: the whole text is one entity
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 3.0]))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    text = "  the  kíng 😀 walks,  to the   castle  "
    for args in [(), ("--max-length", "8", "--stride", "2")]:
        (record,) = predict(tmp_path, *args, text)
        assert [(e["start"], e["end"], e["text"]) for e in record["entities"]] == [(2, 37, text.strip())]


def test_long_text_is_windowed_with_nothing_left_untagged(tagger_dir):
    words = [("castle" if i % 7 == 3 else "the dog") for i in range(40)]
    text = " ".join(words)
    (record,) = predict(tagger_dir, "--max-length", "10", "--stride", "3", text)
    found = [(e["start"], e["end"]) for e in record["entities"]]
    expected, at = [], 0
    for word in words:
        if word == "castle":
            expected.append((at, at + 6))
        at += len(word) + 1
    assert found == expected
    assert all(e["type"] == "LOC" for e in record["entities"])


def test_not_a_classifier_is_refused(tmp_path, tagger_dir):
    masked = save_masked_model(tmp_path / "mlm")
    assert_usage_error(
        run_inproc("predict", "--model", str(masked), "the king"), "not a fine-tuned", "BertForMaskedLM"
    )
    pair = json.dumps({"text": "the king", "text_pair": "queen"})
    assert_usage_error(
        run_inproc("predict", "--model", str(tagger_dir), input=pair + "\n"), "stdin:1", "text_pair"
    )
    assert_usage_error(
        run_inproc("predict", "--model", str(tmp_path / "nope"), "x"), "model directory not found"
    )


def test_cli_help_and_json_lines_when_piped(classifier_dir, tagger_dir):
    page = run_inproc("predict", "--help").stdout
    assert "lmtool " in page.partition("Example:")[2] and page.split("\n\n")[1].strip()
    result = run_cli("predict", "--model", str(classifier_dir), input="the king\nqueen\n")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["the king", "queen"]
    table = run_inproc("predict", "--model", str(tagger_dir), "--format", "text", "the king sings")
    assert table.returncode == 0 and "PER" in table.stdout and "[4:8]  king" in table.stdout


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["B-PER", "I-PER", "O", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 3, 4)]),  # I- after O starts
        (["I-PER", "I-PER", "B-PER", "I-LOC"], [("PER", 0, 1), ("PER", 2, 2), ("LOC", 3, 3)]),  # IOB1
        (["S-PER", "B-LOC", "I-LOC", "E-LOC", "E-LOC", "O"], [("PER", 0, 0), ("LOC", 1, 3), ("LOC", 4, 4)]),
        (["B-PER", "I-PER"], [("PER", 0, 1)]),  # an entity that runs to the end
        (["PER", "PER", "O", "LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),  # IO tags without prefixes
    ],
)
def test_chunk_rules(tags, expected):
    """Entities are merged by the metric's own chunk rules (IO tags read as I- tags)."""
    from lmtool.tasks.decoding.entities import _prefixed
    from lmtool.tasks.metrics.ner import chunks

    assert [(kind, first, stop - 1) for kind, first, stop in chunks([_prefixed(t) for t in tags])] == expected
