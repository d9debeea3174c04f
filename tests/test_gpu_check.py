"""scripts/gpu_check.py in its CPU smoke mode, so the GPU check is ready (and not rotten) the day a GPU is
lent: every part runs end to end through the CLI and reports predicted and measured figures."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "gpu_check.py"


def run_check(*args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--steps", "1", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=600,
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr[-3000:])  # one JSON line, progress on stderr
    return proc, json.loads(lines[0])


def assert_compared(figures: dict) -> None:
    assert figures["predicted_gb"] > 0 and figures["measured_gb"] > 0, figures
    expected = (figures["predicted_gb"] - figures["measured_gb"]) / figures["measured_gb"]
    assert figures["rel_error"] == pytest.approx(expected, abs=1e-3)
    assert set(figures["predicted_parts_gb"]) >= {"weights", "optimizer", "activations", "logits"}
    assert math.isfinite(figures["last_loss"]) and figures["last_loss"] > 0
    assert figures["tokens_per_s"] > 0 and figures["mfu"] > 0


@pytest.mark.slow
def test_smoke_run_reports_every_part():
    proc, result = run_check()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result["failed"] == [] and result["met"] is None  # the GPU goals are not judged on a CPU
    assert result["torch"] and result["cpu"] and result["gpu"] is None
    assert set(result["memory"]) == {"gpt2", "gpt2_checkpointing", "bert", "bert_checkpointing"}
    for figures in result["memory"].values():
        assert_compared(figures)
    strategies = result["ddp_fsdp"]
    assert_compared(strategies["ddp"])
    assert_compared(strategies["fsdp"])
    assert strategies["losses_finite"] is True and strategies["max_loss_rel_diff"] < 1e-4
    assert_compared(result["mfu"])
    assert result["mfu"]["compiled"] is False and result["mfu"]["window_end_step"] == 1


def test_failed_run_is_named_with_its_error():
    """A run that fails: exit 1, the JSON still printed, naming the run and carrying its error."""
    # RANK without WORLD_SIZE: lmtool pretrain refuses the partial launch environment (exit 2).
    proc, result = run_check("--only", "gpt2", env={"RANK": "0"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "memory" not in result
    [failure] = result["failed"]
    assert failure["part"] == "gpt2" and failure["run"] == "gpt2"
    assert "exit 2" in failure["stderr_tail"] and "WORLD_SIZE" in failure["stderr_tail"]
    assert "gpt2 failed" in proc.stderr
