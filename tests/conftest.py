"""Shared fixtures: run the CLI as a user does (a subprocess), and find the shared test data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_cli(
    *args: str,
    cwd: Path | None = None,
    input: str | None = None,
    env: dict | None = None,
    timeout: float = 600,
    launcher: list[str] | None = None,
) -> Result:
    """Run `python -m lmtool ARGS` (or `launcher ARGS`) in a subprocess and capture both streams."""
    full_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **(env or {}),
    }
    proc = subprocess.run(
        [*(launcher or [sys.executable, "-m", "lmtool"]), *args],
        cwd=cwd or ROOT,
        input=input,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_torchrun(*args: str, env: dict | None = None, timeout: float = 300) -> Result:
    """Run `torchrun --standalone --nproc_per_node 2 ARGS` (a script, or `-m lmtool ...`): two gloo ranks
    on this CPU, one thread each."""
    return run_cli(*args, env={"OMP_NUM_THREADS": "1", **(env or {})}, timeout=timeout, launcher=TORCHRUN)


def free_port() -> int:
    """A TCP port nothing listens on now (for a rendezvous set up by hand)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_usage_error(result: Result, *fragments: str) -> None:
    """Exit 2, one line on stderr that contains every fragment, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in error_lines[0], (fragment, error_lines[0])


@pytest.fixture
def one_thread():
    """Tiny matmuls run faster on one thread (and the machine is shared); runs that must match bitwise
    use the same thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(
            "../shared/data is not present (it ships beside the project in CI, not in a user's clone)"
        )
    return SHARED_DATA


@pytest.fixture
def cli():
    return run_cli
