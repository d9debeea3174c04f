"""The training step on the CPU, checked for what makes it fast on a GPU (issue 20's CPU proofs):

- it equals a plain hand-written loop (the next-token cross-entropy over the tokenizer's vocabulary,
  AdamW, clip_grad_norm_):
  same loss, same gradients, same weights after a step (fp32; tolerances below);
- it reads nothing back from the device on a step that neither logs nor saves: every host read of a
  tensor (`.item()`, `.tolist()`, `float()`, `bool()`, `int()`) is counted, per step.
"""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

from lmtool.config import load_config
from lmtool.recipes.pretrain import run_pretrain
from lmtool.tasks.clm import CausalLMTask
from lmtool.train import engine
from lmtool.train.forward import TaskForward
from tests.engine_fixtures import _tokenizer, make_processed_dir, read_metrics, tiny_config

# Tensor methods that copy a value to the host: on a GPU each waits for all queued work.
HOST_READS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__bool__,
    torch.Tensor.__float__,
    torch.Tensor.__int__,
    torch.Tensor.__index__,
}


@pytest.fixture(scope="module")
def clm_data(tmp_path_factory):
    return make_processed_dir(tmp_path_factory.mktemp("clm"), objective="clm")


class HostReads(TorchFunctionMode):
    """Counts host reads of tensors by the step in progress (`trainer.state.step` when they happen), leaving
    out the DataLoader's own (collating Python lists on the host is not a device read)."""

    def __init__(self, trainer):
        super().__init__()
        self.trainer, self.by_step = trainer, {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS and not _inside_data_loader():
            step = self.trainer.state.step
            self.by_step[step] = self.by_step.get(step, 0) + 1
        return func(*args, **(kwargs or {}))


def _inside_data_loader() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if "torch/utils/data" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def test_a_step_that_does_not_log_reads_nothing_back_from_the_device(tmp_path, clm_data, monkeypatch):
    modes = []
    fit = engine.Trainer.fit

    def counted_fit(self):
        modes.append(HostReads(self))
        with modes[0]:
            return fit(self)

    monkeypatch.setattr(engine.Trainer, "fit", counted_fit)
    run_pretrain(load_config(tiny_config(tmp_path, clm_data, max_steps=8, log_every=4)))
    reads = modes[0].by_step
    # reads while state.step == k: the end of step k and the whole of step k + 1. Steps 4 and 8 log.
    assert reads.get(4, 0) > 0, reads  # the counter sees the log step's reads
    assert {k: reads.get(k, 0) for k in (1, 2, 5, 6)} == {1: 0, 2: 0, 5: 0, 6: 0}, reads


def _tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=32, vocab_size=41, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)  # fmt: skip
    return GPT2LMHeadModel(config).float()


def test_the_task_forward_gives_the_plain_loss_and_gradients():
    """TaskForward (what the strategies wrap and compile) = `model(input_ids=x, labels=x).loss`: loss to
    1e-6, every gradient to 1e-6 (fp32)."""
    plain, ours = _tiny_gpt2(), _tiny_gpt2()
    x = torch.randint(0, 41, (3, 16), generator=torch.Generator().manual_seed(1))
    reference = plain(input_ids=x, labels=x).loss
    reference.backward()
    task = CausalLMTask(_tokenizer("clm"))
    batch = task.collate([{"input_ids": row.tolist(), "sample_id": i} for i, row in enumerate(x)])
    loss, count = TaskForward(ours, task)(batch)
    loss.backward()
    assert int(count) == 3 * 15
    torch.testing.assert_close(loss, reference, rtol=1e-6, atol=1e-6)
    for (name, a), b in zip(plain.named_parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_one_lmtool_step_equals_one_step_of_the_plain_loop(tmp_path, clm_data, monkeypatch):
    """Same initial weights and batch: lmtool's step (accumulation over 2 micro-batches, averaging and the
    clip coefficient in one multiplication, fused AdamW skipping on the device) hands the optimizer the
    plain loop's clipped gradients (to 1e-5 relative, 1e-8 absolute) and leaves its weights (to 1e-4
    absolute, 1% of the step lr = 1e-2: Adam's first step divides g by |g|, so where a gradient is near 0
    fp32 rounding of another summation order is magnified). The clip is active (max norm 0.1 < the norm)."""
    captured = {}
    fit = engine.Trainer.fit

    def capturing_fit(self):
        captured["initial"] = copy.deepcopy(self.raw_model)
        captured["tokenizer"] = self.tokenizer
        loss, step = self.task.loss, self.optimizer.step

        def recording(model, batch):
            captured.setdefault("batches", []).append({k: v.clone() for k, v in batch.items()})
            return loss(model, batch)

        def recording_step(*args, **kwargs):
            captured["grads"] = {n: p.grad.clone() for n, p in self.raw_model.named_parameters()}
            return step(*args, **kwargs)

        self.task.loss, self.optimizer.step = recording, recording_step
        result = fit(self)
        captured["trained"] = self.raw_model
        return result

    monkeypatch.setattr(engine.Trainer, "fit", capturing_fit)
    settings = dict(max_steps=1, batch_size=2, global_batch_size=4, warmup_steps=0, schedule="constant",
                    weight_decay=0.0, grad_clip=0.1, lr=1e-2)  # fmt: skip
    run_pretrain(load_config(tiny_config(tmp_path, clm_data, **settings)))

    model = captured["initial"]
    x = torch.cat([b["input_ids"] for b in captured["batches"]])
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0, fused=True
    )
    vocab = len(captured["tokenizer"])  # the tokenizer's: the rows padded for the matmuls take no part
    logits = model(input_ids=x).logits[..., :vocab]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab), x[:, 1:].reshape(-1))
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    assert norm > 0.1  # the clip took effect
    for name, param in model.named_parameters():
        got = captured["grads"][name]
        torch.testing.assert_close(got, param.grad, rtol=1e-5, atol=1e-8, msg=lambda m, n=name: f"{n}: {m}")
    optimizer.step()
    trained = dict(captured["trained"].named_parameters())
    for name, param in model.named_parameters():
        torch.testing.assert_close(trained[name], param, rtol=0, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_chunked_linear_cross_entropy_equals_the_plain_one(monkeypatch, dtype):
    """Loss and gradients of hidden and weight equal F.cross_entropy(hidden @ W.T) over several chunks with
    ignored targets: fp32 to 1e-5 relative; bf16 inputs (the logits of a bf16 matmul, fp32 softmax) to 1e-2."""
    from lmtool.tasks import linear_ce

    monkeypatch.setattr(linear_ce, "CHUNK_ELEMENTS", 7 * 50)  # 7 rows of a 50-word vocabulary per chunk
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 15, 8, generator=gen).to(dtype).requires_grad_()
    weight = torch.randn(50, 8, generator=gen).requires_grad_()
    targets = torch.randint(0, 50, (2, 15), generator=gen)
    targets[0, :4] = linear_ce.IGNORE
    reference = torch.nn.functional.cross_entropy(
        (hidden @ weight.to(dtype).T).float().reshape(-1, 50), targets.reshape(-1), reduction="sum"
    )
    ref_grads = torch.autograd.grad(reference, (hidden, weight))
    loss = linear_ce.linear_cross_entropy(hidden, weight, targets)
    grads = torch.autograd.grad(loss * 1.0, (hidden, weight))
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(loss, reference, **tol)
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, **tol)


