"""FSDP2 (train.distributed.strategy fsdp) on 2 gloo ranks: the same steps as DDP, sharded checkpoints that
resume on 2 ranks and on 1 process, a rank killed mid-save never leaves a partial latest checkpoint, async
saves equal sync ones, and final/ is a plain transformers directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from lmtool.config import load_config
from lmtool.recipes.pretrain import run_pretrain
from lmtool.train import checkpoint
from tests.conftest import ROOT, TORCHRUN, Result, assert_usage_error, run_cli, run_torchrun
from tests.engine_fixtures import make_processed_dir, read_metrics, tiny_config
from tests.eval_fixtures import run_inproc

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# Accumulation (global batch 8 = 2 ranks x 2 x 2 micro-steps) and clipping that bites (norms are ~1.5).
STEPS = {"batch_size": 2, "global_batch_size": 8, "grad_clip": 0.5, "max_steps": 6, "eval_every": 3}
CONSTANT = {"schedule": "constant", "warmup_steps": 0}  # runs cut short keep the lr of the whole run


@pytest.fixture(scope="module")
def clm_data(tmp_path_factory):
    return make_processed_dir(tmp_path_factory.mktemp("clm") / "processed")


@pytest.fixture(scope="module")
def mlm_data(tmp_path_factory):
    return make_processed_dir(tmp_path_factory.mktemp("mlm") / "processed", objective="mlm")


def _torchrun(config: Path, *args: str, script: list[str] | None = None) -> Result:
    proc = run_torchrun(*(script or ["-m", "lmtool", "pretrain"]), str(config), *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _shards(path: Path) -> dict[str, object]:
    """A sharded checkpoint's model and optimizer state as one flat dict of whole tensors."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    target = path.parent / f"{path.name}.pt"
    dcp_to_torch_save(path / "sharded", target)
    state = torch.load(target, weights_only=True)
    target.unlink()
    flat: dict[str, object] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}", inner)
        elif isinstance(value, list):
            for i, inner in enumerate(value):
                walk(f"{prefix}.{i}", inner)
        else:
            flat[prefix] = value

    walk("", state)
    return flat


@pytest.mark.slow
@pytest.mark.parametrize(("objective", "arch"), [("clm", "gpt2"), ("mlm", "bert")])
def test_fsdp_steps_equal_ddp_steps_and_final_loads_in_plain_transformers(
    tmp_path, clm_data, mlm_data, objective, arch
):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    data = clm_data if objective == "clm" else mlm_data
    runs = {}
    for strategy in ("ddp", "fsdp"):
        (tmp_path / strategy).mkdir()
        # final/ = the best eval's weights, and the "best" is the worse loss: step 3's, not the last ones.
        config = tiny_config(tmp_path / strategy, data, objective=objective, arch=arch, **STEPS,
                             final_model="best", greater_is_better=True,
                             distributed={"strategy": strategy})  # fmt: skip
        proc = _torchrun(config)
        assert proc.stdout.strip() == str(tmp_path / strategy / "run" / "final")
        runs[strategy] = tmp_path / strategy / "run"
    ddp, fsdp = read_metrics(runs["ddp"]), read_metrics(runs["fsdp"])
    assert sorted(fsdp) == sorted(ddp) == list(range(1, 7))
    assert max(r["grad_norm"] for r in ddp.values()) > STEPS["grad_clip"]
    for step in ddp:
        assert fsdp[step]["loss"] == pytest.approx(ddp[step]["loss"], abs=1e-5), step
        assert fsdp[step]["grad_norm"] == pytest.approx(ddp[step]["grad_norm"], abs=1e-5), step
    ddp_eval, fsdp_eval = read_metrics(runs["ddp"], "eval"), read_metrics(runs["fsdp"], "eval")
    assert sorted(fsdp_eval) == sorted(ddp_eval) == [3, 6]
    for step in ddp_eval:
        assert fsdp_eval[step]["loss"] == pytest.approx(ddp_eval[step]["loss"], abs=1e-5)

    # final/ is consolidated: plain transformers loads it, with the weights of the best sharded checkpoint.
    saved = runs["fsdp"] / "checkpoints"
    assert sorted(p.name for p in saved.iterdir()) == ["step-00000003", "step-00000006"]
    assert (saved / "step-00000006" / "sharded" / ".metadata").is_file()
    auto = AutoModelForCausalLM if objective == "clm" else AutoModelForMaskedLM
    model = auto.from_pretrained(runs["fsdp"] / "final").eval()
    reference = auto.from_pretrained(runs["ddp"] / "final").eval()
    best, last = _shards(saved / "step-00000003"), _shards(saved / "step-00000006")
    weights = {name: tensor for name, tensor in model.state_dict().items() if f".model.{name}" in best}
    assert len(weights) >= len(model.state_dict()) - 2  # all but buffers (position ids, ...)
    vocab = json.loads((data / "manifest.json").read_text())["vocab_size"]
    assert model.config.vocab_size == model.get_input_embeddings().weight.shape[0] == vocab  # padding cut
    for name, tensor in weights.items():  # the vocabulary rows of the checkpoint past the tokenizer's are cut
        assert torch.equal(tensor, best[f".model.{name}"][: len(tensor)]), name
    assert not all(
        torch.equal(tensor, last[f".model.{name}"][: len(tensor)]) for name, tensor in weights.items()
    )
    ids = torch.arange(5, 21).reshape(2, 8)
    with torch.no_grad():
        logits, expected = model(input_ids=ids).logits, reference(input_ids=ids).logits
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
    if arch == "gpt2":
        assert model.lm_head.weight is model.transformer.wte.weight


