"""scripts/slurm/*.sbatch with stub sbatch/srun/torchrun/scontrol on PATH that record their arguments: the
lmtool command lines, the requeue on exit 3 or on this run's REQUEUE marker (torchrun loses exit 3), no
requeue for a stale marker or a bad config, and a USR1 to the batch shell reaching the launcher."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.engine_fixtures import make_processed_dir, tiny_config

SCRIPTS = ROOT / "scripts" / "slurm"
SINGLE, MULTI = SCRIPTS / "single-node.sbatch", SCRIPTS / "multi-node.sbatch"
JOB = "4242"

# A launcher stub: records its arguments; its behaviour per call is read from $STUBS/<name>.plan
# (one line per call: "exit N", "marker" = write REQUEUE then exit 1, or "wait" = sleep until a signal).
STUB = """#!/bin/bash
echo "$(basename "$0") $*" >> "$STUBS/calls"
plan="$STUBS/$(basename "$0").plan"
n=$(grep -c . "$STUBS/calls")
action=$(sed -n "${n}p" "$plan" 2>/dev/null)
case "$action" in
    marker) echo '{"reason": "SIGUSR1"}' > "$RUN_DIR/REQUEUE"; exit 1 ;;
    wait) trap 'echo "$(basename "$0") got USR1" >> "$STUBS/calls"; exit 3' USR1
          echo started > "$STUBS/started"; while true; do sleep 0.1; done ;;
    exit*) exit "${action#exit }" ;;
esac
exit 0
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_processed_dir(tmp_path_factory.mktemp("data") / "processed")


@pytest.fixture
def job(tmp_path, data):
    """Stubs on PATH, a config whose run directory is tmp/run, and SLURM's variables for a batch job."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in ("srun", "torchrun", "scontrol"):
        (stubs / name).write_text(STUB)
        (stubs / name).chmod(0o755)
    (tmp_path / "run").mkdir()
    config = tiny_config(tmp_path, data)
    env = {
        **os.environ,
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "STUBS": str(stubs),
        "RUN_DIR": str(tmp_path / "run"),
        "PYTHON": sys.executable,
        "PYTHONPATH": str(ROOT),
        "SLURM_JOB_ID": JOB,
        "SLURM_GPUS_ON_NODE": "4",
    }
    return stubs, config, env


def _plan(stubs: Path, name: str, *actions: str) -> None:
    (stubs / f"{name}.plan").write_text("\n".join(actions) + "\n")


def _submit(script: Path, config: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script), str(config), *extra], env=env, capture_output=True, text=True, timeout=60
    )


def _calls(stubs: Path) -> list[str]:
    path = stubs / "calls"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("script", [SINGLE, MULTI])
def test_scripts_pass_bash_n_and_shellcheck(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
    text = script.read_text()
    for directive in ("--signal=B:USR1@180", "--requeue"):
        assert f"#SBATCH {directive}" in text


def test_single_node_runs_torchrun_and_requeues_on_the_marker(job):
    stubs, config, env = job
    _plan(stubs, "torchrun", "marker", "exit 0")  # 1st run: preempted (torchrun exits 1), then finishes
    first = _submit(SINGLE, config, env, "--set", "train.lr=0.001")
    assert first.returncode == 0, first.stderr
    launch = (
        f"torchrun --standalone --nnodes 1 --nproc_per_node 4 --signals-to-handle SIGTERM,SIGINT,SIGUSR1 "
        f"--shutdown-timeout 600 -m lmtool pretrain {config} --set train.lr=0.001"
    )
    assert _calls(stubs) == [launch, f"scontrol requeue {JOB}"]

    (stubs / "calls").unlink()
    _plan(stubs, "torchrun", "exit 0")
    (Path(env["RUN_DIR"]) / "REQUEUE").unlink()
    again = _submit(SINGLE, config, env, "--set", "train.lr=0.001")
    assert again.returncode == 0 and _calls(stubs) == [launch]


def test_multi_node_runs_one_srun_task_per_gpu_and_requeues_on_exit_3(job):
    stubs, config, env = job
    _plan(stubs, "srun", "exit 3")
    result = _submit(MULTI, config, env)
    assert result.returncode == 0, result.stderr
    python = sys.executable
    assert _calls(stubs) == [
        f"srun --kill-on-bad-exit=1 --label {python} -m lmtool pretrain {config}",
        f"scontrol requeue {JOB}",
    ]


@pytest.mark.parametrize("script", [SINGLE, MULTI])
def test_no_requeue_on_failure_with_a_stale_marker(job, script):
    """A marker left by an earlier job does not requeue a run that failed: its exit code is the job's."""
    stubs, config, env = job
    marker = Path(env["RUN_DIR"]) / "REQUEUE"
    marker.write_text("{}\n")
    os.utime(marker, (time.time() - 3600, time.time() - 3600))
    _plan(stubs, "torchrun" if script == SINGLE else "srun", "exit 1")
    result = _submit(script, config, env)
    assert result.returncode == 1
    assert not [c for c in _calls(stubs) if c.startswith("scontrol")]


def test_a_bad_config_exits_2_without_launching(job):
    stubs, config, env = job
    result = _submit(SINGLE, config, env, "--set", "train.lr=-1")
    assert result.returncode == 2 and _calls(stubs) == []


@pytest.mark.parametrize(("script", "launcher"), [(SINGLE, "torchrun"), (MULTI, "srun")])
def test_usr1_to_the_batch_shell_reaches_the_launcher(job, script, launcher):
    """--signal=B:USR1 signals only the batch shell: it must pass the signal on, then requeue on exit 3."""
    stubs, config, env = job
    _plan(stubs, launcher, "wait")
    proc = subprocess.Popen(["bash", str(script), str(config)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (stubs / "started").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=30) == 0
    calls = _calls(stubs)
    assert calls[1:] == [f"{launcher} got USR1", f"scontrol requeue {JOB}"]
