"""`lmtool finetune` keeps the engine's guarantees: kill -9 and resume reproduce the uninterrupted run
bitwise (dropout on, length-grouped order), and 2-process gloo DDP equals one process with the same
global batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lmtool.train import checkpoint
from tests.conftest import ROOT, run_cli, run_torchrun
from tests.engine_fixtures import read_metrics
from tests.finetune_fixtures import finetune_config, keyword_rows, save_tiny_bert, write_jsonl
from tests.test_pretrain_cli import ONE_THREAD, _assert_same_run, _wait_for_step

# 50 steps an epoch, 4 epochs, checkpoints every 40 steps: a kill after step 130 resumes mid-epoch.
LONG = {"lr": 1e-3, "batch_size": 8, "epochs": 4, "save_every": 40, "keep_last": 2}
CLS = {"task": "classification", "max_length": 32}  # group_by_length is on by default


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(model with dropout, training file, validation file)."""
    base = tmp_path_factory.mktemp("data")
    model = save_tiny_bert(base / "bert", dropout=0.1)
    train = write_jsonl(base / "train.jsonl", keyword_rows(400, seed=0))
    return model, train, write_jsonl(base / "val.jsonl", keyword_rows(100, seed=1))


def _start(config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, **ONE_THREAD, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "lmtool", "--quiet", "finetune", str(config)],
            cwd=ROOT, env=env, stdout=out, stderr=out,
        )  # fmt: skip


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_the_uninterrupted_finetune_bitwise(tmp_path, data):
    model, train, val = data
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    result = run_cli("--quiet", "finetune", str(finetune_config(whole, model, CLS, train, val, **LONG)),
                     env=ONE_THREAD)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(whole / "run" / "final")

    config = finetune_config(cut, model, CLS, train, val, **LONG)
    proc = _start(config, tmp_path / "killed.log")
    killed_at = _wait_for_step(cut / "run", 130, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed_from = int(checkpoint.latest_checkpoint(cut / "run").name.split("-")[1])
    assert 120 <= resumed_from < 200 and killed_at >= 130 and not (cut / "run" / "final").exists()

    result = run_cli("finetune", str(config), env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stderr and f"step {resumed_from}" in result.stderr
    assert len(read_metrics(cut / "run", "eval")) == 4  # one evaluation per epoch, none lost or doubled
    _assert_same_run(whole / "run", cut / "run")  # per-step train and eval losses, final/ (best) weights


@pytest.mark.slow
def test_two_process_ddp_finetune_matches_one_process_with_the_same_global_batch(tmp_path, data):
    """torchrun x2 with batch 4 == one process with batch 8: per-step losses and each epoch's metrics,
    with the length-grouped order, over an epoch boundary; rank 0 preprocesses while rank 1 waits."""
    val = data[2]
    model = save_tiny_bert(tmp_path / "bert")  # no dropout: the ranks draw different masks
    small = write_jsonl(tmp_path / "train.jsonl", keyword_rows(200, seed=0))  # 25 steps an epoch
    settings = {"lr": 1e-3, "epochs": 2}
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir(), ddp.mkdir()
    result = run_cli("finetune", str(finetune_config(single, model, CLS, small, val, batch_size=8, **settings)),
                     env=ONE_THREAD)  # fmt: skip
    assert result.returncode == 0, result.stderr

    ddp_config = finetune_config(ddp, model, CLS, small, val, batch_size=4, **settings)
    proc = run_torchrun("-m", "lmtool", "finetune", str(ddp_config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(ddp / "run" / "final")  # printed once, by rank 0
    assert "on 2 x cpu" in proc.stderr
    one, two = read_metrics(single / "run"), read_metrics(ddp / "run")
    assert sorted(two) == sorted(one) == list(range(1, 51))
    for step in one:
        assert two[step]["loss"] == pytest.approx(one[step]["loss"], abs=1e-5), step
    one, two = read_metrics(single / "run", "eval"), read_metrics(ddp / "run", "eval")
    assert sorted(two) == sorted(one) == [25, 50]
    for step in one:
        assert two[step]["loss"] == pytest.approx(one[step]["loss"], abs=1e-5)
        assert two[step]["accuracy"] == one[step]["accuracy"]
