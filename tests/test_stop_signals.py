"""Signals as a terminal or a scheduler sends them: to the whole process group, workers included.

pretrain: the step in progress is finished and saved, exit 3 (with DataLoader workers too).
preprocess: the worker pool stops, the partial directory is removed, exit 130 (SIGINT) / 143 (SIGTERM).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmtool.config import load_config
from lmtool.errors import Preempted
from lmtool.recipes.pretrain import run_pretrain
from lmtool.train import checkpoint
from lmtool.train.engine import Trainer
from tests.conftest import ROOT
from tests.engine_fixtures import make_processed_dir, read_metrics, tiny_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _start_group(args: list[str], log: Path) -> subprocess.Popen:
    """`python -m lmtool ARGS` as the leader of its own process group, as a shell runs a command."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "lmtool", *args],
            cwd=ROOT,
            env=ENV,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


def _wait_for(condition, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"ended before the signal: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def _finish(proc: subprocess.Popen, timeout: float = 60) -> int:
    """The exit code; a process that hangs is killed (whole group) and fails the test."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"no exit within {timeout}s of the signal: hung")


# --------------------------------------------------------------------------- pretrain


@pytest.mark.parametrize("hook", ["_accumulate", "_optimizer_step"])
def test_a_signal_during_a_step_saves_that_step(tmp_path, monkeypatch, hook):
    """The README's promise, 'finish the current step': a signal that arrives while step 5 runs (before its
    forward passes, or during its optimizer update) gives the checkpoint of step 5, not 6."""
    data = make_processed_dir(tmp_path / "processed")
    original = getattr(Trainer, hook)

    def signal_in_step_5(self, *args, **kwargs):
        if self.state.step == 4:  # state.step counts completed steps: this is step 5
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, hook, signal_in_step_5)
    with pytest.raises(Preempted, match="SIGTERM: saved checkpoint at step 5;"):
        run_pretrain(load_config(tiny_config(tmp_path, data, max_steps=40)))
    assert checkpoint.latest_checkpoint(tmp_path / "run").name == "step-00000005"
    assert max(read_metrics(tmp_path / "run")) == 5


@pytest.mark.slow
def test_ctrl_c_with_dataloader_workers_saves_a_checkpoint_and_exits_3(tmp_path):
    """Ctrl-C reaches the DataLoader workers too; they must not die before the main process has saved."""
    data = make_processed_dir(tmp_path / "processed")
    config = tiny_config(tmp_path, data, max_steps=100_000, batch_size=2, num_workers=2)
    log = tmp_path / "log.txt"
    proc = _start_group(["--quiet", "pretrain", str(config)], log)
    metrics = tmp_path / "run" / "metrics.jsonl"
    _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, proc, log)
    os.killpg(proc.pid, signal.SIGINT)
    code = _finish(proc)
    text = log.read_text()
    assert code == 3, text
    assert "SIGINT: saved checkpoint at step" in text and "Traceback" not in text
    step = int(text.split("saved checkpoint at step ")[1].split(";")[0])
    saved = checkpoint.latest_checkpoint(tmp_path / "run")
    assert saved.name == checkpoint.checkpoint_name(step) and checkpoint.is_complete(saved)


# --------------------------------------------------------------------------- preprocess


def _preprocess_config(tmp_path: Path, shared: Path) -> Path:
    config = {
        "run": {"name": "sig"},
        "data": {
            "sources": [{"path": str(shared / "corpus" / "shakespeare"), "doc_split": "line"}],
            "processed_dir": str(tmp_path / "processed"),
            "block_size": 128,
            "num_proc": 2,
            "streaming": True,
        },
        "tokenizer": {"path": str(shared / "gpt2-tokenizer"), "engine": "tokenizers"},
    }
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(
    ("sig", "code", "message"),
    [
        (signal.SIGINT, 130, "error: interrupted"),
        (signal.SIGINT, 130, "error: interrupted"),
        (signal.SIGTERM, 143, "error: terminated by SIGTERM; the partial output was removed"),
    ],
    ids=["sigint", "sigint-again", "sigterm"],
)
def test_a_signal_to_preprocess_with_worker_processes_stops_cleanly(
    tmp_path, shared_data, sig, code, message
):
    """Ctrl-C (or SIGTERM) to the process group while `num_proc: 2` workers tokenize: one line, the exit
    code, no worker tracebacks, no hang, and no partial directory left behind."""
    log = tmp_path / "log.txt"
    proc = _start_group(["preprocess", str(_preprocess_config(tmp_path, shared_data))], log)
    # The first shard is written once the pool has returned tokens: the workers are busy.
    _wait_for(lambda: any(tmp_path.glob(".processed.partial-*/out/train/shard-*")), proc, log)
    os.killpg(proc.pid, sig)
    assert _finish(proc) == code, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert [line for line in text.splitlines() if line.startswith("error:")] == [message], text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "log.txt"]  # no partial dir, no lock
