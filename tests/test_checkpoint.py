"""Nothing lost: checkpoint integrity, retention of the current line only, re-saves, a full disk, metrics
and TensorBoard on resume, keep_best. Unit tests on a stub model, then the engine in-process."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import sys

import pytest
import torch
from safetensors.torch import save_file

from lmtool.config import load_config
from lmtool.errors import LmtoolError
from lmtool.recipes.pretrain import run_pretrain
from lmtool.train import checkpoint
from lmtool.train.metrics import MetricsSink, truncate_metrics
from lmtool.train.trackers import TensorBoardTracker
from tests.conftest import Result, assert_usage_error, run_cli
from tests.engine_fixtures import make_processed_dir, read_metrics, tiny_config


class _StubModel:
    """Writes one safetensors file, as save_pretrained does."""

    def __init__(self, value: float):
        self.value = value

    def save_pretrained(self, path, safe_serialization=True):
        path.mkdir(parents=True, exist_ok=True)
        save_file({"w": torch.full((256,), self.value)}, path / "model.safetensors")


def _save(run_dir, step, value=1.0):
    state = {"progress": {"step": step}, "moments": torch.arange(4096, dtype=torch.float32) * value}
    return checkpoint.save_checkpoint(run_dir, step, _StubModel(value), None, "run: {}\n", state)


def _names(path):
    return sorted(p.name for p in path.iterdir())


def test_altered_bytes_in_a_checkpoint_are_detected_on_resume(tmp_path, capsys):
    good = _save(tmp_path, 10)
    altered = _save(tmp_path, 20)
    state = altered / checkpoint.STATE_FILE
    data = bytearray(state.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # same size: only the content changed
    state.write_bytes(bytes(data))

    assert checkpoint.latest_checkpoint(tmp_path) == good  # falls back to the previous complete one
    assert "trainer_state.pt does not match its sha256" in capsys.readouterr().err
    with pytest.raises(LmtoolError, match="trainer_state.pt does not match its sha256"):
        checkpoint.resolve_resume(tmp_path, str(altered), overwrite=False)


def test_a_kill_while_re_saving_a_step_leaves_that_checkpoint(tmp_path, monkeypatch):
    _save(tmp_path, 10, value=1.0)
    real_replace = os.replace

    def killed_before_the_new_copy_is_renamed_in(src, dst):
        if os.path.basename(src).startswith(".tmp-step-"):
            raise KeyboardInterrupt  # stands for SIGKILL between the two renames
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_before_the_new_copy_is_renamed_in)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 10, value=2.0)
    monkeypatch.setattr(os, "replace", real_replace)

    found = checkpoint.latest_checkpoint(tmp_path)
    assert found is not None and checkpoint.verify(found) is None
    checkpoint.start_lineage(tmp_path, found)  # the next run's start puts it back under its name
    root = tmp_path / "checkpoints"
    assert _names(root) == ["step-00000010"]
    assert checkpoint.latest_checkpoint(tmp_path) == root / "step-00000010"


def test_a_full_disk_while_rewriting_metrics_keeps_the_history(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"type": "train", "step": s, "loss": 1.0 / s, "pad": "x" * 200} for s in range(1, 41)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    before = path.read_text()
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, limits[1]))  # writes past 1000 bytes fail (EFBIG)
    try:
        with pytest.raises(OSError):
            truncate_metrics(path, 30)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    assert path.read_text() == before
    assert _names(tmp_path) == ["metrics.jsonl"]


def test_tensorboard_events_of_redone_steps_are_purged_on_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics, events = tmp_path / "metrics.jsonl", tmp_path / "tb"
    sink = MetricsSink(metrics, [TensorBoardTracker(events, last_step=0)])
    for step in range(1, 6):
        sink.write({"type": "train", "step": step, "loss": float(step)})
    sink.close()
    truncate_metrics(metrics, 3)  # resumed from step 3: steps 4 and 5 are redone
    sink = MetricsSink(metrics, [TensorBoardTracker(events, last_step=3)])
    for step in (4, 5):
        sink.write({"type": "train", "step": step, "loss": 10.0 * step})
    sink.close()

    loaded = EventAccumulator(str(events))
    loaded.Reload()
    scalars = [(e.step, e.value) for e in loaded.Scalars("train/loss")]
    assert scalars == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0)]


# --------------------------------------------------------------------------- the engine


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_processed_dir(tmp_path_factory.mktemp("data") / "processed")


@pytest.fixture(scope="module")
def thirty_steps(tmp_path_factory, data):
    """A run of 30 steps with checkpoints at 20 and 30."""
    base = tmp_path_factory.mktemp("thirty")
    run_pretrain(load_config(tiny_config(base, data, max_steps=30, save_every=10, keep_last=2)))
    return base / "run"


def _copy_run(thirty_steps, tmp_path):
    shutil.copytree(thirty_steps, tmp_path / "run")
    return tmp_path / "run" / "checkpoints"


def test_a_broken_newer_checkpoint_neither_counts_for_keep_last_nor_is_resumed(
    tmp_path, data, thirty_steps, capsys
):
    root = _copy_run(thirty_steps, tmp_path)
    broken = root / "step-00000030" / "model.safetensors"
    broken.write_bytes(broken.read_bytes()[:100])  # cut short, e.g. by a full disk
    run_pretrain(load_config(tiny_config(tmp_path, data, max_steps=28, save_every=5, keep_last=1)))

    assert f"resuming from {root / 'step-00000020'}" in capsys.readouterr().err
    assert sorted(read_metrics(tmp_path / "run")) == list(range(1, 29))
    (aside,) = [p for p in root.iterdir() if p.name.startswith("abandoned-")]
    assert _names(root) == [aside.name, "step-00000028"] and _names(aside) == ["step-00000030"]
    assert checkpoint.latest_checkpoint(tmp_path / "run") == root / "step-00000028"


def test_rolling_back_to_an_earlier_checkpoint_moves_the_later_ones_aside(
    tmp_path, data, thirty_steps, capsys
):
    root = _copy_run(thirty_steps, tmp_path)
    origin = root / "step-00000020"
    config = tiny_config(tmp_path, data, max_steps=28, save_every=5, keep_last=2, resume=str(origin))
    run_pretrain(load_config(config))

    (aside,) = [p for p in root.iterdir() if p.name.startswith("abandoned-")]
    assert "step-00000030" in capsys.readouterr().err  # said so, naming what moved
    assert _names(root) == [aside.name, "step-00000025", "step-00000028"]
    assert _names(aside) == ["step-00000030"]
    assert checkpoint.latest_checkpoint(tmp_path / "run") == root / "step-00000028"


def test_a_full_disk_while_saving_exits_2_keeps_the_previous_checkpoint_and_leaves_no_partial_copy(
    tmp_path, data, monkeypatch, capsys
):
    from lmtool.cli import main

    real_save = torch.save
    calls = {"n": 0}

    def disk_fills_up(obj, file, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills_up)
    config = str(tiny_config(tmp_path, data, max_steps=8, save_every=4))
    root = tmp_path / "run" / "checkpoints"

    def run() -> Result:
        with pytest.raises(SystemExit) as exit_info:
            main(["pretrain", config])
        captured = capsys.readouterr()
        return Result(exit_info.value.code, captured.out, captured.err)

    assert_usage_error(run(), f"no space left on device while saving step 8 to {root}")
    assert _names(root) == ["step-00000004"] and checkpoint.verify(root / "step-00000004") is None

    (root / ".tmp-step-00000012-4242").mkdir()  # what a save killed by SIGKILL leaves behind
    (root / ".tmp-step-00000012-4242" / checkpoint.STATE_FILE).write_bytes(b"x" * 1000)
    assert_usage_error(run(), "no space left on device while saving step 8")  # still full: nothing piles up
    assert _names(root) == ["step-00000004"]


_FILE_SIZE_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
from lmtool.cli import main
main(sys.argv[2:])
"""


