"""`lmtool evaluate`: perplexity checked against an independent computation, reproducible MLM metrics."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import assert_usage_error
from tests.eval_fixtures import corpus, run_inproc, save_causal_model, save_masked_model, save_processed

BLOCK = 32


@pytest.fixture(scope="module")
def causal_model_dir(tmp_path_factory):
    return save_causal_model(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def masked_model_dir(tmp_path_factory):
    return save_masked_model(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def clm_data(tmp_path_factory, causal_model_dir):
    return save_processed(
        tmp_path_factory.mktemp("clm"), causal_model_dir, objective="clm", block_size=BLOCK, texts=corpus(30)
    )


@pytest.fixture(scope="module")
def mlm_data(tmp_path_factory, masked_model_dir):
    return save_processed(
        tmp_path_factory.mktemp("mlm"), masked_model_dir, objective="mlm", block_size=BLOCK, texts=corpus(60)
    )


def evaluate(model_dir, *args: str) -> dict:
    result = run_inproc("evaluate", "--model", str(model_dir), *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def independent_perplexity(model_dir, stream: list[int], window: int, stride: int) -> tuple[float, int]:
    """The sliding-window method written out with plain transformers forward passes (model-computed loss)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor(stream)
    nll, scored, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        targets = end - prev_end
        inputs = ids[begin:end]
        labels = inputs.clone()
        labels[:-targets] = -100
        with torch.no_grad():
            loss = model(inputs[None], labels=labels[None]).loss
        count = int((labels[1:] != -100).sum())
        nll += float(loss) * count
        scored += count
        prev_end = end
        if end == len(ids):
            break
    return math.exp(nll / scored), scored


def validation_stream(data_dir) -> list[int]:
    from datasets import load_from_disk

    return [int(t) for row in load_from_disk(str(data_dir / "validation"))["input_ids"] for t in row]


@pytest.mark.parametrize("stride", [48, 16], ids=["stride=window", "stride<window"])
def test_sliding_window_perplexity_matches_independent_computation(causal_model_dir, clm_data, stride):
    result = evaluate(
        causal_model_dir,
        "--data",
        str(clm_data),
        "--max-length",
        "48",
        "--stride",
        str(stride),
        "--batch-size",
        "3",
    )
    expected, scored = independent_perplexity(causal_model_dir, validation_stream(clm_data), 48, stride)
    assert result["tokens"] == scored
    assert result["perplexity"] == pytest.approx(expected, rel=1e-4)
    assert (result["window"], result["stride"]) == (48, stride)


