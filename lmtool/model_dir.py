"""A local model directory checked whole before anything loads it, so a broken one is exit 2 naming what is wrong.

transformers reads a directory piece by piece and fills gaps silently (version 5 builds an empty
5-token tokenizer where the tokenizer files are missing, so every word becomes [UNK] and predictions
are garbage) or fails deep inside (a truncated model.safetensors, a LoRA adapter's or a sharded
training checkpoint's "Unrecognized model"). Here: the directory is a model (not an adapter or a
sharded checkpoint), its config.json reads, its weights are there and readable (safetensors: whole),
its tokenizer files are there; once loaded, the tokenizer's vocabulary fits the model's embeddings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from lmtool.errors import LmtoolError, first_line

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
LORA_NOTE = "LORA_ADAPTER.txt"  # written next to an unmerged LoRA adapter (lmtool.finetune.lora)
_ADAPTER_CONFIG = "adapter_config.json"


def refuse_not_a_model(path: str, key: str | None = None) -> None:
    """A sharded (fsdp) training checkpoint or a LoRA adapter is no model transformers can load: say which
    it is and what to use instead. `key` names the setting the path came from (e.g. model.init_from)."""
    where = f"{key}: " if key else ""
    has_config = os.path.exists(os.path.join(path, "config.json"))
    if os.path.isdir(os.path.join(path, "sharded")) and not has_config:
        raise LmtoolError(
            f"{where}{path} is a sharded (train.distributed.strategy fsdp) training checkpoint, not a model "
            "directory: use the run's final/ directory (a plain transformers model)"
        )
    note = os.path.exists(os.path.join(path, LORA_NOTE))
    if note or (os.path.exists(os.path.join(path, _ADAPTER_CONFIG)) and not has_config):
        parent = Path(os.path.abspath(path)).parent
        if (parent / "config.json").is_file() and not note:
            use = f"use its merged parent {parent}/ (the whole model, which lmtool finetune saved with it)"
        else:
            use = (
                "load it with peft, or fine-tune with finetune.lora.merge: true, whose final/ is a whole "
                "model (final/adapter/ keeps the adapter)"
            )
        what = LORA_NOTE if note else _ADAPTER_CONFIG
        raise LmtoolError(f"{where}{path} is a LoRA adapter ({what}), not a whole model: {use}")


def check_model_dir(path: str) -> None:
    """Exit 2 naming `path` and what is missing or broken; a hub name (no local directory) is not checked."""
    if not os.path.isdir(path):
        return
    refuse_not_a_model(path)
    config = Path(path) / "config.json"
    if not config.is_file():
        raise LmtoolError(f"{path} is not a model directory: it has no config.json")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LmtoolError(f"{config} is not readable JSON: {first_line(exc)}") from None
    for weights in _weight_files(Path(path)):
        if weights.suffix == ".safetensors":
            check_safetensors(weights)
        else:
            _check_readable(weights)
    if not any(os.path.exists(os.path.join(path, name)) for name in TOKENIZER_FILES):
        raise LmtoolError(
            f"{path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): save the model's own with it"
        )


def saved_config(path: str, *, whole: bool = True) -> PreTrainedConfig:
    """The config of model directory `path`, read after the directory is checked (`whole`: every file,
    see check_model_dir); exit 2 naming what is wrong."""
    if not os.path.isdir(path):
        raise LmtoolError(f"model directory not found: {path}")
    if whole:
        check_model_dir(path)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise LmtoolError(f"{path} is not a model directory: {first_line(exc)}") from None


def check_vocab_fits(path: str, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    """A token id past the embedding table would fail, or read another token's row: the tokenizer is
    not the model's own."""
    try:
        embeddings = model.get_input_embeddings()
    except (NotImplementedError, AttributeError):  # remote code without the accessor: nothing to compare
        return
    rows = getattr(getattr(embeddings, "weight", None), "shape", (None,))[0]
    if isinstance(rows, int) and len(tokenizer) > rows:
        raise LmtoolError(
            f"{path}: its tokenizer has {len(tokenizer):,} tokens but the model's embeddings {rows:,} rows: "
            "the tokenizer is not the model's own (save the one it was trained with)"
        )


def check_safetensors(file: Path) -> None:
    """The header reads and the tensors it lists end where the file does (a cut or padded file does not)."""
    try:
        size = file.stat().st_size
        with file.open("rb") as stream:
            length = int.from_bytes(stream.read(8), "little")
            if size < 8 or length > size - 8:
                raise ValueError(f"{size:,} bytes, too short for its header")
            header = json.loads(stream.read(length))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except OSError as exc:
        raise LmtoolError(f"cannot read {file}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise LmtoolError(
            f"{file} is truncated or corrupt ({first_line(exc)}): save the model again"
        ) from None
    if 8 + length + end != size:
        raise LmtoolError(
            f"{file} is truncated or corrupt ({size:,} bytes, its header lists {8 + length + end:,}): "
            "save the model again"
        )


def _weight_files(path: Path) -> list[Path]:
    """The files transformers reads, in its order of preference: safetensors, else a pickle; one file,
    else the shards its index lists (each must be there)."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):  # fmt: skip
        if (path / index).is_file():
            try:
                names = sorted(
                    set(json.loads((path / index).read_text(encoding="utf-8"))["weight_map"].values())
                )
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise LmtoolError(
                    f"{path / index} is not a readable weight index: {first_line(exc)}"
                ) from None
            missing = [name for name in names if not (path / name).is_file()]
            if missing:
                raise LmtoolError(f"{path} lacks {missing[0]}, a weight shard its {index} lists")
            return [path / name for name in names]
        if (path / single).is_file():
            return [path / single]
    raise LmtoolError(f"{path} has no weights (none of {', '.join(WEIGHT_FILES)})")


def _check_readable(file: Path) -> None:
    try:
        with file.open("rb") as stream:
            stream.read(1)
    except OSError as exc:
        raise LmtoolError(f"cannot read {file}: {exc.strerror or exc}") from None