@pytest.mark.slow
def test_bf16_fsdp_follows_ddp_autocast_and_keeps_fp32_weights(tmp_path, clm_data):
    """bf16 under fsdp runs (the policy: test_bf16_is_fsdps_mixed_precision_policy_with_fp32_reduction) with
    the weights kept in fp32, and its steps agree with DDP's under autocast to bf16 rounding."""
    from safetensors.torch import load_file

    settings = {**STEPS, "max_steps": 4, "eval_every": 0, "precision": "bf16"}
    runs = {}
    for strategy in ("ddp", "fsdp"):
        (tmp_path / strategy).mkdir()
        _torchrun(tiny_config(tmp_path / strategy, clm_data, **settings, distributed={"strategy": strategy}))
        runs[strategy] = read_metrics(tmp_path / strategy / "run")
    assert sorted(runs["fsdp"]) == sorted(runs["ddp"]) == [1, 2, 3, 4]
    for step, ddp in runs["ddp"].items():
        assert runs["fsdp"][step]["loss"] == pytest.approx(ddp["loss"], abs=2e-3), step
        assert runs["fsdp"][step]["grad_norm"] == pytest.approx(ddp["grad_norm"], rel=1e-2), step
    weights = load_file(tmp_path / "fsdp" / "run" / "final" / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}


@pytest.mark.slow
def test_checkpoints_resume_on_two_ranks_on_one_and_across_strategies_and_async_saves_equal_sync_ones(
    tmp_path, clm_data
):
    """Uninterrupted fsdp (async saves) vs cut at step 4 (sync saves) and resumed on 2 ranks, on 1 process, and
    on 2 ranks under ddp; and a ddp run cut at step 4 resumed under fsdp. Same global batch: the same per-step
    losses within 1e-5 (fp32 sums over another split) and samples."""
    settings = {**STEPS, **CONSTANT, "max_steps": 8, "save_every": 2, "eval_every": 0}
    runs = {name: tmp_path / name for name in ("whole", "cut", "from_ddp")}
    for path in runs.values():
        path.mkdir()
    fsdp, ddp = {"strategy": "fsdp"}, {"strategy": "ddp"}
    _torchrun(tiny_config(runs["whole"], clm_data, **settings, distributed=fsdp, async_checkpoint=True))
    _torchrun(tiny_config(runs["cut"], clm_data, **{**settings, "max_steps": 4}, distributed=fsdp))
    _torchrun(tiny_config(runs["from_ddp"], clm_data, **{**settings, "max_steps": 4}, distributed=ddp))

    # The async checkpoint of step 4 holds what the sync one does.
    saved_async, saved_sync = (
        _shards(runs[n] / "run" / "checkpoints" / "step-00000004") for n in ("whole", "cut")
    )
    assert saved_async.keys() == saved_sync.keys() and any("optimizer.state" in k for k in saved_sync)
    for key, value in saved_sync.items():
        same = (
            torch.equal(value, saved_async[key])
            if isinstance(value, torch.Tensor)
            else value == saved_async[key]
        )
        assert same, key
    assert (
        checkpoint.load_trainer_state(runs["whole"] / "run" / "checkpoints" / "step-00000004")["progress"]
        == checkpoint.load_trainer_state(runs["cut"] / "run" / "checkpoints" / "step-00000004")["progress"]
    )

    for name, strategy in (("two", fsdp), ("to_ddp", ddp)):
        runs[name] = tmp_path / name
        shutil.copytree(runs["cut"], runs[name], symlinks=True)
        proc = _torchrun(tiny_config(runs[name], clm_data, name="more", **settings, distributed=strategy))
        assert "resuming from" in proc.stderr and "step 4" in proc.stderr
    _torchrun(tiny_config(runs["from_ddp"], clm_data, name="more", **settings, distributed=fsdp))
    run_pretrain(load_config(tiny_config(runs["cut"], clm_data, name="more", **{**settings, "batch_size": 4},
                                         distributed=fsdp)))  # fmt: skip
    assert (runs["to_ddp"] / "run" / "checkpoints" / "step-00000008" / "model.safetensors").is_file()
    assert (runs["from_ddp"] / "run" / "checkpoints" / "step-00000008" / "sharded" / ".metadata").is_file()
    reference = read_metrics(runs["whole"] / "run")
    for name in ("two", "cut", "to_ddp", "from_ddp"):
        records = read_metrics(runs[name] / "run")
        assert sorted(records) == list(range(1, 9))
        for step in range(1, 9):
            assert records[step]["loss"] == pytest.approx(reference[step]["loss"], abs=1e-5), (name, step)
            assert records[step]["samples"] == reference[step]["samples"]


