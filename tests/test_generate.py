"""`lmtool generate`: agrees with transformers, reproducible, batched == unbatched, pipeline-friendly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, assert_usage_error
from tests.eval_fixtures import run_inproc, save_causal_model, save_lstm_model, save_masked_model


@pytest.fixture(scope="module")
def causal_model_dir(tmp_path_factory):
    return save_causal_model(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def masked_model_dir(tmp_path_factory):
    return save_masked_model(tmp_path_factory.mktemp("bert"))


PROMPTS = [
    "The king and",
    "A dog sleeps near the river in the",
    "Every bird",
    "Queen",
    "The hills of spring and the sea",
]


def generate_jsonl(model_dir, *args: str, input: str | None = None) -> list[dict]:
    result = run_inproc("generate", "--model", str(model_dir), "--format", "jsonl", *args, input=input)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_greedy_equals_model_generate(causal_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(causal_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(causal_model_dir)
    records = generate_jsonl(causal_model_dir, "--greedy", "-n", "12", *PROMPTS[:2])
    for prompt, record in zip(PROMPTS[:2], records, strict=True):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12)
        new = out[0, ids.shape[1] :].tolist()
        if tokenizer.eos_token_id in new:
            new = new[: new.index(tokenizer.eos_token_id)]
        assert record["text"] == tokenizer.decode(new)
        assert record["tokens"] == len(new)
        assert record["finish_reason"] == ("length" if len(new) == 12 else "eos")


def test_batched_equals_unbatched_for_greedy(causal_model_dir):
    batched = generate_jsonl(causal_model_dir, "--greedy", "-n", "10", "--batch-size", "16", *PROMPTS)
    single = generate_jsonl(causal_model_dir, "--greedy", "-n", "10", "--batch-size", "1", *PROMPTS)
    assert [r["prompt"] for r in batched] == PROMPTS
    assert [r["text"] for r in batched] == [r["text"] for r in single]


def test_lstm_batched_equals_unbatched(tmp_path):
    """A recurrent model would carry left padding in its state: lmtool must not batch it blindly."""
    model_dir = save_lstm_model(tmp_path / "lstm")
    batched = generate_jsonl(model_dir, "--greedy", "-n", "8", "--batch-size", "16", *PROMPTS)
    single = generate_jsonl(model_dir, "--greedy", "-n", "8", "--batch-size", "1", *PROMPTS)
    assert [r["text"] for r in batched] == [r["text"] for r in single]


def test_same_seed_same_samples(causal_model_dir):
    args = ("--sample", "--temperature", "1.5", "-n", "16", "--num-return-sequences", "2", *PROMPTS[:3])
    first = generate_jsonl(causal_model_dir, "--seed", "7", *args)
    again = generate_jsonl(causal_model_dir, "--seed", "7", *args)
    other = generate_jsonl(causal_model_dir, "--seed", "8", *args)
    assert len(first) == 6 and [r["sample"] for r in first] == [0, 1] * 3
    assert [r["text"] for r in first] == [r["text"] for r in again]
    assert [r["text"] for r in first] != [r["text"] for r in other]


def test_stdin_jsonl_in_jsonl_out_with_per_prompt_settings(causal_model_dir):
    lines = [
        json.dumps({"prompt": "The king", "max_new_tokens": 3, "do_sample": False}),
        "A dog sleeps",
        json.dumps({"prompt": "Every bird", "num_return_sequences": 3, "seed": 1}),
    ]
    records = generate_jsonl(causal_model_dir, "-n", "5", input="\n".join(lines) + "\n\n")
    assert [(r["index"], r["sample"]) for r in records] == [(0, 0), (1, 0), (2, 0), (2, 1), (2, 2)]
    assert records[0]["settings"]["max_new_tokens"] == 3 and records[0]["tokens"] <= 3
    assert records[1]["settings"]["max_new_tokens"] == 5
    assert records[2]["prompt"] == "Every bird" and records[2]["settings"]["seed"] == 1
    for record in records:
        assert set(record) == {"index", "prompt", "sample", "text", "tokens", "finish_reason", "settings"}
        assert record["finish_reason"] in ("stop", "length", "eos")


def test_stop_strings_cut_the_text(causal_model_dir):
    [full] = generate_jsonl(causal_model_dir, "--greedy", "-n", "20", PROMPTS[1])
    text = full["text"]
    assert len(text) > 10, text
    stop = text[6:9]
    [cut] = generate_jsonl(
        causal_model_dir, "--greedy", "-n", "20", "--stop", stop, "--stop", "never-there", PROMPTS[1]
    )
    assert cut["text"] == text[: text.find(stop)]
    assert cut["finish_reason"] == "stop"
    assert cut["tokens"] < 20  # generation stopped early, not just cut afterwards


def test_beam_search_returns_sequences_per_prompt(causal_model_dir):
    records = generate_jsonl(
        causal_model_dir,
        "--greedy",
        "--num-beams",
        "3",
        "--num-return-sequences",
        "2",
        "-n",
        "6",
        *PROMPTS[:2],
    )
    assert [(r["index"], r["sample"]) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_text_format_streams_the_same_text(causal_model_dir):
    [record] = generate_jsonl(causal_model_dir, "--greedy", "-n", "12", PROMPTS[0])
    result = run_inproc(
        "generate", "--model", str(causal_model_dir), "--format", "text", "--greedy", "-n", "12", PROMPTS[0]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == PROMPTS[0] + record["text"] + "\n"


def test_fill_mask_returns_k_candidates_per_mask(masked_model_dir):
    [record] = generate_jsonl(masked_model_dir, "--fill-top-k", "3", "the [MASK] walks to the [MASK] .")
    assert len(record["masks"]) == 2
    for mask in record["masks"]:
        scores = [c["score"] for c in mask["candidates"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and sum(scores) <= 1.0
        assert not any(c["token"].startswith("[") for c in mask["candidates"])  # no special tokens
    assert "[MASK]" not in record["text"]


def test_shell_pipeline_one_json_line_per_prompt(causal_model_dir, tmp_path):
    """`printf 'a\\nb\\n' | lmtool generate --model M | wc -l` prints 2 and exits 0; the lines are JSON."""
    copy = tmp_path / "out.jsonl"
    cmd = (
        f"set -o pipefail; printf 'a\\nb\\n' | {sys.executable} -m lmtool generate --model {causal_model_dir} -n 4 --seed 1"
        f" | tee {copy} | wc -l"
    )
    out = subprocess.run(
        ["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, env=_env(), timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
    assert [json.loads(line)["prompt"] for line in copy.read_text().splitlines()] == ["a", "b"]


def _env() -> dict:
    import os

    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


# --------------------------------------------------------------------------- bad input: exit 2, one line


def test_missing_model_dir(tmp_path):
    assert_usage_error(
        run_inproc("generate", "--model", str(tmp_path / "nope"), "hi"), "model directory not found", "nope"
    )


def test_model_dir_without_tokenizer(causal_model_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(causal_model_dir / name, bare / name)
    assert_usage_error(run_inproc("generate", "--model", str(bare), "hi"), "has no tokenizer")


def test_fill_mask_on_causal_lm(causal_model_dir):
    result = run_inproc(
        "generate", "--model", str(causal_model_dir), "--set", "generate.mode=fill-mask", "a [MASK]"
    )
    assert_usage_error(result, "fill-mask needs a masked LM", "no mask token")


def test_sampling_options_on_masked_lm_are_named(masked_model_dir):
    result = run_inproc(
        "generate", "--model", str(masked_model_dir), "--temperature", "0.5", "--num-beams", "2", "a [MASK]"
    )
    assert_usage_error(result, "masked LM", "temperature, num_beams")
    line = json.dumps({"prompt": "a [MASK]", "top_p": 0.5})
    assert_usage_error(
        run_inproc("generate", "--model", str(masked_model_dir), input=line + "\n"), "stdin:1", "top_p"
    )


def test_fill_mask_prompt_without_mask(masked_model_dir):
    result = run_inproc("generate", "--model", str(masked_model_dir), "a [MASK]", "no mask here")
    assert_usage_error(result, "argument 2", "has no [MASK]")
    assert result.stdout == ""


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_prompt_file(causal_model_dir, tmp_path, content):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(content)
    assert_usage_error(
        run_inproc("generate", "--model", str(causal_model_dir), "--file", str(prompts)),
        "prompts.txt",
        "no prompts",
    )


def test_malformed_json_line_names_the_line(causal_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "ok"}\n{"prompt": "broken\n')
    result = run_inproc("generate", "--model", str(causal_model_dir), "--file", str(prompts))
    assert_usage_error(result, "prompts.jsonl:2", "malformed JSON")
    assert result.stdout == ""


def test_bad_per_prompt_setting_names_line_and_key(causal_model_dir):
    lines = "hello\n" + json.dumps({"prompt": "x", "temprature": 1.0}) + "\n"
    assert_usage_error(
        run_inproc("generate", "--model", str(causal_model_dir), input=lines), "stdin:2", "temprature"
    )
    lines = json.dumps({"prompt": "x", "top_p": 7}) + "\n"
    assert_usage_error(
        run_inproc("generate", "--model", str(causal_model_dir), input=lines), "stdin:1", "top_p"
    )


def test_beam_search_with_more_sequences_than_beams(causal_model_dir):
    """Sampled beam search too: transformers refuses num_return_sequences > num_beams either way."""
    args = ("--num-beams", "2", "--num-return-sequences", "3", "-n", "4")
    for mode in ("--sample", "--greedy"):
        result = run_inproc("generate", "--model", str(causal_model_dir), mode, *args, "hi")
        assert_usage_error(result, "num_return_sequences (3) must be at most num_beams (2)")
    line = json.dumps({"prompt": "hi", "num_beams": 2, "num_return_sequences": 3}) + "\n"
    result = run_inproc("generate", "--model", str(causal_model_dir), "--sample", input=line)
    assert_usage_error(result, "stdin:1", "num_return_sequences")


def test_seed_applies_to_every_batch(causal_model_dir):
    """Two lines with the same prompt and seed give the same text, though the seed value never changes."""
    line = json.dumps({"prompt": "The king", "seed": 3, "max_new_tokens": 12, "temperature": 1.5})
    records = generate_jsonl(causal_model_dir, "--batch-size", "1", input=f"{line}\n{line}\n")
    assert len(records) == 2 and records[0]["text"] == records[1]["text"]
