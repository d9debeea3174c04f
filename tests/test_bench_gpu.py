"""scripts/bench_gpu.py in its CPU smoke mode, so the GPU benchmark runs the day a GPU is lent: lmtool through
the CLI, the Trainer and the plain loop each train the same model and report tokens/s, MFU and peak memory
beside plan's prediction. BERT only (its masking paths are the ones GPT-2 lacks; both together take two
minutes of CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_smoke_run_times_lmtool_the_trainer_and_the_loop_on_the_same_model():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_gpu.py"), "--device", "cpu", "--only", "bert"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr[-3000:])  # one JSON line, progress on stderr
    result = json.loads(lines[0])
    assert proc.returncode == 0 and result["failed"] == [], proc.stderr[-3000:]
    assert result["met"] is None and result["gpu"] is None  # no GPU goals judged on a CPU
    assert result["cpu_capability"] and "cpu_bf16_units" in result
    bert = result["models"]["bert"]
    assert (bert["block"], bert["micro_batch"], bert["precision"], bert["compiled"]) == (32, 2, "fp32", False)
    for run in ("lmtool", "trainer", "loop"):
        figures = bert[run]
        assert figures["tokens_per_s"] > 0 and figures["mfu"] > 0 and figures["peak_memory_gb"] > 0, run
    # The workers count FLOPs on the model they built; plan on the one it built from the same config.
    assert (
        bert["loop"]["flops_per_token"]
        == bert["trainer"]["flops_per_token"]
        == bert["plan"]["flops_per_token"]
    )
    lm = bert["lmtool"]["tokens_per_s"]
    assert bert["ratio_lmtool_trainer"] == round(lm / bert["trainer"]["tokens_per_s"], 3)
    assert bert["ratio_lmtool_loop"] == round(lm / bert["loop"]["tokens_per_s"], 3)
    predicted = bert["plan"]["memory_gb_per_gpu_ddp"]["total"]
    measured = bert["lmtool"]["peak_memory_gb"]
    assert abs(bert["plan_rel_error"] - (predicted - measured) / measured) < 1e-3
