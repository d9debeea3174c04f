"""`lmtool plan`: counts match the built models, the memory formula adds up, JSON parses, warnings fire."""

from __future__ import annotations

import json
import time

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, BertConfig, GPT2Config

from lmtool.config import load_config
from lmtool.errors import LmtoolError
from lmtool.planning.durations import parse_duration
from lmtool.planning.estimate import estimate
from lmtool.planning.memory import layer_activation_bytes, memory_per_gpu
from lmtool.planning.model import model_shape

from .conftest import ROOT, assert_usage_error, run_cli
from .eval_fixtures import run_inproc

GPT2 = ROOT / "configs" / "gpt2-124m.yaml"
BERT = ROOT / "configs" / "bert-base.yaml"


@pytest.fixture(autouse=True)
def _no_slurm(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_END_TIME", raising=False)


def _unique_numel(model: torch.nn.Module) -> int:
    return sum({id(p): p.numel() for p in model.parameters()}.values())


def test_parameter_counts_equal_the_models_built_from_the_same_settings():
    # Built independently on meta from the published shapes (vocabularies padded to a multiple of 64).
    with torch.device("meta"):
        gpt2 = AutoModelForCausalLM.from_config(
            GPT2Config(n_layer=12, n_head=12, n_embd=768, vocab_size=50304)
        )
        bert = AutoModelForMaskedLM.from_config(BertConfig(vocab_size=30528))
    gpt2_shape, bert_shape = model_shape(load_config(GPT2)), model_shape(load_config(BERT))
    assert gpt2_shape.parameters == _unique_numel(gpt2) == 124_475_904  # nanoGPT's 124M at vocab 50304
    assert gpt2_shape.embedding_parameters == (50304 + 1024) * 768
    assert bert_shape.parameters == _unique_numel(bert)
    assert bert_shape.embedding_parameters == (30528 + 512 + 2) * 768
    # FLOPs per token: the MFU log's 6N + 12·L·H·Q·T, N without the position table (lookup only).
    assert gpt2_shape.flops_per_token == 6 * (124_475_904 - 1024 * 768) + 12 * 12 * 768 * 1024


def test_memory_components_add_up_and_follow_the_formula():
    result = estimate(load_config(GPT2), gpu="h100", gpus_per_node=8, nodes=1, mfu=0.4)
    params = result["model"]["parameters"]
    memory = result["memory_gb_per_gpu"]
    parts = ("weights", "gradients", "optimizer", "gathered", "weight_copies", "activations", "logits")
    for name, row in memory.items():
        assert row["total"] == pytest.approx(sum(row[p] for p in parts)), name
        assert row["peak_at"] == "loss", name
    assert result["model"]["compiled"]  # compile auto: a CUDA run of 600,000 steps
    ddp, fsdp = memory["ddp"], memory["fsdp"]
    assert ddp["weights"] == pytest.approx(4 * params / 1e9)
    assert ddp["optimizer"] == pytest.approx(8 * params / 1e9)
    # 8 DDP ranks, 5 micro-steps a step: DDP's gradient buckets and the earlier micro-steps' gradients
    assert result["batch"]["accumulation"] == 5 and ddp["gradients"] == pytest.approx(8 * params / 1e9)
    # FSDP: sharded weights and moments; the unsharded gradients it accumulates in fp32 without syncing
    assert fsdp["optimizer"] == pytest.approx(ddp["optimizer"] / 8) and ddp["gathered"] == 0
    assert fsdp["gradients"] == pytest.approx(4 * params / 1e9)
    assert memory["ddp_checkpointing"]["activations"] < ddp["activations"]
    # GPT-2 from scratch: no dropout (no masks), SDPA (its output kept, no s x s scores), f = 4h, bf16:
    # s·b·h·(2·(5 + 1 + 1 + 8) + 4·2) bytes per layer, s·b·h·(4 + 2) after the layers; compiled, the
    # logits and their gradient in bf16: s·b·V·(2 + 2).
    shape = model_shape(load_config(GPT2))
    sbh = 1024 * 12 * 768
    assert layer_activation_bytes(shape, 1024, 12, 2, eager=False) == sbh * 38
    assert ddp["activations"] == pytest.approx((12 * sbh * 38 + sbh * 6) / 1e9)
    assert ddp["logits"] == pytest.approx(1024 * 12 * 50304 * 4 / 1e9)
    assert ddp["weight_copies"] == pytest.approx(2 * (params - 1024 * 768) / 1e9)
    # FSDP's mixed-precision policy computes in bf16 (residual stream included) and casts the weights itself
    assert fsdp["weight_copies"] == 0
    assert fsdp["activations"] == pytest.approx((12 * sbh * 34 + sbh * 4) / 1e9)
    # eager attention keeps the scores (fp32 softmax output and its bf16 copy) but not SDPA's output:
    # a·s²·b·(4 + 2) more per layer, s·b·h·2 less
    eager = layer_activation_bytes(shape, 1024, 12, 2, eager=True)
    assert (
        eager - layer_activation_bytes(shape, 1024, 12, 2, eager=False) == 12 * 1024 * 1024 * 12 * 6 - sbh * 2
    )


def test_the_eager_loss_holds_three_fp32_logit_buffers_and_gradients_only_when_accumulating():
    """GPT-2 124M, bf16, micro-batch 12 = the global batch, one H200, eager: 13.83 GB measured (issue 20),
    where the formula of three fp32 logit buffers and no gradients at the peak gives 13.52 GB (-2.2%)."""
    sets = ["train.compile=false", "train.global_batch_tokens=null", "train.global_batch_size=12"]
    result = estimate(load_config(GPT2, sets), gpu="h200", gpus_per_node=1, nodes=1, mfu=0.4)
    ddp = result["memory_gb_per_gpu"]["ddp"]
    assert not result["model"]["compiled"] and ddp["gradients"] == 0
    assert ddp["logits"] == pytest.approx(1024 * 12 * 50304 * 12 / 1e9)
    assert abs(ddp["total"] - 13.83) / 13.83 < 0.05
    accumulating = load_config(GPT2, [*sets[:2], "train.global_batch_size=24"])
    memory = estimate(accumulating, gpu="h200", gpus_per_node=1, nodes=1, mfu=0.4)["memory_gb_per_gpu"]["ddp"]
    assert memory["gradients"] == pytest.approx(4 * result["model"]["parameters"] / 1e9)


def test_the_fused_loss_holds_one_chunk_of_logits_instead_of_all_of_them():
    """train.fused_loss: one 32M-logit chunk (fp32 logits and softmax), the hidden states' gradient and the
    head's fp32 gradient instead of 12 bytes per logit; off under fsdp on several GPUs (not used there)."""
    sets = ["train.compile=false", "train.global_batch_tokens=null", "train.global_batch_size=12"]
    plain = estimate(load_config(GPT2, sets), gpu="h200", gpus_per_node=1, nodes=1, mfu=0.4)
    fused = estimate(load_config(GPT2, [*sets, "train.fused_loss=true"]), gpu="h200", gpus_per_node=1,
                     nodes=1, mfu=0.4)  # fmt: skip
    chunk, tokens, hidden, vocab = 2**25, 12 * 1024, 768, 50304
    expected = (chunk * 8 + tokens * hidden * 2 + vocab * hidden * 4) / 1e9
    assert fused["memory_gb_per_gpu"]["ddp"]["logits"] == pytest.approx(expected)
    assert plain["memory_gb_per_gpu"]["ddp"]["logits"] > 10 * expected
    two = estimate(load_config(GPT2, [*sets, "train.fused_loss=true", "train.global_batch_size=24"]),
                   gpu="h200", gpus_per_node=2, nodes=1, mfu=0.4)["memory_gb_per_gpu"]  # fmt: skip
    assert two["ddp"]["logits"] == pytest.approx(expected)
    assert two["fsdp"]["logits"] == pytest.approx(tokens * vocab * 12 / 1e9)


def test_with_few_activations_the_peak_is_the_optimizer_step_and_ddp_always_holds_its_buckets():
    shape = model_shape(load_config(GPT2))
    params = shape.parameters
    step = {"seq": 8, "micro_batch": 1, "act_bytes": 2, "checkpointing": False, "eager": False}
    alone = memory_per_gpu(shape, world=1, fsdp=False, **step)
    assert alone.peak_at == "optimizer" and alone.activations == alone.logits == 0
    assert alone.total == pytest.approx(16 * params)  # weights, moments, gradients
    ddp = memory_per_gpu(shape, world=4, fsdp=False, **step)
    assert ddp.total == pytest.approx(20 * params)  # DDP's gradient buckets besides the gradients
    fsdp = memory_per_gpu(shape, world=4, fsdp=True, **step)
    assert fsdp.peak_at == "optimizer" and fsdp.total == pytest.approx(16 * params / 4)  # all sharded


def test_throughput_and_wall_time_at_the_stated_mfu():
    result = estimate(load_config(GPT2), gpu="h100", gpus_per_node=8, nodes=2, mfu=0.5)
    speed, batch = result["throughput"], result["batch"]
    assert speed["tokens_per_s"] == pytest.approx(0.5 * 989e12 * 16 / batch["flops_per_token"])
    assert speed["wall_seconds"] == pytest.approx(600_000 * batch["tokens_per_step"] / speed["tokens_per_s"])
    # 480 sequences rounded to whole micro-batches of 12 x 16 GPUs, as training rounds them
    assert batch["global_batch"] == 384 and batch["accumulation"] == 2


@pytest.mark.parametrize("path", [GPT2, BERT])
def test_shipped_configs_plan_without_warnings(path):
    result = estimate(
        load_config(path), gpu="h100", gpus_per_node=8, nodes=1, mfu=0.4, time_limit=(4 * 3600, "t")
    )
    assert result["warnings"] == []
    assert result["memory_gb_per_gpu"]["ddp"]["fits"]


def test_global_batch_not_divisible_warns():
    config = load_config(BERT, ["train.global_batch_size=100"])
    warnings = estimate(config, gpu="a100", gpus_per_node=4, nodes=1, mfu=0.4)["warnings"]
    assert any("not divisible" in w and "train.global_batch_size" in w for w in warnings), warnings


def test_small_micro_batch_warns():
    warnings = estimate(load_config(BERT, ["train.batch_size=2", "train.global_batch_size=256"]),
                        gpu="h100", gpus_per_node=8, nodes=1, mfu=0.4)["warnings"]  # fmt: skip
    assert any("too small to keep a GPU busy" in w for w in warnings), warnings


def test_no_checkpoint_within_the_slurm_time_limit_warns(monkeypatch):
    config = load_config(GPT2, ["train.save_every=50000"])  # ~1.8 h of steps on 8 H100s at 40% MFU
    warned = estimate(
        config, gpu="h100", gpus_per_node=8, nodes=1, mfu=0.4, time_limit=(3600, "--time-limit")
    )
    assert any("no checkpoint within the time limit" in w for w in warned["warnings"]), warned["warnings"]
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 3600))
    result = run_inproc("plan", str(GPT2), "--set", "train.save_every=50000", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert any("SLURM_JOB_END_TIME" in w for w in json.loads(result.stdout)["warnings"])


def test_model_that_does_not_fit_warns():
    warnings = estimate(load_config(GPT2, ["train.batch_size=64", "train.global_batch_tokens=null",
                                           "train.global_batch_size=512"]),
                        gpu="a100-40", gpus_per_node=8, nodes=1, mfu=0.4)["warnings"]  # fmt: skip
    assert any("GB per GPU" in w for w in warnings), warnings


def test_durations():
    assert parse_duration("90m") == 5400 and parse_duration("4h") == 14400
    assert parse_duration("1:30:00") == 5400 and parse_duration("2-00:00:00") == 172800
    assert parse_duration("30") == 1800 and parse_duration("10:00") == 600


@pytest.mark.slow
def test_cli_prints_json_when_piped_and_a_table_when_asked():
    result = run_cli("plan", str(BERT), "--gpus", "4", "--gpu", "a100")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["cluster"]["world_size"] == 4 and plan["model"]["parameters"] == 109_518_912
    text = run_cli("plan", str(BERT), "--format", "text").stdout
    assert "memory per GPU" in text and "fsdp + ckpt" in text and "tokens/s" in text
    page = run_cli("plan", "--help").stdout
    assert "lmtool plan" in page.partition("Example:")[2]


def test_cli_rejects_an_unknown_gpu():
    assert_usage_error(run_inproc("plan", str(BERT), "--gpu", "h900"), "--gpu must be one of")


def test_init_from_is_counted_from_its_config(tmp_path):
    GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=128, vocab_size=1000).save_pretrained(tmp_path)
    with torch.device("meta"):
        built = AutoModelForCausalLM.from_config(GPT2Config.from_pretrained(tmp_path))
    config = load_config(GPT2, [f"model.init_from={tmp_path}", "data.block_size=128"])
    shape = model_shape(config)
    assert shape.parameters == _unique_numel(built) and shape.vocab == 1000 and shape.layers == 2


