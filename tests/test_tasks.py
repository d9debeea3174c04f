"""Tasks and models: losses, masking determinism, model building errors, the LSTM baseline."""

from __future__ import annotations

import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from lmtool.config import MLMConfig, load_config
from lmtool.data.collate import IGNORE
from lmtool.errors import ConfigError, LmtoolError
from lmtool.models import build_model, count_parameters, is_causal_lm, load_model
from lmtool.tasks import make_task
from lmtool.tasks.clm import token_nll

TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "language models predict the next token",
    "hello world",
] * 40


@pytest.fixture(scope="module")
def bpe():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXT, trainer)
    end = "<|endoftext|>"
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=end, eos_token=end, unk_token=end, pad_token=end
    )


@pytest.fixture(scope="module")
def wordpiece():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        TEXT, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials, show_progress=False)
    )
    tok.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def tiny(objective: str, arch: str, extra: list[str] = ()):
    sizes = {
        "gpt2": "{n_layer: 2, n_embd: 32, n_head: 2}",
        "bert": "{num_hidden_layers: 2, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}",
        "lstm": "{hidden_size: 128, num_layers: 1}",
    }[arch]
    return load_config(
        None,
        [
            f"data.objective={objective}",
            f"model.arch={arch}",
            f"model.config={sizes}",
            "data.block_size=16",
            *extra,
        ],
    )


def examples(tokenizer, n=4, length=16):
    ids = tokenizer(" ".join(TEXT))["input_ids"]
    return [{"input_ids": ids[i * length : (i + 1) * length], "sample_id": i} for i in range(n)]


def test_clm_loss_matches_hf_loss_and_vocab_is_padded(bpe):
    model = build_model(tiny("clm", "gpt2"), bpe).eval()
    assert model.config.vocab_size % 64 == 0 and model.config.vocab_size >= len(bpe)
    task = make_task("clm", bpe, seed=0)
    batch = task.collate(examples(bpe))
    loss, count = task.loss(model, batch)
    # HF's loss over the tokenizer's vocabulary: the padded rows take no part in lmtool's softmax
    logits, ids = model(input_ids=batch["input_ids"]).logits[..., : len(bpe)], batch["input_ids"]
    reference = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, len(bpe)), ids[:, 1:].reshape(-1)
    )
    assert torch.allclose(loss, reference, atol=1e-5)
    padded = model(input_ids=ids, labels=ids).loss  # over every row, padded ones too: higher
    assert float(padded) > float(loss) + 1e-3
    assert int(count) == 4 * 15


def test_clm_nll_skips_padding_and_the_last_position():
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, IGNORE, IGNORE]])
    nll, count = token_nll(logits, labels)
    reference = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    assert torch.allclose(nll, reference) and int(count) == 4 + 2


def test_from_scratch_models_have_no_dropout_and_a_fused_gelu_unless_configured(bpe):
    model = build_model(tiny("clm", "gpt2"), bpe)
    assert (model.config.resid_pdrop, model.config.embd_pdrop, model.config.attn_pdrop) == (0.0, 0.0, 0.0)
    assert model.config.activation_function == "gelu_pytorch_tanh"
    chosen = tiny(
        "clm", "gpt2", ["model.config.resid_pdrop=0.1", "model.config.activation_function=gelu_new"]
    )
    model = build_model(chosen, bpe)
    assert model.config.resid_pdrop == 0.1 and model.config.activation_function == "gelu_new"


def test_clm_collate_pads_short_rows_and_ignores_padding(bpe):
    task = make_task("clm", bpe, seed=0)
    rows = [{"input_ids": [5, 6, 7, 8], "sample_id": 0}, {"input_ids": [9, 10], "sample_id": 1}]
    batch = task.collate(rows)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"][1].tolist() == [9, 10, IGNORE, IGNORE]


def test_mlm_masking_is_a_function_of_seed_and_sample(wordpiece):
    task = make_task("mlm", wordpiece, seed=7, mlm=MLMConfig(probability=0.3))
    rows = examples(wordpiece, n=8, length=32)
    first, again = task.collate(rows), task.collate(rows)
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(
        first["labels"], again["labels"]
    )
    # The same sample masks the same way whatever batch it lands in (resume, DDP).
    alone = task.collate(rows[3:4])
    assert torch.equal(alone["labels"][0], first["labels"][3])
    other_seed = make_task("mlm", wordpiece, seed=8, mlm=MLMConfig(probability=0.3)).collate(rows)
    assert not torch.equal(other_seed["labels"], first["labels"])


