"""final/ holds the tokenizer's vocabulary: the rows padded for fast matmuls are cut on export (tied and
untied heads, BERT's decoder bias, the LSTM), checkpoints keep them, and the kept logits are unchanged."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lmtool.config import load_config
from lmtool.models import build_model, load_model
from lmtool.train.model_files import ModelFiles
from lmtool.train.saving import GatheredFiles
from lmtool.train.vocab_trim import vocab_parameter_names
from tests.engine_fixtures import make_processed_dir, tiny_config
from tests.eval_fixtures import run_inproc

pytestmark = pytest.mark.usefixtures("one_thread")
PADDED = 64  # model.pad_vocab_multiple's default; the fixtures' tokenizers have 41 (clm) and 45 (mlm) tokens
ATOL = 1e-5  # fp32: the same weights, a matmul with fewer output columns


@pytest.fixture(scope="module")
def clm_data(tmp_path_factory):
    return make_processed_dir(tmp_path_factory.mktemp("clm") / "processed")


@pytest.fixture(scope="module")
def mlm_data(tmp_path_factory):
    return make_processed_dir(tmp_path_factory.mktemp("mlm") / "processed", objective="mlm")


def _padded_model(tmp_path, data, arch: str, objective: str = "clm", **overrides):
    from transformers import AutoTokenizer

    cfg = load_config(tiny_config(tmp_path, data, objective=objective, arch=arch, model_overrides=overrides))
    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    model = build_model(cfg, tokenizer).eval()
    with torch.no_grad():  # no zero-initialised rows (BERT's decoder bias): every row tells
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    assert model.config.vocab_size == PADDED > len(tokenizer)
    return model, tokenizer


def _assert_exported(model, tokenizer, final, ids) -> None:
    exported, _ = load_model(final)
    size = len(tokenizer)
    assert exported.config.vocab_size == size
    assert json.loads((final / "config.json").read_text())["vocab_size"] == size
    live, cut = model.state_dict(), vocab_parameter_names(model)
    for name, tensor in load_file(final / "model.safetensors").items():  # position embeddings as they were
        want = (size, *live[name].shape[1:]) if name in cut else live[name].shape
        assert tensor.shape == want, name
    out = exported.get_output_embeddings()
    assert exported.get_input_embeddings().weight.shape[0] == out.weight.shape[0] == size
    if getattr(out, "bias", None) is not None:
        torch.testing.assert_close(out.bias, model.get_output_embeddings().bias[:size], atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, model(ids).logits[..., :size], atol=ATOL, rtol=0)
    assert model.config.vocab_size == model.get_input_embeddings().weight.shape[0] == PADDED  # left as is


@pytest.mark.parametrize(
    ("arch", "objective", "overrides"),
    [
        ("gpt2", "clm", {}),
        ("gpt2", "clm", {"tie_word_embeddings": False}),
        ("bert", "mlm", {}),
        ("lstm", "clm", {}),
    ],
    ids=["gpt2-tied", "gpt2-untied", "bert-mlm", "lstm"],
)
def test_final_has_the_tokenizers_vocabulary_and_the_same_logits_on_it(
    tmp_path, clm_data, mlm_data, arch, objective, overrides
):
    data = clm_data if objective == "clm" else mlm_data
    model, tokenizer = _padded_model(tmp_path, data, arch, objective, **overrides)
    ModelFiles().export(model, tokenizer, None, tmp_path / "final")
    ids = torch.arange(1, 17).reshape(2, 8)
    _assert_exported(model, tokenizer, tmp_path / "final", ids)
    if overrides:  # untied: the output rows are cut too, not only the embeddings
        exported, _ = load_model(tmp_path / "final")
        assert exported.lm_head.weight is not exported.transformer.wte.weight


def test_weights_gathered_from_shards_are_cut_the_same_way(tmp_path, clm_data):
    model, tokenizer = _padded_model(tmp_path, clm_data, "gpt2", tie_word_embeddings=False)
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    GatheredFiles(state).export(model, tokenizer, None, tmp_path / "final")
    _assert_exported(model, tokenizer, tmp_path / "final", torch.arange(1, 17).reshape(2, 8))


def test_the_merged_lora_final_is_cut_too(tmp_path, clm_data):
    pytest.importorskip("peft")
    from lmtool.config.finetune import LoraConfig
    from lmtool.finetune.lora import apply_lora
    from lmtool.recipes.lora_files import LoraFiles

    model, tokenizer = _padded_model(tmp_path, clm_data, "gpt2")
    lora = apply_lora(model, LoraConfig())
    ids = torch.arange(1, 17).reshape(2, 8)
    with torch.no_grad():
        want = lora(input_ids=ids).logits[..., : len(tokenizer)]
    LoraFiles(merge=True).export(lora, tokenizer, None, tmp_path / "final")
    exported, _ = load_model(tmp_path / "final")
    assert exported.config.vocab_size == len(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, want, atol=ATOL, rtol=0)


def test_a_run_keeps_padded_checkpoints_and_hands_over_a_cut_best_final_that_evaluate_and_generate_use(
    tmp_path, clm_data
):
    from lmtool.recipes.pretrain import run_pretrain

    config = tiny_config(tmp_path, clm_data, max_steps=4, eval_every=2, save_every=2, final_model="best")
    final = run_pretrain(load_config(config))
    best = tmp_path / "run" / "checkpoints" / "step-00000004"
    assert json.loads((best / "config.json").read_text())["vocab_size"] == PADDED  # resume stays exact
    assert load_file(best / "model.safetensors")["transformer.wte.weight"].shape[0] == PADDED
    kept = load_file(final / "model.safetensors")["transformer.wte.weight"]
    torch.testing.assert_close(kept, load_file(best / "model.safetensors")["transformer.wte.weight"][:41])
    assert json.loads((final / "config.json").read_text())["vocab_size"] == 41

    evaluated = run_inproc("evaluate", "--model", str(final), "--data", str(clm_data))
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["perplexity"] < 41
    generated = run_inproc(
        "generate", "--model", str(final), "--format", "jsonl", "-n", "4", "--seed", "1", "w3"
    )
    assert generated.returncode == 0, generated.stderr
    assert json.loads(generated.stdout)["prompt"] == "w3"


def test_padded_rows_do_not_change_the_loss(tmp_path, clm_data):
    from lmtool.tasks import make_task

    model, tokenizer = _padded_model(tmp_path, clm_data, "gpt2")
    ModelFiles().export(model, tokenizer, None, tmp_path / "final")
    exported, _ = load_model(tmp_path / "final")
    task = make_task("clm", tokenizer, seed=0)
    batch = task.collate([{"input_ids": list(range(1 + i, 17 + i)), "sample_id": i} for i in range(2)])
    with torch.no_grad():
        padded, _ = task.loss(model, batch)
        cut, _ = task.loss(exported, batch)
    assert float(padded) == pytest.approx(float(cut), abs=1e-5)