def test_a_missing_init_from_is_a_usage_error(tmp_path):
    with pytest.raises(LmtoolError, match="model.init_from"):
        model_shape(load_config(GPT2, [f"model.init_from={tmp_path / 'nowhere'}"]))


def _saved_bytes(config, vocab: int, bf16: bool) -> int:
    """Bytes of the tensors autograd keeps for the backward pass (parameters excluded) plus the logits
    the model returns: what the activation and weight-copy terms estimate, and the logits and their
    saved log-softmax."""
    from lmtool.models import model_from_config, scratch_config

    torch.manual_seed(0)
    model = model_from_config(
        config,
        scratch_config(config, vocab, dict.fromkeys(("pad_token_id", "bos_token_id", "eos_token_id"), 0)),
    )
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    ids = torch.randint(0, vocab, (config.train.batch_size, config.data.block_size))
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast("cpu", torch.bfloat16, enabled=bf16),
    ):
        logits = model(input_ids=ids, labels=ids).logits
    kept.setdefault(logits.untyped_storage().data_ptr(), logits.untyped_storage().nbytes())
    return sum(kept.values())


TINY = {
    GPT2: ["model.config={n_layer: 2, n_head: 2, n_embd: 64}", "tokenizer={train: {vocab_size: 1000}}"],
    # BERT without dropout: PyTorch's CPU SDPA falls back to the math kernel (s x s scores kept) with dropout
    BERT: ["model.config={num_hidden_layers: 2, num_attention_heads: 2, hidden_size: 64, intermediate_size: 256,"
           " hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}", "tokenizer.train.vocab_size=1000"],
}  # fmt: skip


