"""The console: what reaches stderr, and that a stderr whose reader went away never stops a run."""

from __future__ import annotations

import os
import subprocess
import sys

from lmtool import console
from tests.conftest import ROOT
from tests.engine_fixtures import make_processed_dir, tiny_config


def test_a_closed_stderr_pipe_is_swallowed_and_the_log_file_goes_on(tmp_path, monkeypatch):
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = os.fdopen(write_end, "w")
    log = (tmp_path / "rank-0.log").open("w")
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(console, "settings", console._Settings())
    console.configure(log_format="plain")
    console.open_log(log)
    try:
        for step in range(3):
            console.info(f"step {step}")
        console.warning("still here")
    finally:
        console.close_log()
        sys.stderr.flush()
        stream.close()
    text = (tmp_path / "rank-0.log").read_text()
    assert "step 2" in text and "still here" in text and "reader went away" in text


def test_pretrain_survives_its_stderr_reader_going_away(tmp_path):
    """`lmtool pretrain c.yaml 2>&1 | head -3` used to end in a BrokenPipeError, exit 1, no checkpoint."""
    config = tiny_config(tmp_path, make_processed_dir(tmp_path / "processed"), max_steps=30)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmtool", "--log-format", "plain", "pretrain", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stderr.readline()  # the reader reads a line, then goes away
    proc.stderr.close()
    stdout = proc.stdout.read()
    assert proc.wait(timeout=300) == 0
    run = tmp_path / "run"
    assert stdout.strip() == str(run / "final")
    assert (run / "final" / "model.safetensors").is_file()
    assert "step 30/30" in (run / "logs" / "rank-0.log").read_text()