@pytest.mark.slow
def test_a_rank_killed_during_a_sharded_save_leaves_the_previous_checkpoint_as_the_latest(tmp_path, clm_data):
    config = tiny_config(
        tmp_path, clm_data, batch_size=2, max_steps=6, save_every=2, distributed={"strategy": "fsdp"}
    )
    pidfile = tmp_path / "rank1.pid"
    env = {**os.environ, **ONE_THREAD, "HF_HUB_OFFLINE": "1"}
    script = str(ROOT / "tests" / "fsdp_slow_save.py")
    with (tmp_path / "killed.log").open("w") as log:
        proc = subprocess.Popen([*TORCHRUN, script, str(config), "1", "4", str(pidfile)],
                                cwd=ROOT, env=env, stdout=log, stderr=log)  # fmt: skip
    deadline = time.monotonic() + 120
    while not pidfile.exists() or not pidfile.read_text():
        log = (tmp_path / "killed.log").read_text()
        assert proc.poll() is None and time.monotonic() < deadline, log[-3000:]
        time.sleep(0.2)
    os.kill(int(pidfile.read_text()), signal.SIGKILL)  # rank 1, while writing its shards of step 4
    assert proc.wait(timeout=120) != 0
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in root.glob(".tmp-step-00000004-*")]  # rank 0's part of the save is left behind
    assert checkpoint.latest_checkpoint(tmp_path / "run") == root / "step-00000002"

    result = run_cli("pretrain", str(config), "--set", "train.batch_size=4", env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stderr and "step 2" in result.stderr
    assert sorted(read_metrics(tmp_path / "run")) == list(range(1, 7))
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002", "step-00000004", "step-00000006"]


@pytest.mark.slow
def test_finetune_under_fsdp_runs_two_ranks_to_a_plain_final_model(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from tests.finetune_fixtures import finetune_config, keyword_rows, save_tiny_bert, write_jsonl

    model = save_tiny_bert(tmp_path / "bert")
    train = write_jsonl(tmp_path / "train.jsonl", keyword_rows(64, seed=0))
    val = write_jsonl(tmp_path / "val.jsonl", keyword_rows(16, seed=1))
    config = finetune_config(tmp_path, model, {"task": "classification", "max_length": 32}, train, val,
                             batch_size=4, epochs=1, distributed={"strategy": "fsdp"})  # fmt: skip
    proc = _torchrun(config, script=["-m", "lmtool", "finetune"])
    final = tmp_path / "run" / "final"
    assert proc.stdout.strip() == str(final)
    assert sorted(read_metrics(tmp_path / "run")) == list(range(1, 9))
    assert "accuracy" in read_metrics(tmp_path / "run", "eval")[8]
    assert (tmp_path / "run" / "checkpoints" / "step-00000008" / "sharded" / ".metadata").is_file()
    classifier = AutoModelForSequenceClassification.from_pretrained(final)
    assert json.loads((final / "config.json").read_text())["architectures"] == [type(classifier).__name__]


def test_async_checkpoint_without_fsdp_is_refused(tmp_path, clm_data):
    config = tiny_config(tmp_path, clm_data, max_steps=2, async_checkpoint=True)
    assert_usage_error(run_inproc("pretrain", str(config)), "train.async_checkpoint", "fsdp")


def test_one_process_fsdp_writes_sharded_checkpoints_that_inference_refuses_pointing_to_final(
    tmp_path, clm_data
):
    config = tiny_config(tmp_path, clm_data, max_steps=2, save_every=1, distributed={"strategy": "fsdp"})
    run_pretrain(load_config(config))
    saved = tmp_path / "run" / "checkpoints" / "step-00000002"
    assert (saved / "sharded" / ".metadata").is_file() and checkpoint.verify(saved) is None
    assert "sharded/.metadata" in json.loads((saved / checkpoint.MANIFEST).read_text())["files"]
    for command in (["generate", "--model", str(saved)], ["predict", "--model", str(saved)]):
        assert_usage_error(run_inproc(*command, input="w1 w2\n"), "sharded", "final/")


def test_shard_units_are_the_blocks_except_those_holding_a_tied_weight_and_fp16_is_refused():
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    from lmtool.config import ConfigError, DistributedConfig
    from lmtool.runtime import Precision
    from lmtool.train.fsdp import FSDPStrategy, shard_units

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=32))
    assert [type(m).__name__ for m in shard_units(gpt2)] == ["GPT2Block", "GPT2Block"]
    bert = BertForMaskedLM(BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=32,
                                      intermediate_size=64, vocab_size=64))  # fmt: skip
    assert "BertEmbeddings" in bert._no_split_modules  # tied to the MLM decoder: left to the root
    assert [type(m).__name__ for m in shard_units(bert)] == ["BertLayer", "BertLayer"]
    with pytest.raises(ConfigError, match="train.precision"):
        FSDPStrategy(DistributedConfig(strategy="fsdp"), Precision("fp16", "cuda"), 2)