@pytest.mark.parametrize("path", [GPT2, BERT])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("bf16", [False, True])
def test_activation_estimate_matches_what_autograd_keeps(path, attention, bf16):
    config = load_config(
        path, [*TINY[path], "data.block_size=128", "train.batch_size=4", f"model.attention={attention}"]
    )
    shape = model_shape(config)
    act_bytes = 2 if bf16 else 4
    memory = memory_per_gpu(shape, seq=128, micro_batch=4, act_bytes=act_bytes, world=1, fsdp=False,
                            checkpointing=False, eager=shape.eager_attention)  # fmt: skip
    # after the forward: the logits returned and the fp32 log-softmax the loss saves (the peak in the
    # loss's backward, memory.logits, is measured in test_plan_memory.py)
    predicted = memory.activations + memory.weight_copies + 128 * 4 * shape.vocab * (act_bytes + 4)
    assert predicted == pytest.approx(_saved_bytes(config, shape.vocab, bf16), rel=0.1)


def test_a_block_longer_than_the_positions_is_refused_and_an_lstm_is_flagged():
    with pytest.raises(LmtoolError, match="data.block_size"):
        model_shape(load_config(GPT2, ["data.block_size=2048"]))
    lstm = load_config(GPT2, ["model.arch=lstm", "model.config={}", "data.block_size=128"])
    warnings = estimate(lstm, gpu="h100", gpus_per_node=1, nodes=1, mfu=0.4)["warnings"]
    assert any("no attention layers" in w for w in warnings), warnings


