"""Experiment trackers: TensorBoard on when installed (`auto`), Weights & Biases offline with the config and
final metrics attached, and a tracker that is missing or fails never stops training."""

from __future__ import annotations

import json
import sys

import pytest

from lmtool.config import LoggingConfig, load_config
from lmtool.train.metrics import MetricsSink
from lmtool.train.trackers import TensorBoardTracker, open_trackers

RECORDS = [
    {"type": "train", "step": 1, "loss": 3.0, "lr": 1e-3, "tokens": 64},
    {"type": "train", "step": 2, "loss": 2.5, "lr": 1e-3, "tokens": 128},
    {"type": "eval", "step": 2, "loss": 2.75, "perplexity": 15.6, "per_class": {"a": 1.0}},
]


def _warnings(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if "WARNING" in line or "warning" in line]


def test_tensorboard_auto_is_on_when_installed_and_silently_off_when_not(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    assert LoggingConfig().tensorboard == "auto"
    trackers = open_trackers(LoggingConfig(), tmp_path, {}, last_step=0)
    assert [type(t) for t in trackers] == [TensorBoardTracker]
    trackers[0].close({})

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    assert open_trackers(LoggingConfig(), tmp_path, {}, last_step=0) == []
    assert _warnings(capsys) == []
    assert open_trackers(LoggingConfig(tensorboard=True), tmp_path, {}, last_step=0) == []
    (warning,) = _warnings(capsys)
    assert "pip install 'lmtool[tensorboard]'" in warning


def test_a_missing_wandb_warns_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)
    logging = LoggingConfig(tensorboard=False, wandb={"project": "p", "mode": "offline"})
    assert open_trackers(logging, tmp_path, {}, last_step=0) == []
    (warning,) = _warnings(capsys)
    assert "pip install 'lmtool[wandb]'" in warning and "training goes on" in warning


def test_a_tracker_that_fails_is_dropped_with_one_warning_and_metrics_jsonl_keeps_everything(
    tmp_path, capsys
):
    class Broken:
        name = "broken"
        calls = 0

        def log(self, record):
            Broken.calls += 1
            raise ConnectionError("server gone")

        def close(self, final):
            raise AssertionError("a dropped tracker is not closed")

    sink = MetricsSink(tmp_path / "metrics.jsonl", [Broken()])
    for record in RECORDS:
        sink.write(record)
    sink.close()
    assert Broken.calls == 1
    (warning,) = _warnings(capsys)
    assert "broken failed (ConnectionError: server gone); training goes on without it" in warning
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == RECORDS


def test_wandb_offline_gets_the_config_the_metrics_and_the_final_metrics(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    logging = load_config(
        None, ["logging.tensorboard=false", "logging.wandb.project=lmtool-test", "logging.wandb.mode=offline"]
    ).logging
    sink = MetricsSink(
        tmp_path / "metrics.jsonl", open_trackers(logging, run_dir, {"train": {"lr": 0.001}}, 0)
    )
    for record in RECORDS:
        sink.write(record)
    sink.close()
    out = capsys.readouterr()
    assert out.out == "" and "could not start" not in out.err and "failed" not in out.err

    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    log = next(offline.glob("run-*.wandb")).read_bytes()  # what `wandb sync` uploads
    assert b'{"lr":0.001}' in log and b"train/loss" in log and b"eval/perplexity" in log
    assert b"per_class" not in log  # nested values stay in metrics.jsonl
    run_id = (run_dir / "wandb" / "lmtool-run-id").read_text().strip()
    assert offline.name.endswith(run_id)  # a resumed run continues this W&B run


def test_the_trackers_get_every_record_and_the_last_value_of_each_metric_at_the_end(tmp_path):
    class Recording:
        name = "recording"

        def __init__(self):
            self.logged, self.final = [], None

        def log(self, record):
            self.logged.append(record)

        def close(self, final):
            self.final = final

    tracker = Recording()
    sink = MetricsSink(tmp_path / "metrics.jsonl", [tracker])
    for record in RECORDS:
        sink.write(record)
    sink.close()
    assert tracker.logged == RECORDS
    assert tracker.final == {
        "train/loss": 2.5, "train/lr": 1e-3, "train/tokens": 128, "eval/loss": 2.75, "eval/perplexity": 15.6
    }  # fmt: skip
