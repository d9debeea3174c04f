"""Model settings that cannot work fail before any time is spent, with one exit-2 line naming the key:
build-time and first-forward rejections, key/value heads, a checkpoint paired with another tokenizer,
hub names on a machine that cannot reach the hub."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import constants
from safetensors.torch import load_file
from transformers import AutoTokenizer

from lmtool.config import load_config
from lmtool.model_check import check_model_config
from lmtool.models import build_model
from tests.conftest import ROOT, assert_usage_error
from tests.engine_fixtures import make_processed_dir, tiny_config
from tests.eval_fixtures import corpus, run_inproc, save_causal_model, save_masked_model

GPT2 = {"n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64}


def raw_config(tmp_path: Path, *, model: dict | None = None, **data) -> Path:
    """A config that would preprocess a raw text file (so a late failure would leave processed data)."""
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(corpus(300)), encoding="utf-8")
    config = {
        "run": {"name": "m", "output_dir": str(tmp_path / "run")},
        "data": {"sources": [{"path": str(text)}], "processed_dir": str(tmp_path / "processed"), "block_size": 16, **data},
        "tokenizer": {"train": {"vocab_size": 200}},
        "model": model or {"arch": "gpt2", "config": GPT2},
        "train": {"max_steps": 2, "batch_size": 2, "precision": "fp32", "compile": False, "eval_every": 0, "save_every": 0},
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- build and first forward


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["model.config.n_head=3"], ["model.config.n_head", "rejected by gpt2", "divisible"]),
        (["model.config.n_embd=-4"], ["model.config.n_embd", "negative dimension"]),
        (  # builds, then the first forward pass fails: 3 key/value heads do not divide 4 heads
            ["model.arch=qwen2", "model.config={num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 3, hidden_size: 32, intermediate_size: 64}"],
            ["model.config.num_key_value_heads", "model.config.num_attention_heads", "rejected by qwen2"],
        ),
        (["data.objective=mlm", "data.block_size=2", "model.arch=bert", "model.config={}"], ["data.block_size", "at least 3"]),
        (["run.output_dir=${data.sources.0.path}"], ["run.output_dir", "is a file"]),
        (["run.output_dir=${data.sources.0.path}/run"], ["run.output_dir", "lies under", "corpus.txt"]),
    ],
)  # fmt: skip
def test_unworkable_settings_exit_2_before_preprocessing(tmp_path, overrides, fragments):
    args = ["pretrain", str(raw_config(tmp_path))]
    for item in overrides:
        args += ["--set", item]
    assert_usage_error(run_inproc(*args), *fragments)
    assert not (tmp_path / "processed").exists()


def test_config_validate_runs_the_forward_probe(tmp_path):
    config = str(raw_config(tmp_path))
    assert run_inproc("config", "validate", config).returncode == 0
    result = run_inproc("config", "validate", config, "--set", "model.config.n_embd=31")
    assert_usage_error(result, "model.config.n_embd", "rejected by gpt2")


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_attention_heads_alone_set_the_key_value_heads(tmp_path, arch):
    sizes = "{num_hidden_layers: 1, num_attention_heads: 2, hidden_size: 32, intermediate_size: 64}"
    config = load_config(raw_config(tmp_path), [f"model.arch={arch}", f"model.config={sizes}"])
    check_model_config(config)
    tokenizer = AutoTokenizer.from_pretrained(save_causal_model(tmp_path / "gpt2"))
    model = build_model(config, tokenizer)
    assert model.config.num_key_value_heads == 2
    ids = torch.arange(16).reshape(2, 8)
    assert torch.isfinite(model(input_ids=ids, labels=ids).loss)


def test_gradient_checkpointing_raises_no_library_warning(tmp_path):
    data = make_processed_dir(tmp_path / "processed")
    config = tiny_config(tmp_path, data, max_steps=1, gradient_checkpointing=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_inproc("pretrain", str(config)).returncode == 0
    # the CLI library's own deprecations (typer 0.24 with click 8.5 on the lowest versions) are not the model's
    assert [
        str(w.message)
        for w in caught
        if issubclass(w.category, FutureWarning | DeprecationWarning) and "click" not in str(w.message)
    ] == []


# --------------------------------------------------------------------------- init_from and its tokenizer


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save_masked_model(tmp_path_factory.mktemp("bert"))


def _bert_run(tmp_path: Path, bert_dir: Path, *overrides: str):
    config = raw_config(tmp_path, objective="mlm", model={"init_from": str(bert_dir)})
    args = ["pretrain", str(config)]
    for item in overrides:
        args += ["--set", item]
    return run_inproc(*args)


def test_init_from_with_a_new_tokenizer_is_refused_before_preprocessing(tmp_path, bert_dir):
    own = len(AutoTokenizer.from_pretrained(bert_dir))
    result = _bert_run(tmp_path, bert_dir)
    assert_usage_error(result, "model.init_from", f"{own:,}-token", "200-token", "model.resize_embeddings")
    assert not (tmp_path / "processed").exists()


def test_init_from_with_a_processed_dir_of_another_tokenizer_is_refused(tmp_path, bert_dir):
    data = make_processed_dir(tmp_path / "processed", objective="mlm")
    config = tiny_config(tmp_path, data, objective="mlm", arch="bert", max_steps=1)
    args = ["--set", f"model.init_from={bert_dir}", "--set", f"tokenizer.path={bert_dir}"]
    result = run_inproc("pretrain", str(config), *args)  # the 32-wide config is not the 64-wide checkpoint's
    assert_usage_error(result, "model.config.hidden_size", "changes the weights of model.init_from")
    result = run_inproc("pretrain", str(config), *args, "--set", "model.config={}")
    assert_usage_error(result, "model.init_from", "the tokenizer in", "45 tokens")
    assert not (tmp_path / "run" / "final").exists()


def test_init_from_trains_with_the_checkpoints_tokenizer(tmp_path, bert_dir):
    result = _bert_run(tmp_path, bert_dir, f"tokenizer.path={bert_dir}", "tokenizer.train=null")
    assert result.returncode == 0, result.stderr
    assert AutoTokenizer.from_pretrained(tmp_path / "run" / "final").get_vocab() == (
        AutoTokenizer.from_pretrained(bert_dir).get_vocab()
    )


def test_resize_embeddings_keeps_the_vectors_of_shared_tokens(tmp_path, bert_dir):
    result = _bert_run(tmp_path, bert_dir, "model.resize_embeddings=true", "train.lr=1e-9")
    assert result.returncode == 0, result.stderr
    assert "model.resize_embeddings: new embeddings" in result.stderr
    old_vocab = AutoTokenizer.from_pretrained(bert_dir).get_vocab()
    new_vocab = AutoTokenizer.from_pretrained(tmp_path / "run" / "final").get_vocab()
    key = "bert.embeddings.word_embeddings.weight"
    old = load_file(bert_dir / "model.safetensors")[key]
    new = load_file(tmp_path / "run" / "final" / "model.safetensors")[key]
    assert new.shape[0] >= len(new_vocab) and new_vocab != old_vocab
    for token in ("[CLS]", "[MASK]", "the", "king"):
        assert torch.allclose(new[new_vocab[token]], old[old_vocab[token]], atol=1e-4), token


def test_resize_embeddings_needs_init_from(tmp_path):
    result = run_inproc("pretrain", str(raw_config(tmp_path)), "--set", "model.resize_embeddings=true")
    assert_usage_error(result, "model.resize_embeddings", "applies only with model.init_from")


# --------------------------------------------------------------------------- hub names, hub unreachable


def _entry_points(tmp_path: Path) -> dict[str, list[str]]:
    config = str(raw_config(tmp_path))
    return {
        "generate.model": ["generate", "--model", "lmtool-test/no-such-model", "hi"],
        "evaluate.model": ["evaluate", "--model", "lmtool-test/no-such-model", "--data", str(tmp_path / "corpus.txt")],
        "model.init_from": ["pretrain", config, "--set", "model.init_from=lmtool-test/no-such-model", "--set", "model.resize_embeddings=true"],
        "tokenizer.path": ["preprocess", config, "--set", "tokenizer.path=lmtool-test/no-such-tok", "--set", "tokenizer.train=null"],
        "data.sources.0.hf": ["preprocess", config, "--set", "data.sources=[{hf: lmtool-test/no-such-data}]"],
    }  # fmt: skip


@pytest.mark.parametrize(
    "key", ["generate.model", "evaluate.model", "model.init_from", "tokenizer.path", "data.sources.0.hf"]
)
@pytest.mark.parametrize(("offline", "endpoint", "says"), [
    (True, constants.ENDPOINT, "HF_HUB_OFFLINE is set"),
    (False, "http://127.0.0.1:9", "neither a local directory nor reachable"),  # a closed port
])  # fmt: skip
def test_hub_names_fail_fast_when_the_hub_cannot_be_reached(
    tmp_path, monkeypatch, key, offline, endpoint, says
):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    start = time.monotonic()
    result = run_inproc(*_entry_points(tmp_path)[key])
    assert time.monotonic() - start < 15
    assert_usage_error(result, key, "lmtool-test/no-such-", says)
    assert not (tmp_path / "processed").exists()


@pytest.mark.slow
def test_an_unreachable_hub_uses_a_cached_copy_and_an_uncached_name_fails_in_one_line(tmp_path):
    """Real environment variables in a fresh process: HF_ENDPOINT at a closed port, nothing offline."""
    snapshot = tmp_path / "hub" / "models--lmtool-test--cached" / "snapshots" / "0123abcd"
    save_causal_model(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_HUB_OFFLINE", None)

    def generate(name: str) -> subprocess.CompletedProcess:
        args = [sys.executable, "-m", "lmtool", "generate", "--model", name, "-n", "4", "--greedy", "hi"]
        return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    cached = generate("lmtool-test/cached")
    assert cached.returncode == 0, cached.stderr
    assert "using the cached copy of lmtool-test/cached" in cached.stderr
    missing = generate("lmtool-test/missing")
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        "error: generate.model: 'lmtool-test/missing' is neither a local directory nor reachable: "
        "cannot connect to 127.0.0.1:9 (offline? HF_HUB_OFFLINE=1 uses cached files only)"
    ]
