"""Preprocessing inside pretrain happens before the process group exists, under the processed
directory's file lock: a preprocessing longer than the collective timeout does not abort the other
ranks, and processes racing on a missing directory build it once (a failed build is not redone)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_torchrun
from tests.eval_fixtures import corpus

SCRIPT = ROOT / "tests" / "slow_preprocess_run.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

CONFIG = """\
run: {{name: early, output_dir: {out}/run}}
data:
  sources: [{{path: {out}/corpus.txt, doc_split: line}}]
  processed_dir: {out}/processed
  validation_fraction: 0.2
  block_size: 16
tokenizer: {{train: {{type: bpe, vocab_size: 300}}}}
model: {{arch: gpt2, config: {{n_layer: 1, n_head: 2, n_embd: 32, n_positions: 16}}}}
train: {{batch_size: 2, max_steps: 2, warmup_steps: 1, eval_every: 0, save_every: 0, compile: false,
         precision: fp32, distributed: {{timeout: {timeout}}}}}
"""


def _config(tmp_path: Path, timeout: float = 3600) -> Path:
    (tmp_path / "corpus.txt").write_text("\n".join(corpus(120)) + "\n", encoding="utf-8")
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(out=tmp_path, timeout=timeout), encoding="utf-8")
    return path


def _leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if ".partial-" in p.name or p.name.endswith(".lock"))


@pytest.mark.slow
def test_two_rank_pretrain_outlasts_a_preprocessing_longer_than_the_collective_timeout(tmp_path):
    """The preprocessing rank takes 8 s, the collective timeout is 3 s: the other rank waits on the file
    lock, not in a barrier (the code before this change aborted it there and left a .partial directory)."""
    config = _config(tmp_path, timeout=3)
    proc = run_torchrun(str(SCRIPT), "pretrain", str(config), "8", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 2 x cpu" in proc.stderr
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()
    assert (tmp_path / "processed" / "manifest.json").exists()
    assert len((tmp_path / "c.yaml.builds").read_text().split()) == 1  # built once, by one rank
    assert _leftovers(tmp_path) == []


def _start(config: Path, seconds: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), "processed", str(config), str(seconds), "3600"],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, what: str, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.parametrize("fails", [False, True])
def test_processes_racing_on_a_missing_processed_dir_build_it_once(tmp_path, fails):
    """The second process waits on the lock (saying for whom), then finds the directory made; when the first
    fails, the second exits 2 naming it instead of building again."""
    config = _config(tmp_path)
    builds = tmp_path / "c.yaml.builds"
    if fails:
        (tmp_path / "c.yaml.fail").touch()
    first = _start(config, "release")  # builds until the test creates c.yaml.release
    second = None
    try:
        _wait_for(lambda: builds.exists() or first.poll() is not None, "the first build to start")
        second = _start(config, "0")
        waiting = ""
        while f"waiting for pid {first.pid} on " not in waiting and second.poll() is None:
            waiting += second.stderr.readline()
        (tmp_path / "c.yaml.release").touch()
        out_2, err_2 = second.communicate(timeout=180)
        out_1, err_1 = first.communicate(timeout=180)
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
    err_2 = waiting + err_2
    assert builds.read_text().split() == [str(first.pid)]  # built once, by the first
    assert f"waiting for pid {first.pid} on " in err_2
    processed = tmp_path / "processed"
    if fails:
        assert first.returncode == 2 and "the corpus is broken" in err_1
        assert second.returncode == 2, err_2
        assert f"data.processed_dir: pid {first.pid} on " in err_2 and "ended without making it" in err_2
        assert not processed.exists()
    else:
        assert first.returncode == second.returncode == 0, err_1 + err_2
        assert out_1.strip() == out_2.strip() == str(processed)
        assert (processed / "manifest.json").exists()
    assert _leftovers(tmp_path) == []
