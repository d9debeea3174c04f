"""Nothing lost: `--overwrite` deletes only what lmtool made, one process writes a run or processed
directory at a time, killed preprocess runs leave nothing behind for long, and a full disk names
the output rather than the source being read."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from lmtool.data.preprocess import run_preprocess
from lmtool.errors import LmtoolError
from lmtool.ownership import RUN_MARKER
from tests.conftest import ROOT, assert_usage_error
from tests.engine_fixtures import make_processed_dir, tiny_config
from tests.test_preprocess import DOCS, make_config, write_txt_paragraph
from tests.test_pretrain_cli import _cli


def _edit(config: Path, **run) -> Path:
    text = yaml.safe_load(config.read_text())
    text["run"].update(run)
    config.write_text(yaml.safe_dump(text))
    return config


def _hold_lock(directory: Path) -> subprocess.Popen:
    """Another process holding `directory`'s lock (as a live run does), until killed."""
    code = (
        "import sys, time; from lmtool.runlock import DirLock; "
        "DirLock(sys.argv[1], 'x').acquire(); print('locked', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(directory)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


# --------------------------------------------------------------------------- --overwrite


def test_preprocess_overwrite_never_deletes_a_directory_holding_its_source(tmp_path):
    """processed_dir: data, with the corpus in data/: refused even with --overwrite; the corpus stays."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    source = write_txt_paragraph(data_dir)
    config = make_config(tmp_path, [source], processed_dir=str(data_dir))
    with pytest.raises(LmtoolError, match="not made by lmtool preprocess") as err:
        run_preprocess(config, overwrite=True)
    assert str(data_dir) in str(err.value)
    assert (data_dir / "c.txt").read_text().startswith(DOCS[0])

    # A directory lmtool made is still never deleted while a configured source lies in it.
    out = run_preprocess(make_config(tmp_path, [source], processed_dir=str(tmp_path / "p")))
    (out / "extra.txt").write_text("more text in here\n")
    sources = [source, {"path": str(out / "extra.txt")}]
    with pytest.raises(LmtoolError, match=r"holds data.sources.1.path"):
        run_preprocess(make_config(tmp_path, sources, processed_dir=str(out)), overwrite=True)
    assert (out / "extra.txt").exists() and (out / "manifest.json").exists()


def test_pretrain_overwrite_deletes_only_lmtool_run_directories(tmp_path, capsys, monkeypatch):
    data = make_processed_dir(tmp_path / "processed")
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "keep.py").write_text("print('mine')\n")
    monkeypatch.chdir(project)
    config = tiny_config(project, data, max_steps=2)

    # `run.name: ..` would make runs/.. the project itself.
    named = _edit(config, name="..", output_dir="runs/${run.name}")
    assert_usage_error(_cli(capsys, "pretrain", str(named), "--overwrite"), "run.name")
    # Directories lmtool did not make, or that hold the run's inputs, are refused even with --overwrite.
    for output_dir, fragments in [
        (".", ["run.output_dir", "not an lmtool run directory"]),
        (str(project / "src"), ["run.output_dir", "src", "not an lmtool run directory"]),
    ]:
        _edit(config, name="tiny", output_dir=output_dir)
        assert_usage_error(_cli(capsys, "pretrain", str(config), "--overwrite"), *fragments)
    assert (project / "src" / "keep.py").exists() and config.exists()

    # A run directory lmtool made is replaced; one that holds the processed data is not.
    _edit(config, output_dir=str(tmp_path / "run"))
    assert _cli(capsys, "pretrain", str(config)).returncode == 0
    assert (tmp_path / "run" / RUN_MARKER).exists()
    shutil.copytree(data, tmp_path / "run" / "processed")
    held = tiny_config(tmp_path, tmp_path / "run" / "processed", name="held", max_steps=2)
    assert_usage_error(_cli(capsys, "pretrain", str(held), "--overwrite"), "holds data.processed_dir")
    assert (tmp_path / "run" / "processed" / "manifest.json").exists()
    # A file a user put in the run directory is never deleted: --overwrite refuses, naming it.
    shutil.rmtree(tmp_path / "run" / "processed")
    (tmp_path / "run" / "notes.txt").write_text("mine\n")
    result = _cli(capsys, "pretrain", str(config), "--overwrite")
    assert_usage_error(result, "holds notes.txt, which lmtool did not make")
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine\n"
    (tmp_path / "run" / "notes.txt").unlink()
    # Run directories written before the marker existed (config.yaml + metrics.jsonl) are still lmtool's.
    (tmp_path / "run" / RUN_MARKER).unlink()
    assert _cli(capsys, "pretrain", str(config), "--overwrite").returncode == 0
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()


# --------------------------------------------------------------------------- locks


@pytest.mark.slow
def test_a_second_pretrain_on_a_live_run_directory_is_refused_with_the_holders_pid(tmp_path, capsys):
    data = make_processed_dir(tmp_path / "processed")
    config = tiny_config(tmp_path, data, max_steps=100_000, batch_size=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "lmtool", "--quiet", "pretrain", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        metrics = tmp_path / "run" / "metrics.jsonl"
        for _ in range(1200):  # training has started: the lock is held
            if metrics.exists() and metrics.stat().st_size:
                break
            assert first.poll() is None
            time.sleep(0.05)
        short = ["--set", "train.max_steps=1"]  # without the lock these would finish in seconds, exit 0
        second = _cli(capsys, "pretrain", str(config), *short)
        assert_usage_error(second, "run.output_dir", str(tmp_path / "run"), f"pid {first.pid}")
        assert_usage_error(_cli(capsys, "pretrain", str(config), *short, "--overwrite"), f"pid {first.pid}")
        assert first.poll() is None and (tmp_path / "run" / "config.yaml").exists()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def test_preprocess_is_refused_while_another_process_writes_the_directory(tmp_path):
    source = write_txt_paragraph(tmp_path)
    out = tmp_path / "processed"
    live_partial = tmp_path / ".processed.partial-live0000"
    live_partial.mkdir()
    holder = _hold_lock(out)
    try:
        with pytest.raises(LmtoolError, match=f"data.processed_dir: .*pid {holder.pid} on ") as err:
            run_preprocess(make_config(tmp_path, [source]))
        assert "in use" in str(err.value)
        assert live_partial.exists() and not out.exists()  # the live run's work is left alone
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone (killed: the kernel released its lock): its partial directory is stale now.
    assert run_preprocess(make_config(tmp_path, [source])) == out
    assert not live_partial.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or p.name.endswith(".lock")]


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("streaming", [False, True])
def test_a_full_disk_names_the_output_not_the_source(tmp_path, monkeypatch, streaming):
    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pa.RecordBatchStreamWriter, "write_table", no_space)
    source = write_txt_paragraph(tmp_path)
    with pytest.raises(LmtoolError) as err:
        run_preprocess(make_config(tmp_path, [source], streaming=streaming))
    message = str(err.value)
    assert "no space left" in message and str(tmp_path / "processed") in message
    assert "cannot read" not in message
    assert (
        not [p for p in tmp_path.iterdir() if ".partial-" in p.name] and not (tmp_path / "processed").exists()
    )
