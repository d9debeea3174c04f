"""`config validate` catches what `pretrain` would refuse, before any training starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmtool.config import load_config
from lmtool.errors import ConfigError
from lmtool.validate import validate
from tests.conftest import assert_usage_error
from tests.eval_fixtures import run_inproc


def tiny(tmp_path: Path, extra: str = "") -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text\n")
    path = tmp_path / "c.yaml"
    path.write_text(
        f"data:\n  sources: [{{path: {corpus}}}]\n"
        "model:\n  arch: gpt2\n  config: {n_layer: 2, n_embd: 64, n_head: 2}\n"
        "train:\n  batch_size: 4\n" + extra
    )
    return path


def test_global_batch_not_a_multiple_of_the_micro_batch_exits_2(tmp_path):
    result = run_inproc("config", "validate", str(tiny(tmp_path)), "--set", "train.global_batch_size=10")
    assert_usage_error(result, "train.global_batch_size", "multiple of batch_size x processes = 4 x 1")


@pytest.mark.parametrize(
    ("overrides", "key", "match"),
    [
        (["train.global_batch_size=12"], "train.global_batch_size", "4 x 2 = 8"),  # under WORLD_SIZE=2
        (
            ["model.config.n_layers=3"],
            "model.config.n_layers",
            "not a gpt2 config key.*'model.config.n_layer'",
        ),
        (["model.arch=lstm", "model.config={n_layer: 2}"], "model.config.n_layer", "not a lstm config key"),
        (["train.resume=/nonexistent/step-00000100"], "train.resume", "not found"),
    ],
)
def test_validate_refuses_what_pretrain_would(tmp_path, monkeypatch, overrides, key, match):
    monkeypatch.setenv("WORLD_SIZE", "2")
    config = load_config(tiny(tmp_path), overrides)
    with pytest.raises(ConfigError, match=match) as caught:
        validate(config)
    assert caught.value.key == key


def test_validate_accepts_a_consistent_config(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    (tmp_path / "ckpt").mkdir()
    extra = f"  global_batch_size: 16\n  resume: {tmp_path / 'ckpt'}\n"
    validate(load_config(tiny(tmp_path, extra)))
    validate(load_config(tiny(tmp_path), ["model.arch=lstm", "model.config={hidden_size: 64}"]))


def test_validate_checks_model_config_against_init_from(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path / "m")
    init = [f"model.init_from={tmp_path / 'm'}"]
    with pytest.raises(ConfigError, match="not a .* config key.*'model.config.n_layer'") as caught:
        validate(load_config(tiny(tmp_path), [*init, "model.config.n_layers=3"]))
    assert caught.value.key == "model.config.n_layers"
    labels = ["finetune={task: classification, labels: [a, b]}", "model.config={num_labels: 3}"]
    with pytest.raises(ConfigError, match="the data has 2 labels") as caught:
        validate(load_config(tiny(tmp_path), [*init, *labels]))
    assert caught.value.key == "model.config.num_labels"
    with pytest.raises(ConfigError, match="changes the weights of model.init_from") as caught:
        validate(load_config(tiny(tmp_path), [*init, "model.config={n_layer: 3}"]))
    assert caught.value.key == "model.config.n_layer"
    validate(load_config(tiny(tmp_path), [*init, "model.config={n_layer: 1, resid_pdrop: 0.3}"]))


def test_preprocess_reads_positions_as_models_do(tmp_path):
    """One place says which config key holds a model's positions (positions.max_positions)."""
    from lmtool.positions import model_positions

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "custom", "max_sequence_length": 64}')
    config = load_config(tiny(tmp_path), [f"model.init_from={tmp_path / 'model'}"])
    assert model_positions(config)[0] == 64
    assert model_positions(load_config(tiny(tmp_path), ["model.config.n_positions=96"]))[0] == 96
