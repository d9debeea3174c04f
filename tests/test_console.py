"""The console: what reaches stderr, and that a stderr whose reader went away never stops a run."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest
from rich.console import Console

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


def _terminal(monkeypatch, width: int) -> io.StringIO:
    """Make console draw its rich bars into a fake terminal `width` columns wide; returns what it drew."""
    screen = io.StringIO()
    monkeypatch.setattr(
        console, "stderr", Console(file=screen, width=width, force_terminal=True, soft_wrap=True)
    )
    monkeypatch.setattr(console, "_fancy", lambda: True)
    monkeypatch.setattr(console, "settings", console._Settings())
    return screen


@pytest.mark.parametrize("width", [120, 60])
def test_the_training_bar_keeps_its_counts_at_any_width(tmp_path, monkeypatch, width):
    """At 120 columns the bar showed the log line and collapsed to `train ━━ 1… 0… 0…`."""
    from lmtool.config import load_config
    from lmtool.recipes.pretrain import run_pretrain

    screen = _terminal(monkeypatch, width)
    config = tiny_config(tmp_path, make_processed_dir(tmp_path / "processed"), max_steps=6)
    run_pretrain(load_config(config))
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    bars = [line for line in re.split(r"[\r\n]", drawn) if line.startswith("train ")]
    assert bars and all(re.search(r" \d/6 \d:\d\d:\d\d", line) for line in bars), bars
    assert "…" not in drawn


def test_no_bar_between_results_written_to_the_same_terminal(monkeypatch):
    """generate's bar was drawn into the text it streamed to the terminal."""
    screen = _terminal(monkeypatch, 80)
    terminal_stdout = io.StringIO()
    terminal_stdout.isatty = lambda: True
    with console.progress("generating", total=2, beside=terminal_stdout) as bar:
        bar.advance(2)
    assert screen.getvalue() == ""
    with console.progress("generating", total=2, beside=io.StringIO()) as bar:  # stdout piped: a bar
        bar.advance(2)
    assert "generating" in screen.getvalue()


def test_tokenizer_training_draws_no_second_set_of_bars(tmp_path, monkeypatch):
    """The tokenizers library drew its own bars (another style) besides lmtool's."""
    from tokenizers import trainers

    from lmtool.config import TokenizerTrainConfig
    from lmtool.data.tokenizer import train_tokenizer

    asked = []
    real = trainers.BpeTrainer
    monkeypatch.setattr(trainers, "BpeTrainer", lambda **kw: asked.append(kw["show_progress"]) or real(**kw))
    _terminal(monkeypatch, 80)
    train_tokenizer(TokenizerTrainConfig(vocab_size=300), "clm", iter(["a b c"] * 10), length=10,
                    model_max_length=16)  # fmt: skip
    assert asked == [False]
