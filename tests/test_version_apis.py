"""The calls whose spelling or existence depends on the installed torch / transformers version, each on a
tiny model: activation checkpointing, fused AdamW on CPU, torch.compile of the training step, the gradient
norm without clipping; and pyproject.toml's ranges, each bounded on both ends. `make test-min` runs this
file (with the FSDP2, LoRA, datasets and preprocessing tests) on the lowest versions pyproject.toml allows,
so a floor below an API's first release fails here rather than on a user's GPU."""

from __future__ import annotations

import copy
import functools
import math
import subprocess
import sys
import warnings

import pytest
import tomllib
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lmtool.compat import enable_activation_checkpointing
from lmtool.config import TrainConfig
from lmtool.train.optim import build_optimizer
from tests.conftest import ROOT
from tests.engine_fixtures import make_processed_dir, read_metrics, tiny_config
from tests.eval_fixtures import run_inproc


def _tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=32,
        n_positions=16,
        vocab_size=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def _saved_tensors_and_grads(model: GPT2LMHeadModel, ids: torch.Tensor) -> tuple[int, list[torch.Tensor]]:
    """How many tensors autograd keeps for the backward (checkpointed blocks keep only their inputs), and
    the gradients."""
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += 1
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return saved, [p.grad for p in model.parameters()]


@pytest.fixture(scope="module")
def clm_data(tmp_path_factory):
    return make_processed_dir(tmp_path_factory.mktemp("clm") / "processed")


def test_activation_checkpointing_keeps_fewer_tensors_same_gradients_and_warns_nothing():
    model = _tiny_gpt2()
    reference = copy.deepcopy(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enable_activation_checkpointing(model)
    assert [
        str(w.message) for w in caught if issubclass(w.category, FutureWarning | DeprecationWarning)
    ] == []
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    saved, grads = _saved_tensors_and_grads(model, ids)
    saved_reference, grads_reference = _saved_tensors_and_grads(reference, ids)
    assert saved < saved_reference / 2
    for grad, expected in zip(grads, grads_reference, strict=True):
        torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)  # fp32: recomputation is exact


def test_fused_adamw_on_cpu_steps_as_the_unfused_one():
    model = _tiny_gpt2()
    reference = copy.deepcopy(model)
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1)
    optimizer = build_optimizer(model, cfg, torch.device("cpu"))
    assert optimizer.defaults["fused"] is True
    unfused = build_optimizer(reference, cfg, torch.device("meta"))  # not cuda/cpu: the foreach path
    assert not unfused.defaults["fused"]
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    for net, opt in ((model, optimizer), (reference, unfused)):
        for _ in range(2):
            net(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
    # Both compute Adam in fp32 in another order; where a gradient is ~0, m / (sqrt(v) + eps) amplifies
    # that: within 1% of one step (lr 1e-2).
    for param, expected in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(param, expected, rtol=1e-4, atol=1e-4)


def test_a_compiled_training_run_and_an_unclipped_one_train(tmp_path, clm_data, monkeypatch):
    """train.compile through the engine (dynamo and AOT autograd tracing the model of the installed
    transformers; the aot_eager backend spares the C++ build of inductor on CPU), then grad_clip 0 (the
    gradient norm is then measured without clipping)."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    for name, settings in (("compiled", {"compile": True}), ("unclipped", {"grad_clip": 0.0})):
        (tmp_path / name).mkdir()
        config = tiny_config(tmp_path / name, clm_data, max_steps=2, **settings)
        result = run_inproc("pretrain", str(config))
        assert result.returncode == 0, result.stderr[-2000:]
        metrics = read_metrics(tmp_path / name / "run")
        assert sorted(metrics) == [1, 2]
        assert all(math.isfinite(m["grad_norm"]) for m in metrics.values())


def test_every_dependency_is_bounded_on_both_ends_and_test_min_pins_each_floor():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["lora"]]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "min_versions.py"), "--extras", "lora"],
        capture_output=True,
        text=True,
        check=True,
    )
    pins = proc.stdout.split()
    assert len(pins) == len(requirements)
    for requirement, pin in zip(requirements, pins, strict=True):
        name, floor = pin.split("==")
        assert requirement.startswith(name) and f">={floor}," in requirement and ",<" in requirement, (
            requirement
        )
