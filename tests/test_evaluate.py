"""`lmtool evaluate`: perplexity checked against an independent computation, reproducible MLM metrics."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import ROOT, SHARED_DATA, assert_usage_error
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


def token_nlls(model_dir, ids: list[int]) -> list[float]:
    """NLL of each token after the first, given all the tokens before it (one forward pass)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    return torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none").tolist()


def test_jsonl_records_joined_with_eos_between_and_separate_documents(causal_model_dir, tmp_path):
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
    tok = AutoTokenizer.from_pretrained(causal_model_dir)
    ids = [tok(d)["input_ids"] for d in docs]
    # One stream, EOS only between records, its first token unscored; the EOS tokens have no bytes.
    assert joined["tokens"] == sum(len(i) for i in ids) + len(docs) - 1 - 1
    first = len(tok.decode(ids[0][:1]).encode("utf-8"))
    assert joined["bytes"] == sum(len(d.encode("utf-8")) for d in docs) - first
    # Bits per byte leaves the EOS separators out of the numerator too (they have no bytes).
    stream = ids[0] + [tok.eos_token_id] + ids[1] + [tok.eos_token_id] + ids[2]
    assert len(stream) <= 64  # one window
    text_nll = sum(
        n
        for n, t in zip(token_nlls(causal_model_dir, stream), stream[1:], strict=True)
        if t != tok.eos_token_id
    )
    assert joined["bits_per_byte"] == pytest.approx(text_nll / math.log(2) / joined["bytes"], rel=1e-5)
    # Each record after a start token that is context only: every token of every record is scored.
    assert separate["tokens"] == sum(len(i) for i in ids)
    assert separate["bytes"] == sum(len(d.encode("utf-8")) for d in docs)
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


def hf_fixed_length_perplexity(model_dir, text: str, max_length: int, stride: int) -> tuple[float, int]:
    """The Hugging Face "Perplexity of fixed-length models" recipe, token-weighted, with plain transformers
    (scripts/hf_perplexity_recipe.py, which imports no lmtool code): (perplexity, scored tokens)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "hf_perplexity_recipe", ROOT / "scripts" / "hf_perplexity_recipe.py"
    )
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe.fixed_length_perplexity(model_dir, text, max_length, stride)


@pytest.fixture(scope="module")
def gpt2_tokenizer_model(tmp_path_factory):
    """A random 2-layer, 64-wide GPT-2 with the real GPT-2 tokenizer (50,257 tokens), context 128."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    source = SHARED_DATA / "gpt2-tokenizer"
    if not source.is_dir():
        pytest.skip(
            "../shared/data is not present (it ships beside the project in CI, not in a user's clone)"
        )
    path = tmp_path_factory.mktemp("gpt2-real-tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(source)
    torch.manual_seed(0)
    # Large initial weights: window losses differ widely, so any error in how windows are weighted shows.
    config = GPT2Config(
        n_layer=2, n_embd=64, n_head=2, n_positions=128, vocab_size=len(tokenizer), initializer_range=0.3
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_raw_text_perplexity_equals_the_hugging_face_recipe(gpt2_tokenizer_model, shared_data, tmp_path):
    """A text file is scored exactly as written (blank lines, no EOS added), as the recipe does."""
    play = (shared_data / "corpus" / "shakespeare" / "hamlet_gut.txt").read_text(encoding="utf-8")
    text = play[20000:23000]
    assert "\n\n" in text
    data = tmp_path / "hamlet.txt"
    data.write_text(text, encoding="utf-8")
    result = evaluate(gpt2_tokenizer_model, "--data", str(data), "--max-length", "64", "--stride", "24",
                      "--output", str(tmp_path / "e.json"))  # fmt: skip
    perplexity, tokens = hf_fixed_length_perplexity(gpt2_tokenizer_model, text, 64, 24)
    assert result["tokens"] == tokens
    assert result["perplexity"] == pytest.approx(perplexity, rel=1e-4)


def test_bits_per_byte_counts_the_bytes_of_the_scored_tokens(causal_model_dir, tmp_path):
    """One window, stride = window: tokens 1..N-1 are scored; bits = their NLL, bytes = their UTF-8 bytes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = "Café, crème brûlée: the king and the queen walk to the castle.\n\nEvery bird sings ☃.\n"
    data = tmp_path / "t.txt"
    data.write_text(text, encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(causal_model_dir)
    ids = tok(text)["input_ids"]
    assert len(ids) <= 64
    result = evaluate(causal_model_dir, "--data", str(data), "--output", str(tmp_path / "e.json"))
    model = AutoModelForCausalLM.from_pretrained(causal_model_dir).eval()
    with torch.no_grad():
        mean_nll = float(model(torch.tensor([ids]), labels=torch.tensor([ids])).loss)
    scored_bytes = len(text.encode("utf-8")) - len(tok.decode(ids[:1]).encode("utf-8"))
    assert result["tokens"] == len(ids) - 1
    assert result["bytes"] == scored_bytes
    assert result["bits_per_byte"] == pytest.approx(
        mean_nll * (len(ids) - 1) / math.log(2) / scored_bytes, rel=1e-5
    )


def test_bits_per_byte_leaves_out_unscored_window_starts_without_splitting_characters(tmp_path):
    """With stride = window, each window's first token is unscored; a character split across tokens
    counts once, with the token that completes it, wherever the windows fall."""
    import numpy as np
    from transformers import AutoTokenizer

    from lmtool.evaluation.perplexity import scored_ranges
    from lmtool.evaluation.text_bytes import range_bytes

    tok = AutoTokenizer.from_pretrained(save_causal_model(tmp_path / "m"))
    text = "The king 😀 and ☃ the queen: café. " * 6
    ids = np.array(tok(text)["input_ids"])
    total = len(text.encode("utf-8"))
    for window in range(2, 12):
        ranges = scored_ranges(len(ids), window, window)
        starts = [0, *range(window, len(ids), window)]
        assert sum(b - a for a, b in ranges) == len(ids) - len(starts)
        unscored = range_bytes(tok, ids, [(s, s + 1) for s in starts])
        assert range_bytes(tok, ids, ranges) + unscored == total


def test_default_window_is_the_trained_context(causal_model_dir, clm_data, tmp_path):
    """The model has 64 positions but was trained on 32-token blocks: evaluate defaults to 32."""
    import shutil

    model_dir = tmp_path / "trained-on-32"
    shutil.copytree(causal_model_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    (model_dir / "config.json").write_text(
        json.dumps({**config, "lmtool_block_size": BLOCK}), encoding="utf-8"
    )
    result = evaluate(model_dir, "--data", str(clm_data), "--output", str(tmp_path / "e.json"))
    assert result["window"] == BLOCK


def test_tokenizer_fingerprint_ignores_the_pad_token_but_not_the_separator(causal_model_dir):
    """preprocess gives a tokenizer without padding pad = EOS: the original must still match its data."""
    from transformers import AutoTokenizer

    from lmtool.data.identity import tokenizer_identity

    original = AutoTokenizer.from_pretrained(causal_model_dir)
    padded = AutoTokenizer.from_pretrained(causal_model_dir)
    padded.pad_token = None
    assert tokenizer_identity(padded) == tokenizer_identity(original)
    padded.eos_token = "a"
    assert tokenizer_identity(padded) != tokenizer_identity(original)
