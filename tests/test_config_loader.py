"""Config loading: finite numbers only, no duplicate keys, no alias bombs, `${...}` for any type."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmtool.config import ConfigError, load_config
from tests.conftest import ROOT, assert_usage_error, run_cli
from tests.eval_fixtures import run_inproc

# The CLI runs in-process (run_inproc: the same main(), exit code and streams; a subprocess costs ~5 s of
# CPU), except for the alias bomb, whose subprocess timeout is the point.


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("train:\n  lr: .inf\n", "train.lr"),
        ("train:\n  betas: [0.9, .nan]\n", "train.betas.1"),
        ("train:\n  weight_decay: .inf\n", "train.weight_decay"),
        ("generate:\n  repetition_penalty: .Inf\n", "generate.repetition_penalty"),
    ],
)
def test_non_finite_numbers_exit_2_naming_the_key(tmp_path, text, key):
    assert_usage_error(run_inproc("config", "validate", str(write(tmp_path, text))), f"{key}:", "finite")


def test_non_finite_number_from_set_exits_2():
    result = run_inproc(
        "config", "show", str(ROOT / "configs" / "quickstart.yaml"), "--set", "generate.temperature=inf"
    )
    assert_usage_error(result, "generate.temperature:", "finite", "--set")


def test_duplicate_key_exits_2_naming_the_key_and_both_lines(tmp_path):
    path = write(tmp_path, "train:\n  lr: 0.1\n  batch_size: 2\n  lr: 0.2\n")
    assert_usage_error(run_inproc("config", "show", str(path)), "train.lr", "duplicate", "lines 2 and 4")


def test_anchors_and_merge_keys_still_load(tmp_path):
    text = "generate: &gen\n  top_k: 7\nevaluate:\n  batch_size: 3\ntrain:\n  <<: {lr: 0.01}\n  lr: 0.02\n"
    config = load_config(write(tmp_path, text))
    assert config.train.lr == 0.02 and config.generate.top_k == 7


def test_alias_bomb_is_refused_quickly(tmp_path):
    rows = ["model:", "  config:", "    a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    rows += [f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 6)]  # 10**6 values
    result = run_cli("config", "validate", str(write(tmp_path, "\n".join(rows) + "\n")), timeout=60)
    assert_usage_error(result, "alias", "c.yaml")


def test_env_interpolation_gives_numbers_and_booleans(tmp_path, monkeypatch):
    text = (
        "train:\n  max_steps: ${env:LMTOOL_STEPS}\n  lr: ${env:LMTOOL_LR}\n  keep_best: ${env:LMTOOL_BEST}\n"
        "  compile: ${env:LMTOOL_BEST}\n  eval_every: ${train.max_steps}\n"
        "model:\n  config: {n_layer: '${env:LMTOOL_STEPS}'}\nrun:\n  name: r${env:LMTOOL_STEPS}\n"
    )
    for name, value in {"LMTOOL_STEPS": "12", "LMTOOL_LR": "3e-4", "LMTOOL_BEST": "true"}.items():
        monkeypatch.setenv(name, value)
    result = run_inproc("config", "show", str(write(tmp_path, text)))
    assert result.returncode == 0, result.stderr
    assert "max_steps: 12\n" in result.stdout and "lr: 0.0003\n" in result.stdout
    assert "keep_best: true\n" in result.stdout and "compile: true\n" in result.stdout
    assert "eval_every: 12\n" in result.stdout and "n_layer: 12\n" in result.stdout
    assert "name: r12\n" in result.stdout


def test_env_interpolation_of_a_bad_number_names_the_key(tmp_path, monkeypatch):
    path = write(tmp_path, "train:\n  max_steps: ${env:LMTOOL_STEPS}\n")
    monkeypatch.setenv("LMTOOL_STEPS", "many")
    result = run_inproc("config", "validate", str(path))
    assert_usage_error(result, "train.max_steps", "integer", "c.yaml:2")


def test_source_file_is_not_a_config_key(tmp_path):
    assert_usage_error(
        run_inproc("config", "validate", str(write(tmp_path, "source_file: x.yaml\n"))), "source_file"
    )
    assert "source_file" not in run_inproc("config", "schema").stdout


def test_an_empty_environment_variable_is_named(monkeypatch):
    """`export MINILM=$(python -c ...)` with no python on PATH sets MINILM empty: the error used to be
    `model.init_from: directory not found (got '')`, naming no variable."""
    monkeypatch.setenv("MINILM", "")
    with pytest.raises(ConfigError, match="model.init_from.*environment variable MINILM, which is empty"):
        load_config(Path(__file__).parents[1] / "configs" / "finetune-sentiment.yaml")
