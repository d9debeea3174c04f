"""The engine end to end in-process on tiny models: losses fall, models reload, accumulation and
non-finite losses are handled."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmtool.config import load_config
from lmtool.errors import TrainingStopped
from lmtool.recipes.pretrain import run_pretrain
from lmtool.train import checkpoint
from tests.engine_fixtures import make_processed_dir, read_metrics, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clm_data(tmp_path_factory):
    return make_processed_dir(tmp_path_factory.mktemp("clm") / "processed")


@pytest.fixture(scope="module")
def mlm_data(tmp_path_factory):
    return make_processed_dir(tmp_path_factory.mktemp("mlm") / "processed", objective="mlm", documents=200)


def _mean_loss(records: dict[int, dict], steps: range) -> float:
    return sum(records[s]["loss"] for s in steps) / len(steps)


def test_clm_loss_falls_and_the_final_model_loads_in_plain_transformers(tmp_path, clm_data):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = load_config(tiny_config(tmp_path, clm_data, max_steps=150, eval_every=75, save_every=100))
    final = run_pretrain(cfg)
    train = read_metrics(tmp_path / "run")
    assert sorted(train) == list(range(1, 151))
    assert _mean_loss(train, range(141, 151)) < 0.5 * _mean_loss(train, range(1, 11))
    evals = read_metrics(tmp_path / "run", "eval")
    assert sorted(evals) == [75, 150] and evals[150]["loss"] < evals[75]["loss"]
    assert evals[150]["perplexity"] < 8  # 41 words; the chain has ~1.2 choices per step
    assert {"lr", "grad_norm", "tokens_per_s", "memory_gb", "eta_s", "tokens"} <= set(train[150])
    assert all(record["grad_norm"] > 0 for record in train.values())  # the norm clipping sees
    assert train[150]["tokens"] == 150 * 4 * 16
    assert (tmp_path / "run" / "config.yaml").exists()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step-00000100",
        "step-00000150",
    ]
    state = checkpoint.load_trainer_state(tmp_path / "run" / "checkpoints" / "step-00000150")
    assert state["progress"]["step"] == 150 and state["progress"]["samples_seen"] == 600

    model = AutoModelForCausalLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    ids = tokenizer("w0 w7 w28", return_tensors="pt").input_ids
    next_word = tokenizer.decode(model(ids).logits[0, -1].argmax())
    assert next_word in ("w11", "w12")  # (3 * 28 + 7) % 40 = 11, or 12 with the chain's noise


def test_mlm_loss_falls_and_masked_accuracy_rises(tmp_path, mlm_data):
    wider = {"hidden_size": 64, "intermediate_size": 128}
    config = tiny_config(
        tmp_path, mlm_data, objective="mlm", arch="bert", model_overrides=wider,
        batch_size=16, lr=3e-3, warmup_steps=30, max_steps=300, eval_every=100,
    )  # fmt: skip
    run_pretrain(load_config(config))
    train = read_metrics(tmp_path / "run")
    assert _mean_loss(train, range(281, 301)) < 0.85 * _mean_loss(train, range(1, 21))
    evals = read_metrics(tmp_path / "run", "eval")
    assert evals[300]["loss"] < evals[100]["loss"] - 0.3
    assert evals[300]["accuracy"] > 0.15 > evals[100]["accuracy"] - 0.05
    config = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]


def test_lstm_trains_saves_and_reloads(tmp_path, clm_data):
    from lmtool.data.processed import open_for_pretraining
    from lmtool.models import load_model
    from lmtool.tasks import make_task

    cfg = load_config(tiny_config(tmp_path, clm_data, arch="lstm", max_steps=300, lr=3e-2))
    final = run_pretrain(cfg)
    train = read_metrics(tmp_path / "run")
    assert _mean_loss(train, range(291, 301)) < 0.5 * _mean_loss(train, range(1, 11))
    evals = read_metrics(tmp_path / "run", "eval")
    model, tokenizer = load_model(final)
    validation = open_for_pretraining(clm_data, cfg).validation
    task = make_task("clm", tokenizer, seed=0)
    evaluator = task.evaluator()
    rows = [{"input_ids": validation[i]["input_ids"], "sample_id": i} for i in range(len(validation))]
    for first in range(0, len(rows), 4):
        evaluator.update(model, task.collate(rows[first : first + 4]))
    # final/ has no padded vocabulary rows; in training their (pushed-down) logits still take part in the
    # softmax, ~2e-5 of the loss here (tests/test_vocab_trim.py, xfail): back to rel=1e-5 once they are masked
    assert evaluator.compute()["loss"] == pytest.approx(evals[300]["loss"], rel=1e-5)


def test_accumulated_micro_steps_equal_one_big_batch(tmp_path, clm_data):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    big = load_config(tiny_config(tmp_path / "a", clm_data, batch_size=8, max_steps=8))
    accumulated = load_config(
        tiny_config(tmp_path / "b", clm_data, batch_size=2, global_batch_size=8, max_steps=8)
    )
    run_pretrain(big)
    run_pretrain(accumulated)
    one, four = read_metrics(tmp_path / "a" / "run"), read_metrics(tmp_path / "b" / "run")
    for step in range(1, 9):
        assert four[step]["loss"] == pytest.approx(one[step]["loss"], abs=1e-5)


def _poisoned_task(monkeypatch, bad_calls):
    """make_task whose loss is NaN on the given (1-based) loss calls: one call per step here."""
    import lmtool.tasks

    real = lmtool.tasks.make_task
    calls = {"n": 0}

    def make_task(*args, **kwargs):
        task = real(*args, **kwargs)
        loss = task.loss

        def poisoned(model, batch):
            calls["n"] += 1
            value, count = loss(model, batch)
            return (value * float("nan"), count) if bad_calls(calls["n"]) else (value, count)

        task.loss = poisoned
        return task

    monkeypatch.setattr(lmtool.tasks, "make_task", make_task)


def test_a_non_finite_loss_skips_its_update_and_training_goes_on(tmp_path, clm_data, monkeypatch):
    _poisoned_task(monkeypatch, lambda n: n == 3)
    final = run_pretrain(load_config(tiny_config(tmp_path, clm_data, max_steps=6)))
    train = read_metrics(tmp_path / "run")
    assert math.isnan(train[3]["loss"]) and train[6]["nonfinite_skipped"] == 1
    assert all(math.isfinite(train[s]["loss"]) for s in (1, 2, 4, 5, 6))
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(final / "model.safetensors").values())


def test_repeated_non_finite_losses_stop_the_run_and_keep_the_last_good_checkpoint(
    tmp_path, clm_data, monkeypatch
):
    _poisoned_task(monkeypatch, lambda n: n >= 6)
    cfg = load_config(tiny_config(tmp_path, clm_data, max_steps=20, save_every=4, max_nonfinite=3))
    with pytest.raises(TrainingStopped, match="3 non-finite losses in a row at step 8"):
        run_pretrain(cfg)
    assert checkpoint.latest_checkpoint(tmp_path / "run").name == "step-00000004"
    assert not (tmp_path / "run" / "final").exists()
