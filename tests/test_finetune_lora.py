"""LoRA fine-tuning (finetune.lora, peft): trainable count, small checkpoints, exact resume, merged final/
that plain transformers loads, and bad input. A tiny BERT with a word-level vocabulary of the data."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmtool.config import ConfigError, load_config
from lmtool.train import checkpoint
from lmtool.train.engine import Trainer
from lmtool.train.plan import trainable_parameters
from tests.conftest import ROOT, SHARED_DATA, assert_usage_error, run_cli
from tests.eval_fixtures import run_inproc
from tests.finetune_fixtures import load_for_task

peft = pytest.importorskip("peft", reason="the dev extra installs peft (lmtool[lora])")

LORA = {"r": 4, "alpha": 8, "dropout": 0.1}
TRAIN = {
    "device": "cpu", "precision": "fp32", "batch_size": 8, "max_steps": 8, "save_every": 4, "keep_last": 5,
    "log_every": 1, "eval_every": 4, "lr": 5e-3, "warmup_ratio": 0.0,
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Path:
    """train.csv (96 rows), validation.csv (32) and base/: a tiny BERT (MLM head) with their vocabulary."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    shared_data, root = SHARED_DATA, tmp_path_factory.mktemp("lora")
    rows = {}
    for split, count in (("train", 96), ("validation", 32)):
        with open(shared_data / "sentiment" / f"{split}.csv", newline="", encoding="utf-8") as file:
            rows[split] = list(csv.DictReader(file))[:count]
        with open(root / f"{split}.csv", "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, ["label", "text"])
            writer.writeheader()
            writer.writerows(rows[split])
    words = {
        w for split in rows.values() for r in split for w in re.findall(r"\w+|[^\w\s]", r["text"].lower())
    }
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})
    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128,
                        max_position_embeddings=64, vocab_size=len(vocab))  # fmt: skip
    BertForMaskedLM(config).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    return root


def write_config(setup: Path, where: Path, lora: dict | None = None, **train) -> Path:
    finetune = {"task": "classification", "max_length": 48}
    if lora is not None:
        finetune["lora"] = lora
    text = {
        "run": {"name": "ft", "output_dir": str(where / "run")},
        "data": {
            "sources": [{"path": str(setup / "train.csv")}],
            "validation_sources": [{"path": str(setup / "validation.csv")}],
            "processed_dir": str(setup / "processed"),  # shared: LoRA settings are not part of its key
        },
        "model": {"init_from": str(setup / "base")},
        "finetune": finetune,
        "train": {**TRAIN, **train},
    }
    where.mkdir(parents=True, exist_ok=True)
    path = where / "c.yaml"
    path.write_text(json.dumps(text), encoding="utf-8")
    return path


def finetune(config: Path):
    from lmtool.recipes.finetune import run_finetune

    return run_finetune(load_config(config))


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def read_metrics(run: Path, kind: str) -> dict[int, dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if r["type"] == kind}


def blocked_peft(tmp_path: Path) -> dict:
    """Environment in which `import peft` fails, as without the lora extra."""
    fake = tmp_path / "no-peft" / "peft"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named peft')\n")
    return {"PYTHONPATH": f"{fake.parent}:{ROOT}", "OMP_NUM_THREADS": "1"}


def head_model(setup: Path):
    return load_for_task(
        str(setup / "base"), "classification", "single_label", ["negative", "positive"], False
    )


# --------------------------------------------------------------------------- unit


def test_adapters_on_the_attention_projections_and_the_head_train_as_peft_counts(setup):
    from lmtool.config.finetune import LoraConfig
    from lmtool.finetune.lora import apply_lora

    model = apply_lora(head_model(setup), LoraConfig(**LORA))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or ".modules_to_save." in n for n in trainable)
    assert {n for n in trainable if ".modules_to_save." in n} == {
        f"base_model.model.{m}.modules_to_save.default.{w}"
        for m in ("classifier", "bert.pooler.dense")  # the head, and the pooler the MLM checkpoint lacked
        for w in ("weight", "bias")
    }
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable if ".lora_" in n} == {"query", "value"}
    assert any("classifier.modules_to_save" in n for n in trainable)  # the new head trains fully
    assert trainable_parameters(model) == model.get_nb_trainable_parameters()
    # lmtool's own GPT-2 (Conv1D projections): auto = peft's c_attn, and no head of its own to train
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=1000, n_positions=64))
    gpt2 = apply_lora(gpt2, LoraConfig(**LORA))
    names = [n for n, p in gpt2.named_parameters() if p.requires_grad]
    assert names and all(".c_attn.lora_" in n for n in names)
    assert trainable_parameters(gpt2) == gpt2.get_nb_trainable_parameters()


