"""The config contract: strict keys, typed values, overrides, interpolation, one-line errors."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lmtool.config import load_config, parse_override
from lmtool.errors import ConfigError, LmtoolError
from tests.conftest import ROOT, assert_usage_error, run_cli
from tests.eval_fixtures import run_inproc

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


# The error-contract tests run the CLI in-process (run_inproc: the same main(), exit code and streams; a
# subprocess costs ~5 s of CPU); --debug, --help and --version stay subprocesses, as a user runs them.


def test_show_applies_set_and_prints_parseable_yaml():
    result = run_inproc("config", "show", QUICKSTART, "--set", "train.lr=0.001")
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["train"]["lr"] == 0.001
    assert shown["run"]["output_dir"] == "runs/quickstart"  # ${run.name} resolved


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("trainn:\n  lr: 0.1\n", ["trainn: unknown key", "did you mean 'train'", "c.yaml:1"]),
        ("train:\n  lrr: 0.1\n", ["train.lrr: unknown key", "did you mean 'train.lr'", "c.yaml:2"]),
        ("train:\n  lr: fast\n", ["train.lr:", "valid number", "(got 'fast')", "c.yaml:2"]),
        ("train:\n  lr: -1\n", ["train.lr:", "greater than 0", "(got -1)"]),
        ("train:\n  precision: bf17\n", ["train.precision:", "'bf16'", "'fp32'", "(got 'bf17')"]),
        ("train:\n  lr: [1\n", ["c.yaml:3", "invalid YAML"]),
        ("model:\n  arch: gpt3\n", ["model.arch:", "unknown architecture", "lstm"]),
        ("train:\n  batch_size: 0\n", ["train.batch_size:", "greater than or equal to 1"]),
        (
            "data:\n  sources:\n    - {path: a.txt, hf: wikitext}\n",
            ["data.sources.0:", "exactly one of path, hf, builtin"],
        ),
    ],
)
def test_bad_config_exits_2_with_one_line_naming_the_key(tmp_path, text, fragments):
    result = run_inproc("config", "validate", str(write(tmp_path, text)))
    assert_usage_error(result, *fragments)


def test_missing_config_file_exits_2():
    assert_usage_error(
        run_inproc("config", "show", "does/not/exist.yaml"), "not found", "does/not/exist.yaml"
    )


def test_set_on_unknown_key_exits_2():
    assert_usage_error(
        run_inproc("config", "show", QUICKSTART, "--set", "train.foo=1"),
        "train.foo",
        "unknown key",
        "--set",
    )


def test_set_without_equals_exits_2():
    assert_usage_error(
        run_inproc("config", "show", QUICKSTART, "--set", "train.lr"), "--set", "key.path=value"
    )


def test_validate_checks_named_paths(tmp_path):
    result = run_inproc(
        "config", "validate", str(write(tmp_path, "data:\n  sources:\n    - path: /nonexistent/corpus.txt\n"))
    )
    assert_usage_error(result, "data.sources.0.path", "not found")


def test_traceback_only_with_debug(tmp_path):
    path = write(tmp_path, "train:\n  lr: -1\n")
    assert "Traceback" in run_cli("--debug", "config", "validate", str(path)).stderr


def test_override_values_are_yaml_and_may_contain_equals(tmp_path):
    assert parse_override("train.lr=3e-4") == (["train", "lr"], 3e-4)
    assert parse_override("train.betas=[0.9, 0.99]") == (["train", "betas"], [0.9, 0.99])
    assert parse_override("train.resume=a=b") == (["train", "resume"], "a=b")
    config = load_config(
        write(tmp_path, "run: {name: x}\n"), ["train.resume=ckpt=1", "model.config.n_layer=2"]
    )
    assert config.train.resume == "ckpt=1"
    assert config.model.config == {"n_layer": 2}


def test_interpolation_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LMTOOL_TEST_ROOT", "/scratch")
    config = load_config(
        write(tmp_path, "run:\n  name: exp1\n  output_dir: ${env:LMTOOL_TEST_ROOT}/${run.name}\n")
    )
    assert config.run.output_dir == "/scratch/exp1"
    assert config.evaluate.model == "/scratch/exp1/final"
    with pytest.raises(ConfigError, match="run.output_dir"):
        load_config(write(tmp_path, "run:\n  output_dir: ${run.nope}\n"))


def test_empty_file_gives_defaults(tmp_path):
    config = load_config(write(tmp_path, ""))
    assert config.train.lr > 0 and config.tokenizer.train is not None


def test_non_mapping_yaml_is_refused(tmp_path):
    with pytest.raises(LmtoolError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


class _VocabOnly:
    """Stands in for a tokenizer when only its size and special ids matter."""

    pad_token_id = bos_token_id = eos_token_id = cls_token_id = sep_token_id = 0

    def __len__(self) -> int:
        return 50257


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(path, monkeypatch):
    """Schema, and the model section: the architecture's config takes every key and the block fits.
    (The data paths of the real-size configs are the user's to provide; MINILM is the MiniLM package's
    model directory, which the finetune configs document how to export.)"""
    from lmtool.models import _config_from_scratch
    from lmtool.positions import check_fits, max_positions

    monkeypatch.setenv("MINILM", "/minilm/model")
    config = load_config(path)
    assert config.run.name
    if config.model.init_from is None:
        check_fits(config, max_positions(_config_from_scratch(config, _VocabOnly())), "model.config")
    if path.name.startswith("finetune-"):
        assert config.finetune is not None and config.model.init_from
        assert config.train.final_model == "best" and config.train.epochs


@pytest.mark.parametrize("name", ["finetune-sentiment.yaml", "finetune-ner.yaml"])
def test_small_finetune_configs_name_the_shared_data_from_the_repo_root(name, monkeypatch, shared_data):
    monkeypatch.setenv("MINILM", "/minilm/model")
    config = load_config(ROOT / "configs" / name)
    assert config.model.init_from == "/minilm/model"
    for source in (*config.data.sources, *config.data.validation_sources):
        assert (ROOT / source.path).is_file(), source.path


def test_schema_is_json_with_descriptions():
    result = run_inproc("config", "schema")
    assert result.returncode == 0
    import json

    schema = json.loads(result.stdout)
    assert schema["$defs"]["TrainConfig"]["properties"]["lr"]["description"]
    # the help's jq example runs (`.$defs...` was a jq syntax error)
    example = re.search(r"jq '([^']+)'", run_cli("config", "schema", "--help").stdout).group(1)
    if shutil.which("jq"):
        ran = subprocess.run(["jq", example], input=result.stdout, capture_output=True, text=True)
        assert ran.returncode == 0 and json.loads(ran.stdout)["description"], ran.stderr
    assert example == '.["$defs"].TrainConfig.properties.lr'


def test_help_and_version():
    assert run_cli("--version").stdout.startswith("lmtool ")
    top = run_cli("--help").stdout
    commands = ("preprocess", "pretrain", "evaluate", "generate")
    for name in (*commands, "config"):
        assert f"  {name} " in top
    for args in [(name,) for name in commands] + [("config", sub) for sub in ("show", "validate", "schema")]:
        page = run_cli(*args, "--help").stdout
        assert "lmtool " in page.partition("Example:")[2], args
        assert page.split("\n\n")[1].strip(), args  # the one-line description under Usage


def test_a_missing_file_under_a_long_directory_is_named_by_its_file_name(tmp_path):
    """Long values are shortened in the middle: the file name at the end of a long path stays in the error."""
    deep = tmp_path / ("a-rather-long-directory-name-" * 4) / "corpus-2026-12-01.txt"
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  sources:\n    - path: {deep}\n", encoding="utf-8")
    assert len(str(deep)) > 100
    assert_usage_error(
        run_inproc("config", "validate", str(config)), "data.sources.0.path", "corpus-2026-12-01.txt'"
    )
