"""Unit tests of the training engine's parts: schedule, parameter groups, data order, checkpoints, MFU."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from lmtool.config import TrainConfig
from lmtool.errors import LmtoolError
from lmtool.runtime import cpu_has_bf16, resolve_precision
from lmtool.train import checkpoint
from lmtool.train.data_order import OrderedView, RankBatches
from lmtool.train.metrics import flops_per_token, matmul_parameters, truncate_metrics
from lmtool.train.optim import WarmupDecay, build_optimizer, param_groups
from lmtool.train.plan import COMPILE_MIN_STEPS, Plan, should_compile


def test_schedule_warms_up_then_decays_to_the_floor():
    cosine = WarmupDecay(warmup_steps=10, total_steps=110, schedule="cosine", floor=0.1)
    warm = [cosine(s) for s in range(10)]
    assert warm == sorted(warm) and warm[0] < 0.2 and warm[-1] < 1.0
    assert cosine(10) == pytest.approx(1.0)
    assert cosine(60) == pytest.approx(0.55)  # half way: floor + (1 - floor) / 2
    assert cosine(110) == pytest.approx(0.1) and cosine(500) == pytest.approx(0.1)
    linear = WarmupDecay(0, 100, "linear", 0.0)
    assert linear(50) == pytest.approx(0.5) and linear(100) == 0.0
    assert WarmupDecay(5, 100, "constant", 0.1)(80) == 1.0


def test_no_weight_decay_on_biases_norms_and_embeddings():
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.LayerNorm(8))
    decay, no_decay = param_groups(model, 0.1)
    assert [p.shape for p in decay["params"]] == [torch.Size([8, 8])]
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 4  # embedding, linear bias, norm weight and bias
    optimizer = build_optimizer(model, TrainConfig(), torch.device("cpu"))
    assert optimizer.defaults["betas"] == (0.9, 0.95) and optimizer.defaults["fused"]


def test_two_ranks_with_batch_b_see_what_one_process_with_2b_sees():
    single = iter(RankBatches(start=8, global_batch=8, micro_batch=4, world_size=1, rank=0))
    rank0 = iter(RankBatches(start=8, global_batch=8, micro_batch=2, world_size=2, rank=0))
    rank1 = iter(RankBatches(start=8, global_batch=8, micro_batch=2, world_size=2, rank=1))
    for _ in range(6):
        assert next(single) == next(rank0) + next(rank1)


def test_data_order_is_a_seeded_permutation_per_epoch():
    data = [{"input_ids": [i]} for i in range(10)]

    class Rows(list):
        def __getitem__(self, indices):
            return {"input_ids": [list.__getitem__(self, i)["input_ids"] for i in indices]}

    view = OrderedView(Rows(data), seed=3)
    epoch0 = [view.locate(p) for p in range(10)]
    epoch1 = [view.locate(p) for p in range(10, 20)]
    assert sorted(i for i, _ in epoch0) == list(range(10)) == sorted(i for i, _ in epoch1)
    assert [i for i, _ in epoch0] != [i for i, _ in epoch1]
    assert [sid for _, sid in epoch1] == [10 + i for i, _ in epoch1]  # sample_id = epoch * n + index
    # A fresh view (a resumed run) agrees.
    assert OrderedView(Rows(data), seed=3).locate(13) == view.locate(13)
    rows = view.__getitems__([13, 2])
    assert rows[0] == {"input_ids": [view.locate(13)[0]], "sample_id": view.locate(13)[1]}


def _fake_checkpoint(run_dir, step, payload=b"x" * 100):
    path = run_dir / "checkpoints" / checkpoint.checkpoint_name(step)
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(payload)
    (path / "trainer_state.pt").write_bytes(b"s")
    files = {p.name: p.stat().st_size for p in path.iterdir()}
    (path / checkpoint.MANIFEST).write_text(json.dumps({"step": step, "files": files}))
    return path


def test_latest_checkpoint_skips_temporary_and_truncated_directories(tmp_path):
    good = _fake_checkpoint(tmp_path, 100)
    truncated = _fake_checkpoint(tmp_path, 200)
    (truncated / "model.safetensors").write_bytes(b"x" * 10)  # cut short mid-write
    (tmp_path / "checkpoints" / ".tmp-step-00000300-123").mkdir()
    assert checkpoint.latest_checkpoint(tmp_path) == good
    (good / checkpoint.MANIFEST).unlink()
    assert checkpoint.latest_checkpoint(tmp_path) is None


def test_retention_keeps_the_newest_and_the_best(tmp_path):
    for step in (10, 20, 30, 40):
        _fake_checkpoint(tmp_path, step)
    checkpoint.prune_checkpoints(tmp_path, keep_last=2, best_step=10)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-00000010",
        "step-00000030",
        "step-00000040",
    ]


def test_an_existing_run_directory_is_resumed_refused_or_replaced(tmp_path):
    run = tmp_path / "run"
    assert checkpoint.resolve_resume(run, "never", overwrite=False) == (None, False)
    ckpt = _fake_checkpoint(run, 5)
    assert checkpoint.resolve_resume(run, "auto", overwrite=False) == (ckpt, False)
    with pytest.raises(LmtoolError, match="--overwrite"):
        checkpoint.resolve_resume(run, "never", overwrite=False)
    assert checkpoint.resolve_resume(run, "never", overwrite=True) == (None, True)
    assert checkpoint.resolve_resume(run, str(ckpt), overwrite=False) == (ckpt, False)
    with pytest.raises(LmtoolError, match="not found"):
        checkpoint.resolve_resume(run, str(tmp_path / "nope"), overwrite=False)


def test_rng_states_round_trip_through_a_weights_only_load(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save({"rng": checkpoint.rng_state()}, tmp_path / "s.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    checkpoint.set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_flops_per_token_is_6n_plus_the_attention_term():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=128, n_positions=32))
    n = matmul_parameters(model)
    everything = sum(p.numel() for p in model.parameters())
    assert n == everything - 32 * 64  # the position table is only looked up; the tied token table is the head
    assert flops_per_token(model, 32) == 6 * n + 12 * 2 * 4 * 16 * 32


def test_metrics_of_steps_after_a_resume_point_are_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        "".join(json.dumps({"type": "train", "step": s}) + "\n" for s in range(1, 6)) + '{"type": "tr'
    )
    truncate_metrics(path, 3)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_precision_auto_on_cpu_follows_the_cpu_flags():
    chosen = resolve_precision("auto", torch.device("cpu"))
    assert chosen.name == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("bf16", torch.device("cpu")).autocast_dtype == torch.bfloat16
    with pytest.raises(LmtoolError, match="fp16 needs a GPU"):
        resolve_precision("fp16", torch.device("cpu"))


def test_compile_auto_is_for_long_gpu_runs_only():
    model = SimpleNamespace(config=SimpleNamespace(num_attention_heads=4))
    long_run = Plan(
        micro_batch=8, accumulation=1, global_batch=8, total_steps=COMPILE_MIN_STEPS, tokens_per_step=1
    )
    assert should_compile("auto", long_run, model, torch.device("cuda"))
    assert not should_compile("auto", long_run, model, torch.device("cpu"))  # no gain on CPU
    assert should_compile(True, long_run, model, torch.device("cpu"))
    short_run = Plan(8, 1, 8, COMPILE_MIN_STEPS - 1, 1)
    assert not should_compile("auto", short_run, model, torch.device("cuda"))


def test_cpu_peak_remeasured_upwards_only(monkeypatch):
    """A start-up peak taken on a busy machine is too low (MFU > 100%); a new measurement may only raise it."""
    from lmtool.train import metrics

    monkeypatch.setitem(metrics._CPU_PEAK, torch.float32, 1.0)
    raised = metrics.remeasure_cpu_peak(torch.float32)
    assert raised > 1.0 and metrics.peak_flops(torch.device("cpu"), torch.float32) == raised
    monkeypatch.setitem(metrics._CPU_PEAK, torch.float32, 1e30)
    assert metrics.remeasure_cpu_peak(torch.float32) == 1e30


def test_the_saver_saves_and_restores_what_it_is_handed_without_a_trainer(tmp_path):
    """saving.py takes its pieces explicitly (it used to read ~20 attributes of the Trainer)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmtool.config import Config
    from lmtool.train.deadline import Deadline
    from lmtool.train.distributed import DistEnv
    from lmtool.train.model_files import ModelFiles
    from lmtool.train.optim import build_scheduler
    from lmtool.train.progress import Progress
    from lmtool.train.saving import RunFiles, Saver, Trained
    from tests.engine_fixtures import _tokenizer

    config = Config()
    tokenizer = _tokenizer("clm")

    def saver_for(seed: int) -> tuple[Saver, nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=41))
        optimizer = build_optimizer(model, config.train, torch.device("cpu"))
        trained = Trained(
            model,
            optimizer,
            torch.amp.GradScaler("cpu", enabled=False),
            lambda done: build_scheduler(optimizer, config.train, 10, 2, done_steps=done),
            global_batch=8,
        )
        files = RunFiles(tmp_path / "run", config, tokenizer, ModelFiles(), keep_best=False)
        saver = Saver(
            trained, files, DistEnv(), torch.device("cpu"), sharded=False, deadline=Deadline(None, 0.0)
        )
        return saver, model, optimizer

    saver, model, optimizer = saver_for(0)
    model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    optimizer.step()
    progress = Progress(step=3, samples_seen=24)
    saver.save(progress, build_scheduler(optimizer, config.train, 10, 2, done_steps=3))

    fresh, other, _ = saver_for(1)
    restored, scheduler = fresh.restore(checkpoint.latest_checkpoint(tmp_path / "run"))
    assert (restored.step, restored.samples_seen) == (3, 24) and scheduler.last_epoch == 3
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True)
    )
