"""The engine's numbers: the schedule a resumed run follows, warmup against the run's length, MFU under
several processes, and fp16 loss scaling."""

from __future__ import annotations

import pytest
import torch

from lmtool.config import TrainConfig, load_config
from lmtool.errors import ConfigError
from lmtool.recipes.pretrain import run_pretrain
from lmtool.train import checkpoint
from lmtool.train.optim import WarmupDecay, resolve_warmup
from tests.engine_fixtures import make_processed_dir, read_metrics, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clm_data(tmp_path_factory):
    return make_processed_dir(tmp_path_factory.mktemp("clm") / "processed")


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "WARNING" in line]


def test_a_resumed_run_follows_the_new_schedule_and_optimizer_settings(tmp_path, clm_data, capsys):
    run_pretrain(load_config(tiny_config(tmp_path, clm_data, max_steps=20)))
    capsys.readouterr()

    # Twice as long: step 21 gets what a fresh 40-step schedule gives it, not the 20-step floor.
    run_pretrain(load_config(tiny_config(tmp_path, clm_data, name="longer", max_steps=40)))
    fresh = WarmupDecay(5, 40, "cosine", 0.1)
    train = read_metrics(tmp_path / "run")
    assert train[21]["lr"] == pytest.approx(3e-3 * fresh(20))
    assert train[40]["lr"] == pytest.approx(3e-3 * fresh(39))
    changed = [w for w in _warnings(capsys.readouterr().err) if "changed since the checkpoint" in w]
    assert len(changed) == 1 and "train.max_steps" in changed[0] and "20 -> 40" in changed[0], changed

    # A lower lr and weight decay: the logged lr and the optimizer follow the config, not the checkpoint.
    cfg = tiny_config(tmp_path, clm_data, name="lower", max_steps=50, lr=1e-3, weight_decay=0.01)
    run_pretrain(load_config(cfg))
    train = read_metrics(tmp_path / "run")
    assert train[41]["lr"] == pytest.approx(1e-3 * WarmupDecay(5, 50, "cosine", 0.1)(40))
    saved = checkpoint.load_trainer_state(tmp_path / "run" / "checkpoints" / "step-00000050")
    assert [g["weight_decay"] for g in saved["optimizer"]["param_groups"]] == [0.01, 0.0]
    changed = [w for w in _warnings(capsys.readouterr().err) if "changed since the checkpoint" in w]
    assert len(changed) == 3, changed
    assert any("train.lr" in w and "0.003 -> 0.001" in w for w in changed)
    assert any("train.max_steps" in w and "40 -> 50" in w for w in changed)
    assert any("train.weight_decay" in w for w in changed)


def test_warmup_ratio_is_a_fraction_of_the_run_and_excludes_warmup_steps():
    assert resolve_warmup(TrainConfig(), 60) == 100  # the default when neither is set
    assert resolve_warmup(TrainConfig(warmup_steps=7), 60) == 7
    assert resolve_warmup(TrainConfig(warmup_ratio=0.05), 60) == 3
    assert resolve_warmup(TrainConfig(warmup_ratio=0.05), 1000) == 50
    with pytest.raises(ValueError, match="warmup_steps or warmup_ratio, not both"):
        TrainConfig(warmup_steps=10, warmup_ratio=0.1)


def test_a_warmup_as_long_as_the_run_is_warned_about_and_warmup_ratio_reaches_the_peak(
    tmp_path, clm_data, capsys
):
    run_pretrain(load_config(tiny_config(tmp_path, clm_data, max_steps=6, warmup_steps=None)))
    warned = [w for w in _warnings(capsys.readouterr().err) if "warmup (100 steps)" in w]
    assert len(warned) == 1 and "not shorter than the run (6 steps)" in warned[0]

    (tmp_path / "b").mkdir()
    cfg = tiny_config(tmp_path / "b", clm_data, max_steps=20, warmup_steps=None, warmup_ratio=0.1)
    run_pretrain(load_config(cfg))
    assert not [w for w in _warnings(capsys.readouterr().err) if "warmup" in w]
    lrs = [record["lr"] for record in read_metrics(tmp_path / "b" / "run").values()]
    assert max(lrs) == pytest.approx(3e-3) and lrs.index(max(lrs)) == 2  # 2 warmup steps, then the peak
    assert lrs[-1] < 0.2 * 3e-3


