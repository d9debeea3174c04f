"""Launching under srun and by hand: ranks and rendezvous from SLURM's variables, exit 2 (never a hang)
for a partial environment or an unreachable rendezvous, the requeue marker, and `train.stop_before`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from lmtool.config import ConfigError, load_config
from lmtool.errors import LmtoolError, Preempted
from lmtool.recipes.pretrain import run_pretrain
from lmtool.train import checkpoint, distributed, launch_env
from tests.conftest import ROOT, assert_usage_error, free_port, run_cli
from tests.engine_fixtures import make_processed_dir, read_metrics, tiny_config

TORCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


@pytest.fixture
def clean_env(monkeypatch):
    """A private copy of the environment without launcher variables: read_env writes RANK etc. into it."""
    environ = {
        k: v for k, v in os.environ.items() if k not in (*TORCH_VARS, *launch_env.SLURM_VARS, "SLURM_LOCALID")
    }
    monkeypatch.setattr(os, "environ", environ)
    return monkeypatch


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_processed_dir(tmp_path_factory.mktemp("data") / "processed")


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("node[01-03,07],gpu5", ["node01", "node02", "node03", "node07", "gpu5"]),
        ("gpu5,node[8-10]", ["gpu5", "node8", "node9", "node10"]),
        ("a1", ["a1"]),
        ("rack[1-2]-n[01]", None),  # several bracket groups: not ours to guess
    ],
)
def test_node_lists_expand_like_scontrol(nodelist, hosts):
    if hosts is None:
        with pytest.raises(LmtoolError, match="SLURM_JOB_NODELIST"):
            launch_env.expand_nodelist(nodelist)
    else:
        assert launch_env.expand_nodelist(nodelist) == hosts


def test_srun_variables_give_ranks_and_rendezvous(clean_env):
    clean_env.setenv("PATH", "/nonexistent")  # no scontrol: the node list is parsed
    clean_env.setenv("SLURM_PROCID", "3")
    clean_env.setenv("SLURM_NTASKS", "8")
    clean_env.setenv("SLURM_LOCALID", "1")
    clean_env.setenv("SLURM_JOB_NODELIST", "node[07-08]")
    clean_env.setenv("SLURM_JOB_ID", "123456")
    assert distributed.read_env() == distributed.DistEnv(3, 8, 1)
    assert os.environ["MASTER_ADDR"] == "node07"
    assert os.environ["MASTER_PORT"] == str(10000 + 123456 % 50000)


def test_scontrol_is_asked_for_the_first_host_when_present(clean_env, tmp_path):
    stub = tmp_path / "scontrol"
    stub.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\necho login3\necho login4\n')
    stub.chmod(0o755)
    clean_env.setenv("PATH", str(tmp_path))
    assert launch_env.first_host("login[3-4]") == "login3"
    assert (tmp_path / "args").read_text().split() == ["show", "hostnames", "login[3-4]"]


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"RANK": "0"}, "WORLD_SIZE"),
        ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR, MASTER_PORT"),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "7"}, "SLURM_JOB_NODELIST"),
    ],
)
def test_a_partial_environment_is_exit_2_naming_what_is_missing(clean_env, tmp_path, data, env, missing):
    result = run_cli("pretrain", str(tiny_config(tmp_path, data, max_steps=2)), env=env, timeout=60)
    assert_usage_error(result, missing)


def test_an_unreachable_rendezvous_is_exit_2_within_the_timeout(tmp_path, data):
    env = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    started = time.monotonic()
    result = run_cli(
        "pretrain",
        str(tiny_config(tmp_path, data, max_steps=2)),
        env={**env, "LMTOOL_RENDEZVOUS_TIMEOUT": "3"},
    )
    assert time.monotonic() - started < 30
    assert_usage_error(result, "rendezvous at MASTER_ADDR=127.0.0.1", "rank 1 of 2")


@pytest.mark.slow
def test_two_srun_tasks_train_together(tmp_path, data):
    """What `srun --ntasks 2 lmtool pretrain` starts: two processes that only have SLURM's variables."""
    job_id = free_port() - 10000  # MASTER_PORT = 10000 + job id
    config = tiny_config(tmp_path, data, max_steps=6, batch_size=2)
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if k not in TORCH_VARS}
        env |= {"SLURM_PROCID": str(rank), "SLURM_NTASKS": "2", "SLURM_LOCALID": str(rank)}
        env |= {"SLURM_JOB_NODELIST": "localhost", "SLURM_JOB_ID": str(job_id), "OMP_NUM_THREADS": "1"}
        env |= {"HF_HUB_OFFLINE": "1", "PATH": os.path.dirname(sys.executable)}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "lmtool", "--quiet", "pretrain", str(config)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][1][-2000:]
    assert outputs[0][0].strip() == str(tmp_path / "run" / "final") and outputs[1][0] == ""
    assert sorted(read_metrics(tmp_path / "run")) == list(range(1, 7))


def test_a_signal_leaves_a_requeue_marker_that_the_next_run_removes(tmp_path, data):
    config = tiny_config(tmp_path, data, max_steps=8)
    marker = tmp_path / "run" / "REQUEUE"
    from lmtool.train.engine import Trainer

    original = Trainer._accumulate

    def signal_in_step_3(self, *args, **kwargs):
        if self.state.step == 2:
            os.kill(os.getpid(), 15)
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "_accumulate", signal_in_step_3)
        with pytest.raises(Preempted):
            run_pretrain(load_config(config))
    record = json.loads(marker.read_text())
    assert record["reason"] == "SIGTERM" and record["step"] == 3 and record["time"]
    run_pretrain(load_config(config))
    assert not marker.exists()


@pytest.mark.slow
def test_stop_before_a_deadline_saves_and_stops_with_the_marker(tmp_path, data):
    """A deadline 30 s ahead (start-up on a loaded 2-core machine has taken over 12 s) on a run that would take much longer: saved before deadline - stop_before, exit 3,
    marker written."""
    end = int(time.time()) + 30
    deadline = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(end))
    config = tiny_config(tmp_path, data, max_steps=100_000, save_every=0, eval_every=0, log_every=1)
    result = run_cli(
        "pretrain",
        str(config),
        "--set",
        f"train.deadline={deadline}",
        "--set",
        "train.stop_before=3s",
        timeout=120,
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert "time limit: saved checkpoint at step" in result.stderr
    record = json.loads((tmp_path / "run" / "REQUEUE").read_text())
    assert record["reason"] == "time limit"
    saved = checkpoint.latest_checkpoint(tmp_path / "run")
    assert saved.name == checkpoint.checkpoint_name(record["step"]) and checkpoint.is_complete(saved)
    assert max(read_metrics(tmp_path / "run")) == record["step"]
    stopped = datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    assert stopped <= end - 2 and record["step"] > 1


def test_stop_before_reads_slurm_job_end_time(monkeypatch):
    from lmtool.train.deadline import Deadline

    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 3600))
    deadline = Deadline.from_config(600, None)
    assert not deadline.near()
    deadline.saved(3000.0)  # a save that long would end after the job's end minus 600 s: stop now
    assert deadline.near()
    with pytest.raises(ConfigError, match="train.stop_before"):
        Deadline.from_config(3700, None)  # a margin longer than the time left: exit 2, not a requeue loop


def test_stop_before_takes_durations():
    cfg = load_config(Path(ROOT / "configs" / "quickstart.yaml"), ["train.stop_before=10m"]).train
    assert cfg.stop_before == 600
