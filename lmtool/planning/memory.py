"""Memory per GPU while training, as lmtool trains: fp32 parameters under autocast, AdamW.

Per GPU, with P parameters, world size W (FSDP shards by W, DDP replicates):
  weights 4P, gradients 4P, AdamW moments 8P (all fp32), each / W under FSDP,
  plus under FSDP the gathered fp32 parameters of two blocks (the one computing and the prefetched one);
  under 16-bit autocast, the 16-bit copies of the N matmul weights autocast keeps for the backward: 2N;
  activations per layer, counted as Korthikanti et al. 2022 (sec. 4.1) count them for s tokens per
  sequence, b sequences, hidden h, a heads, feed-forward f, with e bytes per activation (2 under
  bf16/fp16 autocast, 4 in fp32) and 1-byte dropout masks (mask = 1) only when dropout is on:
      s·b·h·(e·(5 + sdpa + 1 + 2f/h) + 4·2 + 2·mask)
  (attention: its input, q, k, v and the output projection's input, plus SDPA's own output (sdpa = 1)
  that its backward keeps; MLP: its input, the activation's input and output; the two layer-norm
  inputs are the fp32 residual stream, hence 4·2) and, with eager attention only (SDPA keeps no s x s
  matrix), the scores a·s²·b·(4 + e' + mask): the fp32 softmax output, its e-byte copy (e' = e under
  16-bit autocast or with dropout, else 0) and the dropout mask. Times L layers, plus s·b·h·(4 + e)
  for the final norm's input and the head's; with gradient checkpointing each layer's fp32 input
  (4·s·b·h) instead, plus one layer's activations while it is recomputed;
  the logits: s·b·V·(e + 4) (the logits the model returns and the fp32 log-softmax the loss keeps; V is
  the vocabulary, or a fine-tune head's outputs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lmtool.planning.model import ModelShape

FP32 = 4
ADAM_MOMENTS = 2


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU by component; `total` is their sum."""

    weights: float
    gradients: float
    optimizer: float
    gathered: float
    weight_copies: float
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return sum(asdict(self).values())

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def layer_activation_bytes(
    shape: ModelShape, seq: int, micro_batch: int, act_bytes: int, eager: bool
) -> float:
    """Activations one transformer layer keeps for its backward pass."""
    mask = 1 if shape.dropout else 0
    tokens = seq * micro_batch
    elements = 5 + (0 if eager else 1) + 1 + 2 * shape.ffn / max(shape.hidden, 1)
    per_token = shape.hidden * (act_bytes * elements + FP32 * 2 + 2 * mask)
    if not eager:
        return tokens * per_token
    copy = act_bytes if act_bytes < FP32 or shape.dropout else 0
    return tokens * per_token + shape.heads * seq * seq * micro_batch * (FP32 + copy + mask)


def memory_per_gpu(
    shape: ModelShape,
    *,
    seq: int,
    micro_batch: int,
    act_bytes: int,
    world: int,
    fsdp: bool,
    checkpointing: bool,
    eager: bool,
) -> Memory:
    """The estimate for one strategy (DDP or FSDP) with or without gradient checkpointing."""
    shards = world if fsdp else 1
    params = shape.parameters
    tokens = seq * micro_batch
    layer = layer_activation_bytes(shape, seq, micro_batch, act_bytes, eager)
    if checkpointing:
        activations = shape.layers * FP32 * tokens * shape.hidden + layer
    else:
        activations = shape.layers * layer
    activations += tokens * shape.hidden * (FP32 + act_bytes)  # final norm's input, the head's input
    block_params = (params - shape.embedding_parameters) / max(shape.layers, 1)
    return Memory(
        weights=FP32 * params / shards,
        gradients=FP32 * params / shards,
        optimizer=ADAM_MOMENTS * FP32 * params / shards,
        gathered=2 * FP32 * block_params if fsdp and world > 1 else 0.0,
        weight_copies=act_bytes * shape.matmul_parameters if act_bytes < FP32 else 0.0,
        activations=activations,
        logits=tokens * shape.outputs * (act_bytes + FP32),
    )
