"""From scratch, a model has exactly the positions it trains on; every model records its trained context."""

from __future__ import annotations

import json

import pytest
import torch

from lmtool.config import load_config
from lmtool.models import build_model
from lmtool.positions import max_positions, trained_context
from tests.eval_fixtures import _bpe_tokenizer, save_causal_model


def config(tmp_path, block_size: int, **model):
    text = {"run": {"name": "t"}, "data": {"block_size": block_size}, "model": model}
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(text), encoding="utf-8")
    return load_config(path)


SMALL = {"n_layer": 1, "n_embd": 32, "n_head": 2}


def test_from_scratch_positions_are_the_block_size(tmp_path):
    model = build_model(config(tmp_path, 48, arch="gpt2", config=SMALL), _bpe_tokenizer())
    assert max_positions(model.config) == 48  # not GPT-2's 1024, never trained beyond 48
    assert trained_context(model.config) == 48


def test_preprocess_takes_any_block_size_for_a_model_built_from_scratch(tmp_path):
    """GPT-2 defaults to 1024 positions, but from scratch it gets the block size: 2048 is no error."""
    from lmtool.positions import model_positions

    assert model_positions(config(tmp_path, 2048, arch="gpt2", config=SMALL))[0] is None
    assert (
        model_positions(config(tmp_path, 2048, arch="gpt2", config={**SMALL, "n_positions": 1024}))[0] == 1024
    )


def test_model_config_positions_win_and_the_trained_context_is_recorded(tmp_path):
    cfg = config(tmp_path, 48, arch="gpt2", config={**SMALL, "n_positions": 96})
    model = build_model(cfg, _bpe_tokenizer())
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text(encoding="utf-8"))
    assert (saved["n_positions"], saved["lmtool_block_size"]) == (96, 48)


def test_roberta_positions_leave_room_for_its_padding_offset(tmp_path):
    cfg = config(tmp_path, 32, arch="roberta", config={"num_hidden_layers": 1, "hidden_size": 32,
                 "num_attention_heads": 2, "intermediate_size": 64})  # fmt: skip
    cfg.data.objective = "mlm"
    tokenizer = _bpe_tokenizer()
    model = build_model(cfg, tokenizer)
    ids = torch.full((1, 32), 5)
    assert model(input_ids=ids).logits.shape[1] == 32  # position ids run up to 32 + pad_token_id
    assert trained_context(model.config) == 32


def test_fine_tuned_model_keeps_the_context_it_already_had(tmp_path):
    source = save_causal_model(tmp_path / "pretrained")  # 64 positions, trained elsewhere
    model = build_model(config(tmp_path, 16, init_from=str(source)), _bpe_tokenizer())
    assert trained_context(model.config) == 64


@pytest.mark.parametrize("block_size", [16, 32])
def test_continued_lmtool_model_records_the_longer_context(tmp_path, block_size):
    source = save_causal_model(tmp_path / "pretrained")
    cfg_file = source / "config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "lmtool_block_size": 24}))
    model = build_model(config(tmp_path, block_size, init_from=str(source)), _bpe_tokenizer())
    assert trained_context(model.config) == max(24, block_size)
