"""The ONNX graph of a model, traced by `torch.onnx.export(dynamo=True)` with dynamic batch and sequence axes.

Classifiers and taggers: inputs as the tokenizer names them (input_ids, attention_mask, token_type_ids
when it makes them), output `logits`. Causal LMs: optimum's decoder layout, so one graph serves the
prompt and every generated token: inputs input_ids, attention_mask (past + new tokens), position_ids and
`past_key_values.{i}.key/value` (batch, heads, past, head_dim; zero-length for the prompt), outputs
`logits` and `present.{i}.key/value`. A causal LM whose forward keeps no key/value cache (lmtool's LSTM)
gets a logits-only graph.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmtool.errors import LmtoolError

OPSET = 18
SAMPLE_TEXTS = [
    "The film was a gorgeous, witty surprise from start to finish.",
    "flat and tedious",
    "A king walked to the castle by the river.",
]


@dataclass
class Graph:
    """What was exported: the ONNX input and output names and, for causal LMs, the cache layout."""

    inputs: list[str]
    outputs: list[str]
    layers: int = 0  # causal LMs with a cache: key/value pairs in past_key_values
    cache_shape: list[int] = field(default_factory=list)  # (heads, head_dim) of one layer's keys


def token_inputs(model, tokenizer) -> list[str]:
    """The tokenizer's outputs that the model's forward takes."""
    accepted = inspect.signature(model.forward).parameters
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]
    made = tokenizer(SAMPLE_TEXTS[:1])
    return [n for n in names if n in made]


def export_encoder(model, tokenizer, file: Path) -> Graph:
    """A classifier or tagger: token inputs -> logits (batch, labels) or (batch, sequence, labels)."""
    names = token_inputs(model, tokenizer)
    enc = tokenizer(SAMPLE_TEXTS[:2], padding=True, return_tensors="pt")
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    _export(
        model,
        {n: enc[n] for n in names},
        {n: {0: batch, 1: sequence} for n in names},
        names,
        ["logits"],
        file,
    )
    return Graph(names, ["logits"])


class _CachedDecoder(torch.nn.Module):
    """A causal LM over flat key/value tensors: the cache object transformers builds is rebuilt inside."""

    def __init__(self, model, layers: int) -> None:
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, input_ids, attention_mask, position_ids, past: list[torch.Tensor]):
        from transformers import DynamicCache

        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(self.layers)]
        cache = DynamicCache(ddp_cache_data=pairs, config=self.model.config)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)  # fmt: skip
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


def cache_layout(model) -> tuple[int, list[int]] | None:
    """(layers, [heads, head_dim]) of the key/value cache the model's forward returns; None without one."""
    ids = torch.ones(1, 2, dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    layers = getattr(getattr(out, "past_key_values", None), "layers", None)
    if not layers or any(getattr(layer, "keys", None) is None for layer in layers):
        return None
    keys = layers[0].keys
    if keys.dim() != 4 or any(layer.keys.shape != keys.shape for layer in layers):
        return None  # sliding windows, mixed layer kinds: not the plain layout
    return len(layers), [keys.shape[1], keys.shape[3]]


def export_causal(model, file: Path) -> Graph:
    """A causal LM with its key/value cache as inputs and outputs, else (no cache) logits only."""
    layout = cache_layout(model)
    if layout is None or "position_ids" not in inspect.signature(model.forward).parameters:
        ids = torch.ones(2, 5, dtype=torch.long)
        names = ["input_ids", "attention_mask"]
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
        _export(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                {n: {0: batch, 1: sequence} for n in names}, names, ["logits"], file)  # fmt: skip
        return Graph(names, ["logits"])
    layers, (heads, head_dim) = layout
    pasts = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    presents = [name.replace("past_key_values", "present") for name in pasts]
    b, s, p = 2, 5, 3  # sizes of 0 or 1 would be fixed into the graph: all at least 2
    sample = {
        "input_ids": torch.ones(b, s, dtype=torch.long),
        "attention_mask": torch.ones(b, p + s, dtype=torch.long),
        "position_ids": torch.arange(p, p + s).expand(b, s),
        "past": [torch.zeros(b, heads, p, head_dim) for _ in pasts],
    }
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    past, total = torch.export.Dim("past_sequence"), torch.export.Dim("total_sequence")
    shapes = {
        "input_ids": {0: batch, 1: sequence},
        "attention_mask": {0: batch, 1: total},
        "position_ids": {0: batch, 1: sequence},
        "past": [{0: batch, 2: past}] * len(pasts),
    }
    names = ["input_ids", "attention_mask", "position_ids", *pasts]
    _export(_CachedDecoder(model, layers), sample, shapes, names, ["logits", *presents], file)
    return Graph(names, ["logits", *presents], layers, [heads, head_dim])


@contextmanager
def quiet_logger(name: str | None) -> Iterator[None]:
    """Only errors from the `name` logger (None: the root) meanwhile: the exporter's and the quantizer's
    notes (optional torchvision ops skipped, pre-processing advice) are no news to a user."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _large(module: torch.nn.Module) -> bool:
    """Past ~1.5 GB of weights (protobuf's limit is 2 GB) they go to model.onnx.data beside the graph."""
    return sum(p.numel() * p.element_size() for p in module.parameters()) > 1_500_000_000


def _export(module, sample: dict, shapes: dict, names: list[str], outputs: list[str], file: Path) -> None:
    """torch.onnx.export (the dynamo exporter) into `file`; exit 2 naming what it could not export."""
    try:
        with warnings.catch_warnings(), quiet_logger("torch.onnx"):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (),
                str(file),
                kwargs=sample,
                input_names=names,
                output_names=outputs,
                dynamic_shapes=shapes,
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
                external_data=_large(module),
            )
    except ImportError as exc:
        raise LmtoolError(
            f"ONNX export needs {exc.name or 'onnxscript'}: pip install 'lmtool[export]'"
        ) from None
    except Exception as exc:  # torch.export/onnxscript raise many kinds: each means this model does not trace
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise LmtoolError(f"torch.onnx.export could not export this model: {first[:300]}") from None
