"""A checkpoint's embeddings belong to its tokenizer, so `model.init_from` trains only with that tokenizer.

Row 1037 of BERT's embeddings is "a" to BERT; under a newly trained tokenizer id 1037 is some other
token, and training would go on with every input silently scrambled. With init_from the run's
tokenizer must have the checkpoint's vocabulary, unless `model.resize_embeddings` asks for new
embeddings: then the tokens both vocabularies share keep their learned vectors and the rest start
fresh, drawn around the checkpoint's embeddings.
"""

from __future__ import annotations

import os

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lmtool import console
from lmtool.config import Config, ConfigError
from lmtool.hub import require_hub, require_model_source
from lmtool.model_dir import TOKENIZER_FILES, refuse_not_a_model


def check_init_from(config: Config) -> None:
    """Before any preprocessing: model.init_from can be loaded, and the configured tokenizer can be its own."""
    model, tok = config.model, config.tokenizer
    if model.init_from is None:  # resize_embeddings without it: refused by the config's schema
        return
    name = os.path.expanduser(model.init_from)
    require_model_source(model.init_from, "model.init_from")
    refuse_not_a_model(name, "model.init_from")
    if model.resize_embeddings:
        return
    if tok.path is None:
        size = tok.train.vocab_size if tok.train is not None else 0
        raise _mismatch(
            config, checkpoint_tokenizer(config), f"tokenizer.train makes a new {size:,}-token one"
        )
    if os.path.realpath(os.path.expanduser(tok.path)) == os.path.realpath(
        os.path.expanduser(model.init_from)
    ):
        return
    require_hub(os.path.expanduser(tok.path), "tokenizer.path")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            os.path.expanduser(tok.path), trust_remote_code=tok.trust_remote_code
        )
    except Exception:  # noqa: BLE001 - an unloadable tokenizer.path is reported where preprocess loads it
        return
    check_pairing(config, tokenizer, f"tokenizer.path {tok.path}")


def check_pairing(config: Config, tokenizer: PreTrainedTokenizerBase, label: str) -> None:
    """Refuse `tokenizer` (described by `label`) unless it is model.init_from's own."""
    if config.model.init_from is None or config.model.resize_embeddings:
        return
    reference = checkpoint_tokenizer(config)
    if reference is None:
        rows = _checkpoint_vocab_size(config)
        if rows is not None and len(tokenizer) > rows:
            raise _mismatch(config, None, f"{label} has {len(tokenizer):,} tokens")
        return  # nothing saved to compare with: ids within the embeddings are taken on trust
    if reference.get_vocab() != tokenizer.get_vocab():
        raise _mismatch(config, reference, f"{label} has {len(tokenizer):,} tokens")


def checkpoint_tokenizer(config: Config) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved with model.init_from, or None when it has none."""
    name = os.path.expanduser(config.model.init_from or "")
    require_hub(name, "model.init_from")
    if os.path.isdir(name) and not any(os.path.exists(os.path.join(name, f)) for f in TOKENIZER_FILES):
        return None
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=config.model.trust_remote_code)
    except Exception:  # noqa: BLE001 - transformers raises OSError/ValueError/... when there is none
        return None


def _checkpoint_vocab_size(config: Config) -> int | None:
    try:
        saved = AutoConfig.from_pretrained(
            os.path.expanduser(config.model.init_from or ""), trust_remote_code=config.model.trust_remote_code
        )
    except Exception:  # noqa: BLE001 - the model load that follows reports an unreadable checkpoint
        return None
    return getattr(saved.get_text_config(), "vocab_size", None)


def _mismatch(config: Config, reference: PreTrainedTokenizerBase | None, other: str) -> ConfigError:
    init_from = config.model.init_from
    if reference is None:
        rows = _checkpoint_vocab_size(config)
        own = (
            f"has no tokenizer saved with it ({rows:,} embedding rows)"
            if rows
            else "has no tokenizer saved with it"
        )
        problem = f"{own}, and {other}: token ids of another tokenizer than its own mean something else to it"
        use = "set tokenizer.path to the tokenizer it was trained with"
    else:
        problem = (
            f"was trained with its own {len(reference):,}-token vocabulary, and {other}: "
            "every token id would mean something else to the model"
        )
        use = f"use the checkpoint's tokenizer (tokenizer.path: {init_from})"
    return ConfigError(
        "model.init_from",
        problem,
        value=init_from,
        hint=f"{use} or set model.resize_embeddings: true to give the model new embeddings for this tokenizer",
    )


def new_embeddings(model: PreTrainedModel, config: Config, tokenizer: PreTrainedTokenizerBase) -> None:
    """Resize the checkpoint's embeddings (and untied output layer) to `tokenizer`: rows of tokens
    the checkpoint's tokenizer also has move to their new ids, the others start fresh (seeded)."""
    reference = checkpoint_tokenizer(config)
    old_vocab = reference.get_vocab() if reference is not None else {}
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    old_in = inp.weight.detach().clone()
    old_out = None if out is None or out.weight is inp.weight else out.weight.detach().clone()
    old_bias = _bias(out)
    old_bias = None if old_bias is None else old_bias.detach().clone()
    model.resize_token_embeddings(
        len(tokenizer), pad_to_multiple_of=config.model.pad_vocab_multiple, mean_resizing=False
    )
    rows = old_in.shape[0]
    kept = [(new, old_vocab[t]) for t, new in tokenizer.get_vocab().items() if old_vocab.get(t, rows) < rows]
    moves = (
        torch.tensor([n for n, _ in kept], dtype=torch.long),
        torch.tensor([o for _, o in kept], dtype=torch.long),
    )
    generator = torch.Generator().manual_seed(config.run.seed)
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    with torch.no_grad():
        for param, before in ((inp.weight, old_in), (None if old_out is None else out.weight, old_out)):
            if param is not None:
                fresh = torch.randn(param.shape, generator=generator) * before.std(0) + before.mean(0)
                param.copy_(_moved(fresh, before, moves))
        if old_bias is not None and _bias(out) is not None:
            _bias(out).copy_(_moved(torch.full_like(_bias(out), float(old_bias.mean())), old_bias, moves))
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            setattr(model.config, name, value)
            if getattr(model, "generation_config", None) is not None:
                setattr(model.generation_config, name, value)
    console.info(
        f"model.resize_embeddings: new embeddings for this run's {len(tokenizer):,}-token tokenizer; "
        f"{len(kept):,} of its tokens keep their vectors from {config.model.init_from}, "
        f"{len(tokenizer) - len(kept):,} start fresh"
    )


def _moved(
    fresh: torch.Tensor, before: torch.Tensor, moves: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """`fresh` with the rows of shared tokens taken from `before` (new ids <- old ids)."""
    new_ids, old_ids = moves
    fresh[new_ids] = before[old_ids].to(fresh.dtype)
    return fresh


def _bias(layer: torch.nn.Module | None) -> torch.Tensor | None:
    bias = getattr(layer, "bias", None)
    return bias if isinstance(bias, torch.Tensor) else None
