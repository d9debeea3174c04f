"""`lmtool pretrain` as a user runs it: exact resume after SIGKILL, SIGTERM → checkpoint + exit 3,
2-process DDP, refusal to clobber, and one-line exit-2 errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmtool.config import load_config
from lmtool.recipes.pretrain import run_pretrain
from lmtool.train import checkpoint
from tests.conftest import ROOT, assert_usage_error, run_cli, run_torchrun
from tests.engine_fixtures import make_processed_dir, read_metrics, tiny_config

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny matmuls: one thread is fastest, and runs must match bitwise
DROPOUT = {"resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1}  # so resume must restore the RNG streams
LONG = {"batch_size": 2, "max_steps": 2000, "save_every": 300, "eval_every": 500, "keep_last": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_processed_dir(tmp_path_factory.mktemp("data") / "processed")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data):
    """The reference: 2000 steps in one go."""
    base = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli(
        "--quiet", "pretrain", str(tiny_config(base, data, model_overrides=DROPOUT, **LONG)), env=ONE_THREAD
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(base / "run" / "final")
    return base / "run"


def _start(config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, **ONE_THREAD, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "lmtool", "--quiet", "pretrain", str(config)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )


def _wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> int:
    """Poll metrics.jsonl until it has a train record at or past `step`; returns the last step seen."""
    deadline = time.monotonic() + timeout
    metrics = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        assert proc.poll() is None, "training ended before it could be interrupted"
        if metrics.exists():
            # Only the file's tail: reading all of it 100 times a second took a core from the run it polls.
            with metrics.open("rb") as f:
                start = max(0, f.seek(0, os.SEEK_END) - 4096)
                f.seek(start)
                lines = f.read().decode().splitlines()[1 if start else 0 :]
            steps = [json.loads(line)["step"] for line in lines[-3:] if line.endswith("}")]
            if steps and max(steps) >= step:
                return max(steps)
        time.sleep(0.01)
    raise AssertionError(f"no step {step} within {timeout}s")


def _assert_same_run(a: Path, b: Path) -> None:
    for kind in ("train", "eval"):
        first, second = read_metrics(a, kind), read_metrics(b, kind)
        assert sorted(first) == sorted(second)
        mismatched = [s for s in first if first[s]["loss"] != second[s]["loss"]]
        assert not mismatched, f"{kind} losses differ from step {mismatched[0]}"
    weights_a, weights_b = (
        load_file(a / "final" / "model.safetensors"),
        load_file(b / "final" / "model.safetensors"),
    )
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_the_uninterrupted_run_bitwise(tmp_path, data, uninterrupted):
    config = tiny_config(tmp_path, data, model_overrides=DROPOUT, **LONG)
    proc = _start(config, tmp_path / "killed.log")
    killed_at = _wait_for_step(tmp_path / "run", 1000, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed_from = checkpoint.latest_checkpoint(tmp_path / "run")
    # Killed between checkpoints: steps 901.. are redone.
    assert resumed_from.name == "step-00000900" and killed_at > 900

    result = run_cli("pretrain", str(config), env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stderr and "step 900" in result.stderr
    _assert_same_run(uninterrupted, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step-00001800",
        "step-00002000",
    ]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_3_and_the_run_resumes_exactly(tmp_path, data, uninterrupted):
    config = tiny_config(tmp_path, data, model_overrides=DROPOUT, **LONG)
    proc = _start(config, tmp_path / "term.log")
    _wait_for_step(tmp_path / "run", 1500, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 3
    log = (tmp_path / "term.log").read_text()
    assert "SIGTERM: saved checkpoint at step" in log and "Traceback" not in log
    saved = checkpoint.latest_checkpoint(tmp_path / "run")
    assert int(saved.name.split("-")[1]) % 300 != 0 or saved.name == "step-00001500"

    result = run_cli("--quiet", "pretrain", str(config), env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    _assert_same_run(uninterrupted, tmp_path / "run")


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path, data):
    """torchrun x2 with batch 2 == one process with batch 4; and a DDP run resumes on one process."""
    settings = {"batch_size": 4, "max_steps": 20, "schedule": "constant", "warmup_steps": 0}
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    single_dir.mkdir(), ddp_dir.mkdir()
    run_pretrain(load_config(tiny_config(single_dir, data, **settings)))

    ddp_config = tiny_config(ddp_dir, data, **{**settings, "batch_size": 2, "max_steps": 10})
    proc = run_torchrun("-m", "lmtool", "pretrain", str(ddp_config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(ddp_dir / "run" / "final")  # printed once, by rank 0
    assert "on 2 x cpu" in proc.stderr

    # Continue the 2-process run on one process (different world size, same global position).
    resumed = load_config(ddp_config, ["train.max_steps=20", "train.batch_size=4"])
    run_pretrain(resumed)
    one, two = read_metrics(single_dir / "run"), read_metrics(ddp_dir / "run")
    assert sorted(two) == list(range(1, 21))
    for step in range(1, 21):
        assert two[step]["loss"] == pytest.approx(one[step]["loss"], abs=1e-5), step
        assert two[step]["samples"] == one[step]["samples"]


def _cli(capsys, *args: str) -> _Result:
    """Run the CLI in-process (fast) and capture its exit code and streams."""
    from lmtool.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return _Result(exit_info.value.code, captured.out, captured.err)


def test_an_existing_run_is_refused_without_overwrite_and_replaced_with_it(tmp_path, data, capsys):
    config = str(tiny_config(tmp_path, data, max_steps=2, resume="never"))
    assert _cli(capsys, "pretrain", config).returncode == 0
    assert_usage_error(_cli(capsys, "pretrain", config), "already exists", "--overwrite")
    (tmp_path / "run" / "logs" / "marker").write_text("old")  # in lmtool's logs/: replaced with the run
    replaced = _cli(capsys, "pretrain", config, "--overwrite")
    assert replaced.returncode == 0 and replaced.stdout.strip() == str(tmp_path / "run" / "final")
    assert (
        not (tmp_path / "run" / "logs" / "marker").exists()
        and (tmp_path / "run" / "final" / "model.safetensors").exists()
    )


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["model.arch=gtp2"], ["model.arch", "unknown architecture", "did you mean 'gpt2'", "lstm"]),
        (["model.config.n_layers=3"], ["model.config.n_layers", "not a gpt2 config key", "n_layer"]),
        (["model.config.n_positions=8"], ["data.block_size", "8 positions"]),
        (["model.init_from=/nonexistent/model"], ["model.init_from", "not found"]),
        (["train.batch_size=0"], ["train.batch_size", "greater than or equal to 1"]),
        (["train.global_batch_size=6"], ["train.global_batch_size", "multiple of batch_size"]),
        (["train.precision=fp16"], ["train.precision", "fp16 needs a GPU"]),
        (["data.block_size=32"], ["data.block_size", "preprocessed with 16"]),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, data, capsys, overrides, fragments):
    args = ["pretrain", str(tiny_config(tmp_path, data, max_steps=2))]
    for item in overrides:
        args += ["--set", item]
    result = _cli(capsys, *args)
    assert_usage_error(result, *fragments)
    assert result.stdout == "" and not (tmp_path / "run" / "final").exists()


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