def test_stride_equal_to_window_on_one_block_is_one_forward_pass(causal_model_dir, clm_data):
    import torch
    from transformers import AutoModelForCausalLM

    result = evaluate(
        causal_model_dir, "--data", str(clm_data), "--max-samples", "1", "--max-length", str(BLOCK)
    )
    block = torch.tensor(validation_stream(clm_data)[:BLOCK])[None]
    model = AutoModelForCausalLM.from_pretrained(causal_model_dir).eval()
    with torch.no_grad():
        loss = float(model(block, labels=block).loss)
    assert result["tokens"] == BLOCK - 1
    assert result["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)


def test_raw_text_bits_per_byte_and_separate_documents(causal_model_dir, tmp_path):
    from transformers import AutoTokenizer

    docs = ["Le roi et la reine: café, crème brûlée.", "The dog sleeps near the river.", "Every bird sings."]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    joined = evaluate(causal_model_dir, "--data", str(data), "--output", str(tmp_path / "a.json"))
    separate = evaluate(
        causal_model_dir,
        "--data",
        str(data),
        "--set",
        "evaluate.documents=separate",
        "--output",
        str(tmp_path / "b.json"),
    )
    text_bytes = sum(len(d.encode("utf-8")) for d in docs)
    assert joined["bytes"] == separate["bytes"] == text_bytes > sum(len(d) for d in docs)
    assert joined["bits_per_byte"] == pytest.approx(
        joined["loss"] * joined["tokens"] / math.log(2) / text_bytes
    )
    tok = AutoTokenizer.from_pretrained(causal_model_dir)
    doc_tokens = sum(len(tok(d)["input_ids"]) + 1 for d in docs)  # each document and its EOS
    assert joined["tokens"] == doc_tokens - 1  # the first token has no context
    assert separate["tokens"] == doc_tokens  # each document follows a start token, so all are scored
    assert joined["loss"] != separate["loss"]


def test_eval_json_written_in_the_model_dir(causal_model_dir, clm_data):
    result = evaluate(causal_model_dir, "--data", str(clm_data), "--max-samples", "2")
    assert json.loads((causal_model_dir / "eval.json").read_text()) == result


def test_masked_lm_metrics_are_reproducible(masked_model_dir, mlm_data, tmp_path):
    out = str(tmp_path / "eval.json")
    first = evaluate(masked_model_dir, "--data", str(mlm_data), "--output", out)
    again = evaluate(masked_model_dir, "--data", str(mlm_data), "--output", out, "--batch-size", "3")
    other = evaluate(masked_model_dir, "--data", str(mlm_data), "--output", out, "--set", "evaluate.seed=5")
    keys = ("loss", "accuracy", "masked_tokens")
    assert first["masked_tokens"] > 10 and 0.0 <= first["accuracy"] <= 1.0
    assert [first[k] for k in keys] == pytest.approx([again[k] for k in keys], rel=1e-6)
    assert first["masked_tokens"] != other["masked_tokens"] or first["loss"] != other["loss"]


def test_pseudo_perplexity_scores_every_token(masked_model_dir, mlm_data, tmp_path):
    result = evaluate(masked_model_dir, "--data", str(mlm_data), "--max-samples", "2", "--set", "evaluate.pseudo_perplexity=true",
                      "--output", str(tmp_path / "e.json"))  # fmt: skip
    from transformers import AutoTokenizer

    special = set(AutoTokenizer.from_pretrained(masked_model_dir).all_special_ids)
    first_two = validation_stream(mlm_data)[: 2 * BLOCK]
    assert result["pseudo_tokens"] == sum(t not in special for t in first_two)  # all but [CLS]/[SEP]
    assert result["pseudo_perplexity"] == pytest.approx(math.exp(result["pseudo_loss"]))


# --------------------------------------------------------------------------- bad input: exit 2, one line


@pytest.mark.parametrize(
    ("stride", "fragment"),
    [("80", "must be at most the window (48 tokens)"), ("0", "greater than or equal to 1")],
)
def test_bad_stride(causal_model_dir, clm_data, stride, fragment):
    result = run_inproc(
        "evaluate",
        "--model",
        str(causal_model_dir),
        "--data",
        str(clm_data),
        "--max-length",
        "48",
        "--stride",
        stride,
    )
    assert_usage_error(result, "evaluate.stride", fragment)


def test_missing_model_and_data(causal_model_dir, clm_data, tmp_path):
    assert_usage_error(
        run_inproc("evaluate", "--model", str(tmp_path / "gone"), "--data", str(clm_data)),
        "model directory not found",
    )
    assert_usage_error(
        run_inproc("evaluate", "--model", str(causal_model_dir), "--data", str(tmp_path / "x.txt")),
        "evaluate.data",
        "not found",
    )
    result = run_inproc(
        "evaluate", "--model", str(causal_model_dir), "--data", str(clm_data), "--split", "test"
    )
    assert_usage_error(result, "evaluate.split", "validation")


def test_data_of_the_other_objective(masked_model_dir, clm_data):
    assert_usage_error(
        run_inproc("evaluate", "--model", str(masked_model_dir), "--data", str(clm_data)),
        "clm data",
        "masked LM",
    )


def test_data_of_another_tokenizer_with_the_same_vocabulary_size(causal_model_dir, clm_data, tmp_path):
    """Two ids swapped: same size, different ids for the same text; the manifest's fingerprint tells."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(causal_model_dir, other)
    spec = json.loads((other / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    (other / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    result = run_inproc("evaluate", "--model", str(other), "--data", str(clm_data))
    assert_usage_error(result, "different tokenizer", str(clm_data), str(other))


def test_preprocess_records_the_tokenizer_fingerprint(tmp_path):
    from transformers import AutoTokenizer

    from lmtool.data.identity import tokenizer_identity

    (tmp_path / "a.txt").write_text("\n".join(corpus(40)) + "\n", encoding="utf-8")
    config = {
        "run": {"name": "t"},
        "data": {
            "sources": [{"path": str(tmp_path / "a.txt")}],
            "processed_dir": str(tmp_path / "p"),
            "block_size": 16,
        },
        "tokenizer": {"train": {"vocab_size": 300, "min_frequency": 1}},
    }
    (tmp_path / "c.yaml").write_text(json.dumps(config), encoding="utf-8")
    result = run_inproc("preprocess", str(tmp_path / "c.yaml"))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text(encoding="utf-8"))
    saved = AutoTokenizer.from_pretrained(tmp_path / "p" / "tokenizer")
    assert manifest["tokenizer_fingerprint"] == tokenizer_identity(saved)