def test_bad_lora_settings_are_config_errors(setup, tmp_path):
    from lmtool.config.finetune import LoraConfig
    from lmtool.finetune.lora import apply_lora
    from lmtool.lstm import LstmConfig, LstmForCausalLM

    with pytest.raises(
        ConfigError, match=r"finetune.lora.target_modules: bert has no linear module named qkv"
    ):
        apply_lora(head_model(setup), LoraConfig(**LORA, target_modules=["query", "qkv"]))
    with pytest.raises(ConfigError, match=r"modules_to_save: bert has no module named scorer"):
        apply_lora(head_model(setup), LoraConfig(**LORA, modules_to_save=["scorer"]))
    lstm = LstmForCausalLM(LstmConfig(vocab_size=50, hidden_size=16, num_layers=1))
    with pytest.raises(ConfigError, match=r"finetune.lora: needs a transformer model \(model.arch lstm"):
        apply_lora(lstm, LoraConfig(**LORA))
    config = write_config(setup, tmp_path, {**LORA, "target_modules": []})
    assert_usage_error(run_cli("config", "validate", str(config)), "finetune.lora.target_modules")
    config = write_config(setup, tmp_path, LORA)
    raw = json.loads(config.read_text())
    raw["finetune"]["freeze"] = "embeddings"
    config.write_text(json.dumps(raw))
    assert_usage_error(run_cli("config", "validate", str(config)), "freeze does not apply with lora")


