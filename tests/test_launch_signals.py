"""Preemption through torchrun (2 ranks, gloo), as the job scripts run it: `--signals-to-handle
SIGTERM,SIGINT,SIGUSR1` forwards the signal to the workers, both ranks save one checkpoint, the requeue
marker is written (torchrun itself exits 1, not 3: the marker is what the script requeues on), no worker
outlives torchrun, and the rerun resumes from that checkpoint, under ddp and fsdp."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmtool.train import checkpoint
from tests.conftest import ROOT, run_cli
from tests.engine_fixtures import make_processed_dir, tiny_config

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
HANDLED = ["--signals-to-handle", "SIGTERM,SIGINT,SIGUSR1", "--shutdown-timeout", "60"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the worker pids")
@pytest.mark.parametrize(
    ("sig", "strategy"), [(signal.SIGTERM, "ddp"), (signal.SIGUSR1, "ddp"), (signal.SIGUSR1, "fsdp")]
)
def test_a_signal_to_torchrun_saves_writes_the_marker_and_leaves_no_worker(tmp_path, sig, strategy):
    """fsdp: the ranks write one sharded checkpoint together, and one process resumes from it."""
    data = make_processed_dir(tmp_path / "processed")
    config = tiny_config(
        tmp_path,
        data,
        max_steps=100_000,
        batch_size=2,
        save_every=0,
        eval_every=0,
        log_every=1,
        distributed={"strategy": strategy},
    )
    log = tmp_path / "torchrun.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, *TORCHRUN, *HANDLED, "-m", "lmtool", "--quiet", "pretrain", str(config)],
            cwd=ROOT,
            env=ENV,
            stdout=out,
            stderr=out,
        )
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert len(workers) == 2
    proc.send_signal(sig)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("torchrun did not end within 90 s of the signal")
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "a worker outlived torchrun"

    marker = json.loads((tmp_path / "run" / "REQUEUE").read_text())
    text = log.read_text()
    assert marker["reason"] == sig.name
    assert text.count(f"{sig.name}: saved checkpoint at step {marker['step']};") == 1  # rank 0 logs
    saved = checkpoint.latest_checkpoint(tmp_path / "run")
    assert saved.name == checkpoint.checkpoint_name(marker["step"]) and checkpoint.is_complete(saved)

    result = run_cli(
        "pretrain",
        str(config),
        "--set",
        f"train.max_steps={marker['step'] + 2}",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"(step {marker['step']}," in result.stderr and "resuming from" in result.stderr
    assert not (tmp_path / "run" / "REQUEUE").exists()