def test_config_error_names_the_two_warmup_keys(tmp_path, clm_data):
    cfg = tiny_config(tmp_path, clm_data, warmup_ratio=0.1)  # the fixture sets warmup_steps too
    with pytest.raises(ConfigError, match="warmup_steps or warmup_ratio"):
        load_config(cfg)


def test_mfu_of_a_multi_process_job_is_against_the_peak_of_all_its_processes():
    from lmtool.train.metrics import MfuMeter, model_flops_utilization

    peak, per_token = 989e12, 1e9
    job_tokens_per_s = 8 * 0.4 * peak / per_token  # 8 GPUs, each at 40% of its peak
    assert model_flops_utilization(job_tokens_per_s, per_token, peak, processes=8) == pytest.approx(0.4)
    assert model_flops_utilization(0.4 * peak / per_token, per_token, peak, processes=1) == pytest.approx(0.4)
    # What rank 0 of 8 logs (it knows only its own device's peak).
    meter = MfuMeter(per_token, peak, processes=8, device=torch.device("cuda"), dtype=torch.bfloat16)
    assert meter(job_tokens_per_s) == pytest.approx(0.4)


@pytest.fixture
def fp16_on_cpu(monkeypatch):
    """fp16 autocast + GradScaler on the CPU (the CLI refuses it there; torch runs it, slowly), without
    MFU (measuring the CPU's fp16 matmul peak takes seconds)."""
    import lmtool.recipes.launch
    import lmtool.train.engine
    from lmtool.runtime import Precision

    monkeypatch.setattr(lmtool.train.engine, "peak_flops", lambda device, dtype: None)
    monkeypatch.setattr(
        lmtool.recipes.launch, "resolve_precision", lambda choice, device: Precision("fp16", "cpu")
    )


def test_fp16_starts_learning_at_once_without_scaler_back_offs(tmp_path, clm_data, fp16_on_cpu):
    # 16 x 16 = 256 tokens per micro-batch: backpropagating their loss sum made the scaler back off 7 times.
    run_pretrain(load_config(tiny_config(tmp_path, clm_data, batch_size=16, max_steps=6)))
    train = read_metrics(tmp_path / "run")
    assert train[6]["scaler_skipped"] == 0
    assert train[6]["loss"] < train[1]["loss"] - 0.1


def test_fp16_updates_skipped_by_the_scaler_are_counted_and_logged(
    tmp_path, clm_data, fp16_on_cpu, monkeypatch, capsys
):
    import lmtool.tasks

    real = lmtool.tasks.make_task

    def make_task(*args, **kwargs):
        task = real(*args, **kwargs)
        loss, calls = task.loss, []

        def overflowing(model, batch):
            calls.append(1)
            value, count = loss(model, batch)
            if len(calls) == 3:  # same loss, but a gradient fp16 cannot hold
                weight = next(model.parameters())
                value = value + 1e38 * (weight.sum() - weight.sum().detach())
            return value, count

        task.loss = overflowing
        return task

    monkeypatch.setattr(lmtool.tasks, "make_task", make_task)
    run_pretrain(load_config(tiny_config(tmp_path, clm_data, max_steps=5)))
    train = read_metrics(tmp_path / "run")
    assert [train[s]["scaler_skipped"] for s in range(1, 6)] == [0, 0, 1, 1, 1]
    assert train[5]["nonfinite_skipped"] == 0
    assert "step 3: fp16 gradient overflow, update skipped" in capsys.readouterr().err