def test_the_fused_head_is_used_only_where_logits_are_hidden_states_times_the_head():
    from transformers import BertConfig, BertForMaskedLM

    from lmtool.tasks.linear_ce import head_weight

    gpt2 = _tiny_gpt2()
    assert head_weight(gpt2) is gpt2.lm_head.weight
    bert = BertForMaskedLM(BertConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                      intermediate_size=32, vocab_size=40))  # fmt: skip
    assert head_weight(bert) is None  # a transform and a bias between the body and the logits
    scaled_logits = _tiny_gpt2()
    scaled_logits.lm_head.register_forward_hook(lambda m, i, o: o * 0.5)  # a logit scale: not fused
    assert head_weight(scaled_logits) is None


def test_a_run_with_the_fused_loss_follows_the_unfused_run(tmp_path, clm_data, monkeypatch):
    """train.fused_loss true (chunked PyTorch on the CPU) gives the per-step losses and grad norms of the
    plain loss, to 1e-5, over 6 steps (padded vocabulary rows included)."""
    from lmtool.tasks import clm

    calls = []
    real = clm.linear_cross_entropy
    monkeypatch.setattr(clm, "linear_cross_entropy", lambda *a: calls.append(1) or real(*a))
    runs = {}
    for fused in (False, True):
        out = tmp_path / f"fused-{fused}"
        out.mkdir()
        run_pretrain(load_config(tiny_config(out, clm_data, max_steps=6, fused_loss=fused)))
        runs[fused] = read_metrics(out / "run")
        assert bool(calls) == fused
    for step in range(1, 7):
        for key in ("loss", "grad_norm"):
            assert runs[True][step][key] == pytest.approx(runs[False][step][key], rel=1e-5), (step, key)


def test_the_compiled_mlm_loss_is_one_graph_and_equals_the_eager_one():
    """Compiled whole (fullgraph), the MLM loss over every position with the unmasked ones ignored (no
    data-dependent shape in the graph) equals the eager loss over the masked rows."""
    from transformers import BertConfig, BertForMaskedLM

    from lmtool.tasks.mlm import MaskedLMTask

    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                        vocab_size=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    task = MaskedLMTask.__new__(MaskedLMTask)  # the loss alone: no tokenizer, no masker
    task.vocab = 40
    forward = TaskForward(BertForMaskedLM(config), task)
    labels = torch.full((2, 10), -100)
    labels[0, 3], labels[1, 7], labels[1, 8] = 5, 9, 11
    batch = {"input_ids": torch.randint(0, 40, (2, 10)), "labels": labels}
    eager_loss, eager_count = forward(batch)
    torch._dynamo.reset()
    compiled_loss, compiled_count = torch.compile(forward, backend="aot_eager", fullgraph=True)(batch)
    assert int(compiled_count) == int(eager_count) == 3
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-6, atol=1e-6)
