"""Memory per GPU while training, as lmtool trains: fp32 parameters under autocast, AdamW.

Per GPU, with P parameters, world size W (FSDP shards by W, DDP replicates):
  weights 4P, gradients 4P, AdamW moments 8P (all fp32), each / W under FSDP,
  plus under FSDP the gathered fp32 parameters of two blocks (the one computing and the prefetched one);
  activations per layer, counted as Korthikanti et al. 2022 (sec. 4.1) count them for s tokens per
  sequence, b sequences, hidden h, a heads, feed-forward f, with e bytes per activation (2 under
  bf16/fp16 autocast, 4 in fp32) and 1-byte dropout masks only when dropout is on:
      s·b·h·(e·(6 + 2f/h) + 4·2 + 2·mask)  +  a·s²·b·(2e + mask)   [the last term only for eager attention:
      SDPA kernels keep no s×s scores]
  (the two layer-norm inputs are the fp32 residual stream, hence 4·2); with gradient checkpointing only
  each layer's fp32 input (4·s·b·h) is kept, plus one layer's activations while it is recomputed;
  the logits: s·b·V·(e + 4) (the logits the model returns and the fp32 log-softmax the loss keeps).
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
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.gathered + self.activations + self.logits

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def layer_activation_bytes(
    shape: ModelShape, seq: int, micro_batch: int, act_bytes: int, eager: bool
) -> float:
    """Activations one transformer layer keeps for its backward pass."""
    mask = 1 if shape.dropout else 0
    tokens = seq * micro_batch
    per_token = shape.hidden * (act_bytes * (6 + 2 * shape.ffn / max(shape.hidden, 1)) + FP32 * 2 + 2 * mask)
    scores = shape.heads * seq * seq * micro_batch * (2 * act_bytes + mask) if eager else 0
    return tokens * per_token + scores


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
    layer = layer_activation_bytes(shape, seq, micro_batch, act_bytes, eager)
    if checkpointing:
        activations = shape.layers * FP32 * seq * micro_batch * shape.hidden + layer
    else:
        activations = shape.layers * layer
    block_params = (params - shape.embedding_parameters) / max(shape.layers, 1)
    return Memory(
        weights=FP32 * params / shards,
        gradients=FP32 * params / shards,
        optimizer=ADAM_MOMENTS * FP32 * params / shards,
        gathered=2 * FP32 * block_params if fsdp and world > 1 else 0.0,
        activations=activations,
        logits=seq * micro_batch * shape.vocab * (act_bytes + FP32),
    )
