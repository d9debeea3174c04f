"""final/ holds the tokenizer's vocabulary, not the padded one the model trained with.

Models built from scratch (and embeddings resized for a tokenizer) get their vocabulary padded to a
multiple of model.pad_vocab_multiple, for faster matmuls. The padded rows stand for no token: kept in
final/, plain `transformers` would give them logits and could sample them. So final/ is written with the
embedding, output and output-bias rows past len(tokenizer) cut off and config.vocab_size set to match.
Checkpoints keep the padded rows (resume is exact); only the exported copy is cut, never the live model.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch


def vocab_parameter_names(model: torch.nn.Module) -> set[str]:
    """Every name (tied aliases included) of the input embeddings, the output embeddings and their bias:
    the tensors with a row per token. Found by identity, not shape: position embeddings may be as long."""
    out = model.get_output_embeddings()
    params = [model.get_input_embeddings().weight]
    if out is not None:
        params += [p for p in (out.weight, getattr(out, "bias", None)) if p is not None]
    wanted = {id(p) for p in params}
    return {name for name, p in model.named_parameters(remove_duplicate=False) if id(p) in wanted}


def trim_vocab(
    model: torch.nn.Module, state: dict[str, torch.Tensor], size: int
) -> tuple[dict[str, torch.Tensor], object]:
    """`state` (model's weights) and a copy of model's config cut to `size` vocabulary rows; both as
    they are when the model has no more rows than that. Tied tensors stay one tensor."""
    rows = getattr(model.config, "vocab_size", None)  # None: a config that keeps it elsewhere (left alone)
    if rows is None or rows <= size:
        return state, model.config
    names = vocab_parameter_names(model)
    cut: dict[int, torch.Tensor] = {}
    trimmed = {}
    for name, tensor in state.items():
        if name in names and tensor.shape[0] == rows:
            tensor = cut.setdefault(id(tensor), tensor[:size])
        trimmed[name] = tensor
    config = copy.deepcopy(model.config)
    config.vocab_size = size
    return trimmed, config


def save_final_model(model, tokenizer, directory: Path, state: dict[str, torch.Tensor] | None = None) -> None:
    """save_pretrained `model` (or its weights `state`, e.g. gathered from shards) with the tokenizer's
    vocabulary size into `directory`, and the tokenizer with it."""
    full = model.state_dict() if state is None else state
    trimmed, config = trim_vocab(model, full, len(tokenizer))
    model.save_pretrained(directory, state_dict=trimmed, safe_serialization=True)
    if config is not model.config:
        config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
