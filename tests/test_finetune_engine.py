"""Engine options fine-tuning relies on, checked with the pretrain tasks on tiny models: length-grouped
data order, metric_for_best / patience / final_model, per-parameter lr scales and frozen parameters,
sequence_length, nested metrics, and exact resume / 2-process DDP with length grouping."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lmtool.config import TrainConfig, load_config
from lmtool.recipes.pretrain import run_pretrain
from lmtool.train import checkpoint
from lmtool.train.best import greater_is_better
from lmtool.train.data_order import OrderedView, RankBatches
from lmtool.train.engine import Trainer
from lmtool.train.metrics import flops_per_token
from lmtool.train.optim import build_optimizer, build_scheduler, load_optimizer_state
from tests.conftest import ROOT, assert_usage_error, run_torchrun
from tests.engine_fixtures import make_processed_dir, read_metrics, tiny_config
from tests.test_pretrain_cli import DROPOUT, _cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_processed_dir(tmp_path_factory.mktemp("data") / "processed")


class _Rows(list):
    def __getitem__(self, indices):
        return {"input_ids": [list.__getitem__(self, i) for i in indices]}


def _order(view: OrderedView, start: int, count: int) -> list[int]:
    return [view.locate(p)[0] for p in range(start, start + count)]


def _spread(order: list[int], lengths: list[int], batch: int) -> float:
    """Mean (longest - shortest) length within the global batches of `order`."""
    spans = [order[i : i + batch] for i in range(0, len(order) - batch + 1, batch)]
    return sum(max(lengths[i] for i in s) - min(lengths[i] for i in s) for s in spans) / len(spans)


# --------------------------------------------------------------------------- length-grouped order


def test_length_grouped_order_is_seeded_complete_per_epoch_and_batches_similar_lengths():
    n, batch = 1003, 8  # not a multiple of the batch: epochs start mid-step
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 129, (n,), generator=gen).tolist()
    rows = _Rows(range(n))
    view = OrderedView(rows, seed=5, lengths=lengths, group=50 * batch, batch=batch)
    epochs = [_order(view, e * n, n) for e in range(3)]
    assert all(sorted(epoch) == list(range(n)) for epoch in epochs)  # each example once per epoch
    assert epochs[0] != epochs[1] != epochs[2]
    # A pure function of (seed, epoch, lengths): a fresh view (a resumed run) agrees, in any order of calls.
    fresh = OrderedView(rows, seed=5, lengths=lengths, group=50 * batch, batch=batch)
    assert _order(fresh, 2 * n, n) == epochs[2] and _order(fresh, 0, n) == epochs[0]
    assert _order(OrderedView(rows, seed=6, lengths=lengths, group=400, batch=batch), 0, n) != epochs[0]

    # The global batches (positions aligned to steps, across epoch boundaries too) hold similar lengths.
    steps = [view.locate(p)[0] for p in range(0, 3 * n - 3 * n % batch)]
    random_order = _order(OrderedView(rows, seed=5), 0, 3 * n)[: len(steps)]
    assert _spread(steps, lengths, batch) < 0.1 * _spread(random_order, lengths, batch)
    # ... but their order is shuffled: the batch means do not fall steadily through a megabatch.
    means = [sum(lengths[i] for i in steps[s : s + batch]) / batch for s in range(8, 400, batch)]
    assert means != sorted(means, reverse=True)

    # Two ranks with micro-batch b see together what one process with 2b sees.
    one = iter(RankBatches(start=24, global_batch=8, micro_batch=8, world_size=1, rank=0))
    two = [iter(RankBatches(start=24, global_batch=8, micro_batch=4, world_size=2, rank=r)) for r in (0, 1)]
    for _ in range(300):
        positions = next(one)
        assert positions == next(two[0]) + next(two[1])
        assert [view.locate(p) for p in positions] == [fresh.locate(p) for p in positions]


# --------------------------------------------------------------------------- optimizer


def test_lr_scales_per_parameter_survive_the_schedule_and_resume_and_frozen_parameters_are_left_out():
    def model():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 1))
        net[0].requires_grad_(False)
        return net

    cfg = TrainConfig(lr=1e-2, warmup_steps=3, max_steps=10)
    scale = {"1": 1.0, "2": 0.5}  # parameter names: "1.weight", "2.bias", ...

    def make(net, done=0):
        opt = build_optimizer(net, cfg, torch.device("cpu"), lambda name: scale[name.split(".")[0]])
        return opt, build_scheduler(opt, cfg, 10, 3, done_steps=done)

    def steps(net, opt, sched, count):
        lrs = []
        for _ in range(count):
            lrs.append({g["lr_scale"]: g["lr"] for g in opt.param_groups})
            net(torch.ones(2, 4)).sum().backward()
            opt.step()
            opt.zero_grad()
            sched.step()
        return lrs

    net = model()
    frozen = net[0].weight.clone()
    opt, sched = make(net)
    assert not any(p is net[0].weight or p is net[0].bias for g in opt.param_groups for p in g["params"])
    lrs = steps(net, opt, sched, 4)
    saved = opt.state_dict()
    lrs += steps(net, opt, sched, 6)
    assert all(lr[0.5] == pytest.approx(0.5 * lr[1.0]) for lr in lrs) and lrs[3][1.0] == pytest.approx(1e-2)
    assert torch.equal(net[0].weight, frozen)

    resumed = model()
    opt, _ = make(resumed)
    load_optimizer_state(opt, saved)
    opt, sched = opt, build_scheduler(opt, cfg, 10, 3, done_steps=4)
    assert steps(resumed, opt, sched, 6) == lrs[4:]


def test_greater_is_better_defaults_by_metric_name():
    assert [greater_is_better(m, None) for m in ("loss", "perplexity", "mse", "eval_loss")] == [False] * 4
    assert [greater_is_better(m, None) for m in ("accuracy", "f1", "pearson")] == [True] * 3
    assert greater_is_better("loss", True) and not greater_is_better("f1", False)


# --------------------------------------------------------------------------- the engine in-process


def _inject(monkeypatch, **extra) -> list[Trainer]:
    """Have the pretrain recipe build its Trainer with `extra` keyword arguments (as the finetune recipe does;
    the launcher passes the recipe's options, None for pretraining: `extra` replaces them)."""
    real = Trainer.__init__
    made = []

    def init(self, **kwargs):
        real(self, **{**kwargs, **extra})
        made.append(self)

    monkeypatch.setattr(Trainer, "__init__", init)
    return made


def _scripted_evals(monkeypatch, metrics: list[dict]) -> None:
    """Each evaluation reports the next of `metrics` on top of the task's own."""
    import lmtool.tasks

    scripted = iter(metrics)
    real_make_task = lmtool.tasks.make_task

    def make_task(*args, **kwargs):
        task = real_make_task(*args, **kwargs)
        real_evaluator = task.evaluator

        def evaluator():
            inner = real_evaluator()
            compute = inner.compute
            inner.compute = lambda: {**compute(), **next(scripted)}
            return inner

        task.evaluator = evaluator
        return task

    monkeypatch.setattr(lmtool.tasks, "make_task", make_task)


def _weights(path):
    return load_file(path / "model.safetensors")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _as_final(checkpoint_weights: dict, final) -> dict:
    """A checkpoint's weights as final/ holds them: the embedding rows cut to the tokenizer's size."""
    size = json.loads((final / "config.json").read_text())["vocab_size"]
    return {k: v[:size] if k == "transformer.wte.weight" else v for k, v in checkpoint_weights.items()}


def test_patience_stops_early_and_final_best_holds_the_best_weights_and_a_rerun_trains_no_further(
    tmp_path, data, monkeypatch, capsys
):
    from transformers import AutoModelForCausalLM

    accuracy = [0.5, 0.7, 0.7, 0.6, 0.9]  # evals at steps 2, 4, 6, 8: no better after step 4
    _scripted_evals(monkeypatch, [{"accuracy": a, "per_class": {"a": {"f1": a}}} for a in accuracy])
    settings = {"max_steps": 20, "eval_every": 2, "keep_last": 1, "metric_for_best": "accuracy"}
    config = load_config(tiny_config(tmp_path, data, patience=2, final_model="best", **settings))
    final = run_pretrain(config)

    run = tmp_path / "run"
    assert max(read_metrics(run)) == 8 and sorted(read_metrics(run, "eval")) == [2, 4, 6, 8]
    assert (
        "early stop at step 8: no better accuracy in 2 evaluations (best at step 4)"
        in capsys.readouterr().err
    )
    evals = read_metrics(run, "eval")
    assert evals[8]["per_class"] == {"a": {"f1": 0.6}}  # nested metrics reach metrics.jsonl as they are
    root = run / checkpoint.CHECKPOINTS
    assert sorted(p.name for p in root.iterdir()) == ["step-00000004", "step-00000008"]
    assert _same(_weights(final), _as_final(_weights(root / "step-00000004"), final))
    assert not _same(_weights(final), _as_final(_weights(root / "step-00000008"), final))
    assert sorted(p.name for p in final.iterdir()) == sorted(
        p.name
        for p in (root / "step-00000004").iterdir()
        if p.name not in (checkpoint.STATE_FILE, checkpoint.MANIFEST, "lmtool_config.yaml")
    )
    AutoModelForCausalLM.from_pretrained(final)  # plain transformers

    # The same command again resumes at step 8 and, patience spent, trains no further.
    assert run_pretrain(config) == final
    assert max(read_metrics(run)) == 8
    assert _same(_weights(final), _as_final(_weights(root / "step-00000004"), final))


def test_a_metric_for_best_the_evaluation_lacks_exits_2_listing_the_metrics(tmp_path, data, capsys):
    config = str(tiny_config(tmp_path, data, max_steps=4, eval_every=2))
    result = _cli(capsys, "pretrain", config, "--set", "train.metric_for_best=accuracy")
    assert_usage_error(result, "train.metric_for_best", "accuracy", "available: loss, perplexity, tokens")
    assert not (tmp_path / "run" / "final").exists()


def test_sequence_length_sets_flops_tokens_per_step_and_the_loss_divisor(tmp_path, data, monkeypatch):
    made = _inject(monkeypatch, sequence_length=64)
    run_pretrain(load_config(tiny_config(tmp_path, data, max_steps=1)))
    (trainer,) = made
    assert (
        trainer.flops_per_token
        == flops_per_token(trainer.raw_model, 64)
        != flops_per_token(trainer.raw_model, 16)
    )
    assert trainer.plan.tokens_per_step == 4 * 64 and trainer.loss_divisor == 4 * 64


def test_frozen_parameters_stay_bitwise_unchanged_and_scaled_groups_train(tmp_path, data, monkeypatch):
    import lmtool.models

    real_build = lmtool.models.build_model
    initial = {}

    def build_model(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.transformer.h[0].requires_grad_(False)
        initial.update({k: v.clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(lmtool.models, "build_model", build_model)
    made = _inject(monkeypatch, lr_scale=lambda name: 1.0 if ".h.1." in name else 0.5)
    final = run_pretrain(load_config(tiny_config(tmp_path, data, max_steps=5)))
    after = _weights(final)
    frozen = [k for k in initial if k.startswith("transformer.h.0.") and k in after]
    assert frozen and all(torch.equal(after[k], initial[k]) for k in frozen)
    assert not torch.equal(
        after["transformer.h.1.mlp.c_fc.weight"], initial["transformer.h.1.mlp.c_fc.weight"]
    )
    groups = made[0].optimizer.param_groups
    # embeddings and ln_f at 0.5 (no matmul weight: h.0 is frozen), then decay and no-decay at 1.0
    assert [g["lr_scale"] for g in groups] == [0.5, 1.0, 1.0]
    assert all(g["lr"] == g["initial_lr"] * made[0].scheduler.lr_lambdas[0](5) for g in groups)
    # The logged lr is the schedule's (train.lr x warmup / decay), whatever the first group's scale.
    schedule = made[0].scheduler.lr_lambdas[0]
    logged = read_metrics(tmp_path / "run")
    assert all(logged[s]["lr"] == pytest.approx(3e-3 * schedule(s - 1)) for s in range(1, 6))


def _lengths(data) -> list[int]:
    """Made-up lengths per training block: the engine only orders by them."""
    n = len(datasets.load_from_disk(str(data / "train")))
    return [1 + (i * 7919) % 61 for i in range(n)]


def test_a_run_with_length_grouping_resumes_bitwise_and_differs_from_plain_order(tmp_path, data, monkeypatch):
    settings = {"max_steps": 60, "save_every": 10, "eval_every": 20}  # ~24 steps per epoch: 2 boundaries
    lengths = _lengths(data)
    _inject(monkeypatch, order_lengths=lengths, length_group=16)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    run_pretrain(load_config(tiny_config(whole, data, model_overrides=DROPOUT, **settings)))

    real_log = Trainer._log_train

    def killed_at_37(self, record):
        real_log(self, record)
        if record["step"] == 37:
            raise KeyboardInterrupt

    config = load_config(tiny_config(cut, data, model_overrides=DROPOUT, **settings))
    monkeypatch.setattr(Trainer, "_log_train", killed_at_37)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(config)
    monkeypatch.setattr(Trainer, "_log_train", real_log)
    assert checkpoint.latest_checkpoint(cut / "run").name == "step-00000030"
    run_pretrain(config)

    for kind in ("train", "eval"):
        a, b = read_metrics(whole / "run", kind), read_metrics(cut / "run", kind)
        assert sorted(a) == sorted(b) and all(a[s]["loss"] == b[s]["loss"] for s in a), kind
    assert _same(_weights(whole / "run" / "final"), _weights(cut / "run" / "final"))

    monkeypatch.undo()
    plain = tmp_path / "plain"
    plain.mkdir()
    run_pretrain(load_config(tiny_config(plain, data, model_overrides=DROPOUT, **settings)))
    assert read_metrics(plain / "run")[1]["loss"] != read_metrics(whole / "run")[1]["loss"]


@pytest.mark.slow
def test_two_process_ddp_with_length_grouping_matches_one_process(tmp_path, data, monkeypatch):
    """torchrun x2 with batch 2 == one process with batch 4, both ordering by length, over an epoch boundary."""
    settings = {"max_steps": 30, "schedule": "constant", "warmup_steps": 0}
    lengths = _lengths(data)
    (tmp_path / "lengths.json").write_text(json.dumps(lengths))
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir(), ddp.mkdir()
    _inject(monkeypatch, order_lengths=lengths, length_group=16)
    run_pretrain(load_config(tiny_config(single, data, batch_size=4, **settings)))

    ddp_config = tiny_config(ddp, data, batch_size=2, **settings)
    script = ROOT / "tests" / "length_grouped_pretrain.py"
    proc = run_torchrun(str(script), str(ddp_config), str(tmp_path / "lengths.json"), "16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 2 x cpu" in proc.stderr
    one, two = read_metrics(single / "run"), read_metrics(ddp / "run")
    assert sorted(two) == sorted(one) == list(range(1, 31))
    for step in one:
        assert two[step]["loss"] == pytest.approx(one[step]["loss"], abs=1e-5), step
