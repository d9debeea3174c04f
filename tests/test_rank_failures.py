"""A failing, dying or stuck rank ends the whole 2-rank gloo job within the documented bound, with its
error in rank 0's output; every rank logs to <run dir>/logs/rank-N.log. The faults are injected by
tests/rank_faults.py (a wrapper that patches the engine, then runs lmtool's CLI)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmtool.config import load_config
from lmtool.recipes.pretrain import run_pretrain
from lmtool.train import failures
from tests.conftest import ROOT, free_port, run_cli
from tests.engine_fixtures import make_processed_dir, tiny_config

BOUND_S = 10  # README Clusters: the job ends within 10 s of a rank's failure
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")
ENV = {
    **{k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")},
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_processed_dir(tmp_path_factory.mktemp("data") / "processed")


def _by_hand(config: Path, fault: str, *extra: str) -> list[tuple[int, str, float]]:
    """Two ranks started by hand (what `srun` without --kill-on-bad-exit does), rank 1 faulting at step 3:
    per rank (exit code, stderr, seconds from the fault to its exit; fault `none`: no fault)."""
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = ENV | {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}
        env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        command = ["-m", "tests.rank_faults", fault, "1", "3", "--quiet", "pretrain", str(config), *extra]
        procs.append(
            subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        )
    ended: dict[int, float] = {}
    deadline = time.monotonic() + 180
    while len(ended) < 2 and time.monotonic() < deadline:
        for i, proc in enumerate(procs):
            if i not in ended and proc.poll() is not None:
                ended[i] = time.time()
        time.sleep(0.05)
    for proc in procs:
        proc.kill()
    errs = [proc.communicate()[1] for proc in procs]
    assert len(ended) == 2, f"a rank did not exit within 180 s: {errs[0][-1500:]}\n{errs[1][-1500:]}"
    struck = float(match.group(1)) if (match := re.search(r"fault \w+ at ([\d.]+)", errs[1])) else 0.0
    return [
        (proc.returncode, err, ended[i] - struck)
        for i, (proc, err) in enumerate(zip(procs, errs, strict=True))
    ]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "code", "line"),
    [
        ("raise", 1, "RuntimeError: injected fault at step 3"),  # a bug on rank 1 only: exit 1
        ("usage", 2, "injected usage error at step 3"),  # an LmtoolError on rank 1 only: it keeps exit 2
    ],
)
def test_a_rank_that_raises_ends_the_job_with_its_error_on_rank_0(tmp_path, data, fault, code, line):
    (rank0, err0, t0), (rank1, err1, t1) = _by_hand(tiny_config(tmp_path, data, max_steps=200), fault)
    assert (rank0, rank1) == (1, code), (err0[-1500:], err1[-1500:])
    assert max(t0, t1) < BOUND_S, (t0, t1)
    assert _error_lines(err0) == [f"error: rank 1 failed: {line}"], err0[-1500:]
    assert f"error: rank 1: {line}" in _error_lines(err1), err1[-1500:]
    # Every rank's log: a header, and rank 1's error (for a bug, its traceback).
    logs = {r: (tmp_path / "run" / "logs" / f"rank-{r}.log").read_text() for r in (0, 1)}
    assert re.match(r"==== \S+ \S+ \S+ lmtool \S+ on \S+ pid \d+ rank 1 of 2\n", logs[1]), logs[1][:200]
    assert "step 2/200" in logs[0] and f"rank 1 failed: {line}" in logs[0]
    assert line in logs[1] and (fault != "raise" or 'tests/rank_faults.py", line' in logs[1])


@pytest.mark.slow
def test_an_error_raised_on_every_rank_still_leaves_in_order_with_exit_2(tmp_path, data):
    config = tiny_config(tmp_path, data, max_steps=200, model_overrides={"n_positions": 8})
    for code, stderr, _ in _by_hand(config, "none"):
        assert code == 2, stderr[-1500:]
        (line,) = _error_lines(stderr)
        assert line.startswith("error: data.block_size: is larger than the model's 8 positions"), line


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_naming_it(tmp_path, data):
    (rank0, err0, t0), (rank1, _, _) = _by_hand(tiny_config(tmp_path, data, max_steps=200), "kill")
    assert (rank0, rank1) == (1, -9)
    assert t0 < BOUND_S, t0
    (line,) = _error_lines(err0)
    assert line.startswith("error: rank 1 stopped responding (killed? out of memory?)"), line


@pytest.mark.slow
def test_a_collective_that_hangs_past_the_timeout_names_the_step(tmp_path, data):
    """Rank 1 stops answering at step 3 (alive, outside any collective); rank 0's gradient all-reduce
    waits train.distributed.timeout (5 s), then the job ends, naming step 3."""
    config = tiny_config(tmp_path, data, max_steps=200)
    (rank0, err0, t0), (rank1, err1, t1) = _by_hand(config, "hang", "--set", "train.distributed.timeout=5s")
    assert (rank0, rank1) == (1, 1), (err0[-1500:], err1[-1500:])
    assert max(t0, t1) < 5 + BOUND_S, (t0, t1)
    message = (
        "a collective (gradient all-reduce) waited more than 5 s at step 3 (train.distributed.timeout); "
        "another rank is stuck or dead"
    )
    assert _error_lines(err0) == [f"error: {message}"], err0[-1500:]
    assert _error_lines(err1) == [f"error: rank 0 failed: {message}"], err1[-1500:]


@pytest.mark.slow
def test_under_torchrun_the_failing_ranks_error_is_in_the_output(tmp_path, data):
    config = tiny_config(tmp_path, data, max_steps=200)
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            *torchrun,
            "-m",
            "tests.rank_faults",
            "raise",
            "1",
            "3",
            "--quiet",
            "pretrain",
            str(config),
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 1 and time.monotonic() - started < 120
    struck = float(re.search(r"fault raise at ([\d.]+)", proc.stderr).group(1))
    assert time.time() - struck < BOUND_S + 5  # torchrun's own exit included
    lines = _error_lines(proc.stderr)
    assert "error: rank 1 failed: RuntimeError: injected fault at step 3" in lines, proc.stderr[-2000:]
    assert "error: rank 1: RuntimeError: injected fault at step 3" in lines


def test_one_process_logs_to_rank_0_log_across_resumes(tmp_path, data, one_thread):
    config = tiny_config(tmp_path, data, max_steps=2)
    run_pretrain(load_config(config))
    run_pretrain(load_config(config, ["train.max_steps=3"]))
    log = (tmp_path / "run" / "logs" / "rank-0.log").read_text()
    first, second = log.split("====")[1:]
    assert "rank 0 of 1\n" in first and "step 2/2 |" in first and "step 3/3 |" in second
    result = run_cli("--quiet", "pretrain", str(config), "--overwrite", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-1500:]
    assert (tmp_path / "run" / "logs" / "rank-0.log").read_text().count("====") == 1  # removed with the run


def test_a_planted_logs_symlink_is_refused_not_written_through(tmp_path, data, one_thread):
    from lmtool.errors import LmtoolError

    config = tiny_config(tmp_path, data, max_steps=2)
    run_pretrain(load_config(config))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    logs = tmp_path / "run" / "logs"
    for log in logs.iterdir():
        log.unlink()
    logs.rmdir()
    logs.symlink_to(elsewhere)
    with pytest.raises(LmtoolError, match="cannot write the rank log"):
        run_pretrain(load_config(config, ["train.max_steps=3"]))
    assert not any(elsewhere.iterdir())


def test_a_peer_is_dead_when_its_heartbeat_stops_moving_between_two_reads():
    beats = failures.Heartbeats(dead_after=15)
    assert beats.dead({1: 0, 2: 0}, now=0) == []
    assert beats.dead({1: 5, 2: 0}, now=10) == []
    assert beats.dead({1: 15, 2: 0}, now=20) == [2]  # rank 2 never moved in 20 s
    assert beats.dead({1: 15, 2: 1}, now=60) == [1]  # rank 1 stuck since 20 s; rank 2 moved again
    # This watcher itself starved for 100 s: a peer that beat meanwhile is alive.
    assert beats.dead({1: 115, 2: 101}, now=160) == []


def _accumulate():
    def backward():
        raise RuntimeError(
            "[gloo/unbound_buffer.cc:78] Timed out waiting 5000ms for recv operation to complete"
        )

    backward()


def _save():
    raise RuntimeError("Connection closed by peer")


def test_a_timeout_names_the_step_and_the_phase_other_errors_stay_as_they_are(monkeypatch):
    monkeypatch.setattr(failures.whereabouts, "step", 12)
    with pytest.raises(RuntimeError) as timed_out:
        _accumulate()
    assert failures.describe(timed_out.value, 30) == (
        "a collective (gradient all-reduce) waited more than 30 s at step 12 (train.distributed.timeout); "
        "another rank is stuck or dead"
    )
    with pytest.raises(RuntimeError) as closed:
        _save()
    assert failures.describe(closed.value, 30) == "RuntimeError: Connection closed by peer"


def _fail_together(first: BaseException, second: BaseException) -> list[tuple[bool, str]]:
    """Rank 1 fails with `first`, then rank 0 with `second` (the store as two ranks share it): what each
    decides (orderly, line)."""
    import threading

    import torch.distributed as dist

    store = dist.HashStore()
    watches = [failures.PeerWatch(store, rank, 2) for rank in (0, 1)]
    results: dict[int, tuple[bool, str]] = {}
    rank1 = threading.Thread(target=lambda: results.update({1: watches[1].fail(first, 30)}))
    rank1.start()
    time.sleep(0.3)
    results[0] = watches[0].fail(second, 30)
    rank1.join()
    return [results[0], results[1]]


def test_ranks_that_stop_alike_leave_in_order_and_a_consequence_names_its_cause():
    from lmtool.errors import LmtoolError

    # An agreed stop (rank 0 says why, the others that rank 0 could not go on): in order, own messages.
    agreed = _fail_together(LmtoolError("rank 0 could not save"), LmtoolError("disk full"))
    assert agreed == [(True, "disk full"), (True, "rank 0 could not save")]
    # The same bug on every rank: in order too.
    assert _fail_together(RuntimeError("bad shape"), RuntimeError("bad shape"))[0] == (
        True,
        "RuntimeError: bad shape",
    )
    # Rank 1's bug, then rank 0's connection error because of it: rank 0 names rank 1's error.
    bug = _fail_together(RuntimeError("boom"), RuntimeError("Connection closed by peer"))
    assert bug == [(False, "rank 1 failed: RuntimeError: boom"), (False, "rank 1: RuntimeError: boom")]