def test_bf16_is_fsdps_mixed_precision_policy_with_fp32_reduction(monkeypatch):
    """bf16 shards for compute, gradients reduced in train.distributed.reduce_dtype, and no autocast on top;
    fp32 runs get no cast at all."""
    import torch.distributed.device_mesh
    import torch.distributed.fsdp

    from lmtool.config import DistributedConfig
    from lmtool.runtime import Precision
    from lmtool.train.fsdp import FSDPStrategy

    policies = []
    monkeypatch.setattr(torch.distributed.device_mesh, "init_device_mesh", lambda *args: "mesh")
    monkeypatch.setattr(
        torch.distributed.fsdp, "fully_shard", lambda module, **kw: policies.append(kw["mp_policy"])
    )
    model = torch.nn.Linear(2, 2)
    for reduce_dtype, expected in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        strategy = FSDPStrategy(DistributedConfig(reduce_dtype=reduce_dtype), Precision("bf16", "cpu"), 2)
        strategy.wrap(model, None, torch.device("cpu"))
        assert (policies[-1].param_dtype, policies[-1].reduce_dtype) == (torch.bfloat16, expected)
        assert not torch.is_autocast_enabled("cpu")
        with strategy.autocast():
            assert not torch.is_autocast_enabled("cpu")
    fp32 = FSDPStrategy(DistributedConfig(), Precision("fp32", "cpu"), 2)
    fp32.wrap(model, None, torch.device("cpu"))
    assert policies[-1].param_dtype is None and policies[-1].reduce_dtype is None


@pytest.mark.slow
def test_an_error_on_every_rank_completes_the_checkpoint_written_in_the_background(tmp_path, clm_data):
    """async_checkpoint: step 2's shards are written in the background when every rank fails at step 3 (exit
    2 alike): the orderly stop completes step 2's checkpoint, as a synchronous save would have left it."""
    config = tiny_config(tmp_path, clm_data, batch_size=2, max_steps=8, save_every=2, eval_every=0,
                         async_checkpoint=True, distributed={"strategy": "fsdp"})  # fmt: skip
    proc = run_torchrun("-m", "tests.rank_faults", "usage", "all", "3", "pretrain", str(config))
    assert proc.returncode != 0 and proc.stderr.count("error: injected usage error at step 3") == 2
    assert "exitcode  : 2" in proc.stderr and "exitcode  : 1" not in proc.stderr
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002"]  # no .tmp- left unfinished
    assert checkpoint.latest_checkpoint(tmp_path / "run") == root / "step-00000002"
    assert checkpoint.verify(root / "step-00000002") is None