def test_merge_false_leaves_the_adapter_and_a_note(setup, tmp_path):
    from transformers import AutoTokenizer

    from lmtool.config.finetune import LoraConfig
    from lmtool.finetune.lora import apply_lora
    from lmtool.recipes.lora_files import NOTE, LoraFiles

    model = apply_lora(head_model(setup), LoraConfig(**LORA, merge=False))
    LoraFiles(merge=False).export(model, AutoTokenizer.from_pretrained(setup / "base"), None, tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", NOTE, "tokenizer.json"} <= names
    assert "model.safetensors" not in names and "peft" in (tmp_path / NOTE).read_text()


def test_an_adapter_given_as_a_model_is_named_as_one(setup, tmp_path):
    """Issue 21: predict, evaluate, generate, plan and model.init_from said transformers' "Unrecognized
    model" for the adapters a run saves (merged: final/adapter/; unmerged: final/ with the note)."""
    from transformers import AutoTokenizer

    from lmtool.config.finetune import LoraConfig
    from lmtool.errors import LmtoolError
    from lmtool.finetune.lora import apply_lora
    from lmtool.model_dir import refuse_not_a_model
    from lmtool.recipes.lora_files import LoraFiles

    tokenizer = AutoTokenizer.from_pretrained(setup / "base")
    for merge in (True, False):
        final = tmp_path / f"merge-{merge}" / "final"
        final.mkdir(parents=True)
        LoraFiles(merge=merge).export(
            apply_lora(head_model(setup), LoraConfig(**LORA, merge=merge)), tokenizer, None, final
        )
        if merge:
            refuse_not_a_model(str(final))  # the merged model beside the adapter is a whole model
        says = f"use its merged parent {final}/" if merge else "LoRA adapter (LORA_ADAPTER.txt)"
        with pytest.raises(LmtoolError, match=re.escape(says)):
            refuse_not_a_model(str(final / "adapter" if merge else final))


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def lora_run(setup, tmp_path_factory):
    """A LoRA run of 8 steps (checkpoints at 4 and 8), and its log."""
    where = tmp_path_factory.mktemp("lora-run")
    config = write_config(setup, where, LORA)
    result = run_cli("finetune", str(config), env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(where / "run" / "final")
    return where / "run", result.stderr


def test_log_names_the_trainable_share_as_peft_counts_it(setup, lora_run):
    from lmtool.config.finetune import LoraConfig
    from lmtool.finetune.lora import apply_lora

    trainable, total = apply_lora(head_model(setup), LoraConfig(**LORA)).get_nb_trainable_parameters()
    assert f"({trainable:,} of {total:,} parameters trainable, {100 * trainable / total:.2g}%)" in lora_run[1]


def test_checkpoints_hold_the_adapter_and_head_only_and_are_much_smaller(setup, lora_run, tmp_path):
    run, _ = lora_run
    step = run / "checkpoints" / "step-00000004"
    weights = load_file(step / "adapter_model.safetensors")
    assert not (step / "model.safetensors").exists() and checkpoint.verify(step) is None
    assert all(
        ".lora_" in k or k.split(".")[2] in ("classifier", "bert") and "lora" not in k for k in weights
    )
    moments = checkpoint.load_trainer_state(step)["optimizer"]["state"]
    assert len(moments) == len(weights)  # the optimizer holds the adapters and the head, nothing else
    finetune(write_config(setup, tmp_path, None, max_steps=4))
    full_step = tmp_path / "run" / "checkpoints" / "step-00000004"
    assert dir_bytes(step) * 5 < dir_bytes(full_step)


@pytest.mark.slow
def test_final_is_the_merged_model_plain_transformers_loads_and_matches_the_adapter(
    setup, lora_run, tmp_path
):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    final = lora_run[0] / "final"
    assert not (final / "adapter_config.json").exists()  # else transformers would reach for peft
    assert (final / "adapter" / "adapter_model.safetensors").is_file()
    merged = AutoModelForSequenceClassification.from_pretrained(final).eval()
    assert not any("lora" in name or "modules_to_save" in name for name in merged.state_dict())
    assert merged.config.id2label == {0: "negative", 1: "positive"}
    base = AutoModelForSequenceClassification.from_pretrained(setup / "base", num_labels=2)
    adapter = PeftModel.from_pretrained(base, final / "adapter").eval()
    batch = AutoTokenizer.from_pretrained(final)(
        ["a stunning fusion of music", "more interesting in concept than in execution"],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        want, got = adapter(**batch).logits, merged(**batch).logits
        with adapter.disable_adapter():
            untrained = adapter(**batch).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - untrained).abs().max() > 1e-3  # the adapters learned something

    # without peft installed at all: predict loads final/ as a plain transformers model
    result = run_cli("predict", "--model", str(final), "a stunning fusion", env=blocked_peft(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["label"] in ("negative", "positive")


def test_a_lora_run_resumes_bitwise(setup, lora_run, tmp_path, monkeypatch):
    run, _ = lora_run
    config = write_config(setup, tmp_path, LORA)
    real_log = Trainer._log_train

    def killed_at_6(self, record):
        real_log(self, record)
        if record["step"] == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_log_train", killed_at_6)
    with pytest.raises(KeyboardInterrupt):
        finetune(config)
    monkeypatch.setattr(Trainer, "_log_train", real_log)
    assert checkpoint.latest_checkpoint(tmp_path / "run").name == "step-00000004"
    finetune(config)
    for kind in ("train", "eval"):
        a, b = read_metrics(run, kind), read_metrics(tmp_path / "run", kind)
        assert sorted(a) == sorted(b) and all(a[s]["loss"] == b[s]["loss"] for s in a), kind
    for name in ("model.safetensors", "adapter/adapter_model.safetensors"):
        a, b = load_file(run / "final" / name), load_file(tmp_path / "run" / "final" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.slow
def test_without_peft_a_lora_config_exits_2_saying_how_to_install(setup, tmp_path):
    config = write_config(setup, tmp_path, LORA)
    result = run_cli("finetune", str(config), env=blocked_peft(tmp_path))
    assert_usage_error(result, "finetune.lora", 'pip install "lmtool[lora]"')
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_target_modules_the_model_lacks_exit_2_listing_some_it_has(setup, tmp_path):
    config = write_config(setup, tmp_path, {**LORA, "target_modules": ["q_proj", "v_proj"]})
    result = run_inproc("finetune", str(config))  # in-process, on one thread (pytestmark)
    assert_usage_error(result, "finetune.lora.target_modules", "q_proj, v_proj", "query", "dense")


def test_lora_with_fsdp_exits_2_before_any_preprocessing(setup, tmp_path):
    """fsdp checkpoints whole sharded models; a LoRA run's hold only its adapters: refused up front."""
    config = write_config(setup, tmp_path, LORA, distributed={"strategy": "fsdp"})
    raw = json.loads(config.read_text())
    raw["data"]["processed_dir"] = str(tmp_path / "processed")
    config.write_text(json.dumps(raw))
    assert_usage_error(run_inproc("finetune", str(config)),
                       "train.distributed.strategy", "finetune.lora")  # fmt: skip
    assert not (tmp_path / "processed").exists() and not (tmp_path / "run").exists()