def test_a_local_tokenizer_sets_the_vocabulary(shared_data, tmp_path):
    shape = model_shape(load_config(GPT2, [f"tokenizer.path={shared_data / 'gpt2-tokenizer'}"]))
    assert shape.vocab == 50304 and shape.vocab_source.endswith("gpt2-tokenizer")
    result = run_inproc("plan", str(GPT2), "--set", f"tokenizer.path={tmp_path}")
    assert_usage_error(result, "not a usable tokenizer directory")


def test_a_rounded_global_batch_is_stated_and_warned():
    """`--gpus 16` turned 491,520 tokens per step into 393,216 without a word."""
    result = estimate(load_config(GPT2), gpu="h100", gpus_per_node=16, nodes=1, mfu=0.4)
    assert result["batch"]["tokens_per_step"] == 393_216
    assert result["batch"]["configured_tokens_per_step"] == 491_520
    assert any("491,520" in w and "393,216" in w and "-20.0%" in w for w in result["warnings"]), result


@pytest.mark.parametrize(
    ("config", "head"),
    [
        ("finetune-sentiment.yaml", "BertForSequenceClassification"),
        ("finetune-qa.yaml", "BertForQuestionAnswering"),
    ],
)
def test_finetune_configs_are_planned(tmp_path, monkeypatch, config, head):
    """A finetune section was refused ("not planned yet", exit 2)."""
    shape = BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                       vocab_size=100, num_labels=2)  # fmt: skip
    shape.save_pretrained(tmp_path)
    monkeypatch.setenv("MINILM", str(tmp_path))
    cfg = load_config(ROOT / "configs" / config)
    result = estimate(cfg, gpu="h100", gpus_per_node=2, nodes=1, mfu=0.4)
    assert result["model"]["class"] == head
    assert result["model"]["parameters"] == getattr(transformers, head)(shape).num_parameters()
    assert result["batch"]["sequence_length"] == cfg.finetune.max_length
