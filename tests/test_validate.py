"""Each config check runs once, as early as it can: the schema's at `load_config` (no model, no disk),
lmtool.validate's before a command does any work."""

from __future__ import annotations

import pytest

from lmtool.config import ConfigError, load_config
from lmtool.validate import validate
from tests.conftest import assert_usage_error
from tests.eval_fixtures import run_inproc
from tests.test_models import raw_config


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        (["train.async_checkpoint=true"], "train.async_checkpoint", "needs train.distributed.strategy fsdp"),
        (
            [
                "model.init_from=gpt2",
                "finetune={task: classification, lora: {}}",
                "train.distributed.strategy=fsdp",
            ],
            "train.distributed.strategy",
            "fsdp cannot checkpoint a LoRA model",
        ),
        (["model.resize_embeddings=true"], "model.resize_embeddings", "applies only with model.init_from"),
        (["model.config.layer_norm_epsilon=.nan"], "model.config.layer_norm_epsilon", "finite"),
    ],
)
def test_a_check_that_needs_no_model_fails_at_load_config(tmp_path, overrides, key, fragment):
    with pytest.raises(ConfigError, match=fragment) as caught:
        load_config(raw_config(tmp_path), overrides)
    assert caught.value.key == key
    assert str(caught.value).endswith(
        "[from --set]"
    )  # where the key was set, as for the schema's other errors


def test_a_strategy_that_cannot_work_exits_2_before_preprocessing(tmp_path):
    """train.async_checkpoint with ddp was refused by the checkpoint saver, after preprocessing."""
    result = run_inproc("pretrain", str(raw_config(tmp_path)), "--set", "train.async_checkpoint=true")
    assert_usage_error(result, "train.async_checkpoint", "fsdp")
    assert not (tmp_path / "processed").exists() and not (tmp_path / "run").exists()


def test_block_size_past_the_model_positions_is_refused_before_preprocessing(tmp_path):
    config = load_config(raw_config(tmp_path), ["model.config.n_positions=8"])
    with pytest.raises(ConfigError, match="larger than the model's 8 positions") as caught:
        validate(config, "preprocess")
    assert caught.value.key == "data.block_size"
    result = run_inproc("preprocess", str(raw_config(tmp_path)), "--set", "model.config.n_positions=8")
    assert_usage_error(result, "data.block_size", "8 positions")
    assert not (tmp_path / "processed").exists()