def test_mlm_mask_statistics_and_special_tokens(wordpiece):
    task = make_task("mlm", wordpiece, seed=1)
    ids = wordpiece(TEXT * 3, truncation=True, max_length=64)["input_ids"]
    rows = [{"input_ids": r, "sample_id": i} for i, r in enumerate(ids)]
    batch = task.collate(rows)
    selected = batch["labels"] != IGNORE
    originals = torch.nn.utils.rnn.pad_sequence([torch.tensor(r) for r in ids], batch_first=True)
    special = torch.isin(originals, torch.tensor(wordpiece.all_special_ids))
    assert not (selected & special).any()
    rate = selected.sum().item() / (~special).sum().item()
    assert 0.10 < rate < 0.20
    masked = (batch["input_ids"] == wordpiece.mask_token_id) & selected
    assert 0.7 < masked.sum().item() / selected.sum().item() < 0.9


def test_whole_word_masking_masks_all_pieces_of_a_word(wordpiece):
    task = make_task("mlm", wordpiece, seed=3, mlm=MLMConfig(probability=0.5, whole_word=True))
    ids = wordpiece(["unbelievably tokenization everywhere"] * 20)["input_ids"]
    batch = task.collate([{"input_ids": r, "sample_id": i} for i, r in enumerate(ids)])
    tokens = [wordpiece.convert_ids_to_tokens(r) for r in ids]
    for row, toks in enumerate(tokens):
        chosen = (batch["labels"][row] != IGNORE).tolist()
        for j in range(1, len(toks)):
            if toks[j].startswith("##"):
                assert chosen[j] == chosen[j - 1], toks


def test_mlm_evaluator_reports_accuracy(wordpiece):
    model = build_model(tiny("mlm", "bert", ["data.block_size=32"]), wordpiece)
    task = make_task("mlm", wordpiece, seed=0)
    evaluator = task.evaluator()
    evaluator.update(model, task.collate(examples(wordpiece, length=32)))
    metrics = evaluator.compute()
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["tokens"] > 0
    assert math.isclose(metrics["perplexity"], math.exp(metrics["loss"]), rel_tol=1e-9)


def test_lstm_trains_saves_and_reloads(bpe, tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny("clm", "lstm"), bpe)
    task = make_task("clm", bpe, seed=0)
    batch = task.collate(examples(bpe, n=8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss, _ = task.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.save_pretrained(tmp_path)
    bpe.save_pretrained(tmp_path)
    reloaded, tokenizer = load_model(tmp_path)
    model.eval()
    assert is_causal_lm(reloaded) and len(tokenizer) == len(bpe)
    assert torch.equal(reloaded(batch["input_ids"]).logits, model(batch["input_ids"]).logits)
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path)).__name__ == "LstmForCausalLM"
    embedding = reloaded.get_input_embeddings().weight.numel()
    # The tied head is counted once.
    assert count_parameters(reloaded) - count_parameters(reloaded, exclude_embeddings=True) == embedding


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["model.config={n_layerz: 2}"], "model.config.n_layerz"),
        (["data.block_size=4096", "model.config.n_positions=1024"], "data.block_size"),
        (["model.init_from=/does/not/exist"], "model.init_from"),
        (["model.arch=gpt3"], "model.arch"),
        (["model.config={n_layer: many}"], "model.config"),
    ],
)
def test_bad_model_config_names_the_key(bpe, overrides, key):
    with pytest.raises(ConfigError) as info:
        build_model(tiny("clm", "gpt2", overrides), bpe)
    assert str(info.value).startswith(key)


def test_gpt2_cannot_do_mlm(wordpiece):
    with pytest.raises(ConfigError, match="masked-LM"):
        build_model(tiny("mlm", "gpt2"), wordpiece)


def test_load_model_errors(tmp_path, bpe):
    with pytest.raises(LmtoolError, match="not found"):
        load_model(tmp_path / "missing")
    build_model(tiny("clm", "gpt2"), bpe).save_pretrained(tmp_path)
    with pytest.raises(LmtoolError, match="tokenizer"):
        load_model(tmp_path)