def test_a_file_size_limit_while_saving_exits_2_like_a_full_disk(tmp_path, data):
    config = str(tiny_config(tmp_path, data, max_steps=4, save_every=4))
    # 200 kB: the weights fit, torch.save's trainer state does not (its zip writer says "unexpected pos").
    result = run_cli("200000", "pretrain", config, launcher=[sys.executable, "-c", _FILE_SIZE_LIMITED])
    assert_usage_error(result, "no space left on device while saving step 4", "ulimit -f")
    assert _names(tmp_path / "run" / "checkpoints") == []  # no partial copy left


def test_a_kill_between_the_last_checkpoint_and_final_does_not_repeat_the_final_eval(
    tmp_path, data, monkeypatch
):
    from lmtool.train.saving import Saver

    config = load_config(tiny_config(tmp_path, data, max_steps=6))
    real_write_final = Saver.write_final

    def killed(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(Saver, "write_final", killed)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(config)
    monkeypatch.setattr(Saver, "write_final", real_write_final)
    run_pretrain(config)

    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    evals = [json.loads(line)["step"] for line in lines if json.loads(line)["type"] == "eval"]
    assert evals == [6] and (tmp_path / "run" / "final" / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("losses", "best_step"),
    [
        ([5.0, 4.0, 2.0, 3.0, 3.5, 4.0, 4.5], 9),  # evals at steps 3, 6, 9, ..., 18 and 20
        ([5.0, 4.0, 2.0, 3.0, 3.5, 4.0, 1.0], 20),  # the final eval, after step 20 was saved, is the best
    ],
)
def test_keep_best_keeps_the_best_checkpoint_in_addition_to_keep_last(
    tmp_path, data, monkeypatch, losses, best_step
):
    import lmtool.tasks

    scripted = iter(losses)
    real_make_task = lmtool.tasks.make_task

    def make_task(*args, **kwargs):
        task = real_make_task(*args, **kwargs)
        real_evaluator = task.evaluator

        def evaluator():
            inner = real_evaluator()
            compute = inner.compute
            inner.compute = lambda: {**compute(), "loss": next(scripted)}
            return inner

        task.evaluator = evaluator
        return task

    monkeypatch.setattr(lmtool.tasks, "make_task", make_task)
    config = tiny_config(
        tmp_path, data, max_steps=20, eval_every=3, save_every=10, keep_last=1, keep_best=True
    )
    run_pretrain(load_config(config))

    root = tmp_path / "run" / "checkpoints"
    assert _names(root) == sorted({checkpoint.checkpoint_name(best_step), "step-00000020"})
    best = checkpoint.load_trainer_state(root / checkpoint.checkpoint_name(best_step))["progress"]
    if best_step != 20:  # step 20 was saved before its eval
        assert best["step"] == best_step and best["best_step"] == best_step and best["best_value"] == 2.0


def test_saved_files_and_processed_dirs_get_the_users_umask(tmp_path, monkeypatch):
    """safetensors wrote model.safetensors 0600 (and mkdtemp made processed data 0700) under umask 022."""
    from lmtool import permissions
    from lmtool.data.preprocess import _work_dir
    from lmtool.train import atomic

    monkeypatch.setattr(permissions, "UMASK", 0o022)
    final = tmp_path / "final"
    atomic.write_dir(tmp_path / ".tmp-final", final,
                     lambda d: save_file({"w": torch.zeros(2)}, str(d / "model.safetensors")), "the model")  # fmt: skip
    assert (final / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert _work_dir(tmp_path / "processed" / "x").stat().st_mode & 0o777 == 0o755


def test_a_finished_run_rerun_says_so_and_changes_nothing(tmp_path, data, capsys):
    """A rerun printed "training ... N steps", redid the final eval and rewrote final/ (losing eval.json)."""
    config = load_config(tiny_config(tmp_path, data, max_steps=6))
    run = tmp_path / "run"
    assert run_pretrain(config) == run / "final"
    (run / "final" / "eval.json").write_text("{}")
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    capsys.readouterr()
    assert run_pretrain(config) == run / "final"
    err = capsys.readouterr().err
    assert "already finished at step 6" in err and "training" not in err, err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    # a config that asks for more steps trains on
    assert run_pretrain(load_config(tiny_config(tmp_path, data, max_steps=8))) == run / "final"
    assert max(read_metrics(run)) == 8


def test_evaluate_without_a_config_or_a_model_says_what_to_give():
    """It used to name a directory nobody made: `model directory not found: runs/run/final`."""
    assert_usage_error(run_cli("evaluate"), "--model", "CONFIG")
