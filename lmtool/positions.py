"""The positions a model is built with, and the context it was trained on.

Positions beyond `data.block_size` are never trained: a from-scratch model gets exactly the block
size (unless `model.config` sets its positions), and every trained model records the context it was
trained on in its config as `lmtool_block_size` (an extra config.json key, kept and ignored by plain
transformers), which `lmtool evaluate` takes as its default window.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

from transformers import PreTrainedConfig

from lmtool.config import Config, ConfigError

POSITION_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length")
TRAINED_CONTEXT_KEY = "lmtool_block_size"
# RoBERTa's scheme: position ids start after the padding id, so the table needs pad_token_id + 1 more rows.
PADDING_OFFSET_TYPES = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm", "data2vec-text",
     "xmod", "longformer", "mpnet", "esm", "ibert", "luke", "markuplm", "lilt"}
)  # fmt: skip


def scratch_positions(
    config_class: type[PreTrainedConfig], user: dict, pad_token_id: int | None, block_size: int
) -> dict:
    """Config settings giving a from-scratch model `block_size` positions; none when `model.config`
    (`user`) sets a positions key itself or the architecture has none (e.g. relative positions, the LSTM)."""
    defaults = config_class().to_dict()
    aliases = getattr(config_class, "attribute_map", {})
    if any(key in POSITION_KEYS or aliases.get(key) in POSITION_KEYS for key in user):
        return {}
    names = [name for name in POSITION_KEYS if isinstance(defaults.get(name), int)]
    offset = 0
    if defaults.get("model_type") in PADDING_OFFSET_TYPES:
        pad = pad_token_id if pad_token_id is not None else defaults.get("pad_token_id")
        offset = (pad or 0) + 1
    return {name: block_size + offset for name in names}


def max_positions(config: PreTrainedConfig) -> int | None:
    """The longest sequence the model can take (None: unbounded, e.g. the LSTM); the one place that
    knows which config keys hold positions."""
    for name in POSITION_KEYS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def trained_context(config: PreTrainedConfig) -> int | None:
    """The context the model was trained on: recorded by lmtool, else (any other model) all its positions."""
    recorded = getattr(config, TRAINED_CONTEXT_KEY, None)
    if isinstance(recorded, int) and recorded > 0:
        return recorded
    return max_positions(config)


def record_trained_context(config: PreTrainedConfig, block_size: int, *, from_scratch: bool) -> None:
    """Stored with the model: the block size, or for a model trained before (`model.init_from`) the
    longer of that and the context it already had."""
    earlier = None if from_scratch else trained_context(config)
    setattr(config, TRAINED_CONTEXT_KEY, max(block_size, earlier or 0))


def model_positions(config: Config) -> tuple[int | None, str]:
    """The longest sequence the configured model takes, and where that number comes from.
    Hub checkpoints are not looked up (we may be offline); None means unknown or unbounded, or a model
    built from scratch without positions in model.config: it gets data.block_size positions."""
    model = config.model
    limit = max_positions(SimpleNamespace(**model.config))
    if limit is not None:
        return limit, "model.config"
    if model.init_from is not None:
        config_file = Path(os.path.expanduser(model.init_from)) / "config.json"
        try:
            saved = json.loads(config_file.read_text())
        except (OSError, ValueError):
            return None, ""
        limit = max_positions(SimpleNamespace(**saved)) if isinstance(saved, dict) else None
        return limit, str(config_file)
    return None, ""


def check_fits(config: Config, limit: int | None, where: str) -> None:
    """data.block_size (fine-tuning: finetune.max_length) is at most the model's `limit` positions (read
    from `where`): the one check of the sequence length against the model."""
    key, length = "data.block_size", config.data.block_size
    if config.finetune is not None:
        key, length = "finetune.max_length", config.finetune.max_length
    if limit is not None and length > limit:
        raise ConfigError(
            key,
            f"is larger than the model's {limit} positions ({where})",
            value=length,
            hint=f"lower {key} or raise the model's positions in model.config",
        )
