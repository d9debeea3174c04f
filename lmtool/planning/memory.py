"""Memory per GPU while training, as lmtool trains: fp32 parameters under autocast, AdamW, the loss on
fp32 logits (eager) or fused into the compiled graph; the peak of live tensor bytes
(torch.cuda.max_memory_allocated), which is reached at one of three moments of a step.

Per GPU, with P parameters, world size W (FSDP shards by W, DDP replicates), e bytes per activation (2
under bf16/fp16, 4 in fp32), always held: weights 4P and AdamW's two moments 8P (each / W under FSDP);
under FSDP (W > 1) also the gathered parameters of two blocks (the one computing and the prefetched
one) and of the root (embeddings), in the compute dtype; under DDP (W > 1) its gradient buckets, 4P.

1. The loss's backward (the peak of most runs): every activation is kept and the loss's buffers are
   alive. Gradients are not there yet (set to None after each step), except those of the earlier
   micro-steps when accumulating (4P, or under FSDP the unsharded accumulation in the reduce dtype).
   - weight copies: under 16-bit autocast the 16-bit copies of the N matmul weights the backward keeps,
     eN (none under FSDP's mixed-precision policy, which gathers 16-bit weights itself);
   - activations per layer, counted as Korthikanti et al. 2022 (sec. 4.1) count them for s tokens per
     sequence, b sequences, hidden h, a heads, feed-forward f, r bytes for the residual stream (4 under
     autocast and fp32, e when FSDP's policy computes in 16 bits) and 1-byte dropout masks (mask = 1)
     only when dropout is on:  s·b·h·(e·(5 + sdpa + 1 + 2f/h) + r·2 + 2·mask)
     (attention: its input, q, k, v and the output projection's input, plus SDPA's own output (sdpa = 1)
     that its backward keeps; MLP: its input, the activation's input and output; the two layer-norm
     inputs are the residual stream) and, with eager attention only (SDPA keeps no s x s matrix), the
     scores a·s²·b·(4 + e' + mask): the fp32 softmax output, its e-byte copy (e' = e under 16-bit
     autocast or with dropout, else 0) and the dropout mask. Times L layers, plus s·b·h·(r + e) for the
     final norm's input and the head's; with gradient checkpointing only each layer's input (r·s·b·h);
   - logits, per logit of the s·b·V (V: the vocabulary, or a fine-tune head's outputs): eager, 12 bytes: three fp32 logit-sized buffers are alive together
     in the log-softmax's backward (its saved output, the gradient coming in and the one going out);
     compiled (the cross-entropy inside the graph, fused by inductor), e + e: the logits in the compute
     dtype and their gradient. A masked LM's eager loss sees only the fraction p of masked positions, and
     peaks in its forward instead: the full e-byte logits, the masked rows' copy (e), their fp32 copy
     (4, none in fp32) and their log-softmax (4), e + p·(e + c + 4) per logit.
2. With gradient checkpointing, the last layer's recomputation: the layers' inputs, one layer's
   activations and the output layer's gradient (4·V·h, all of them when accumulating).
3. The optimizer step: weights, moments and all the gradients (4P, / W under FSDP).

`total` is the largest of the three; the parts are those held at that moment (`peak_at`: loss,
recompute or optimizer).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lmtool.planning.model import ModelShape
from lmtool.tasks.linear_ce import CHUNK_ELEMENTS

FP32 = 4
ADAM_MOMENTS = 2
EAGER_LOSS_BYTES = 3 * FP32  # per logit: the saved log-softmax, its incoming and outgoing gradients


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU by component, held at the step's peak (`peak_at`); `total` is their sum."""

    weights: float
    gradients: float
    optimizer: float
    gathered: float
    weight_copies: float
    activations: float
    logits: float
    peak_at: str = "loss"

    @property
    def total(self) -> float:
        return sum(value for value in asdict(self).values() if not isinstance(value, str))

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def layer_activation_bytes(
    shape: ModelShape, seq: int, micro_batch: int, act_bytes: int, eager: bool, residual: int = FP32
) -> float:
    """Activations one transformer layer keeps for its backward pass."""
    mask = 1 if shape.dropout else 0
    tokens = seq * micro_batch
    elements = 5 + (0 if eager else 1) + 1 + 2 * shape.ffn / max(shape.hidden, 1)
    per_token = shape.hidden * (act_bytes * elements + residual * 2 + 2 * mask)
    if not eager:
        return tokens * per_token
    copy = act_bytes if act_bytes < FP32 or shape.dropout else 0
    return tokens * per_token + shape.heads * seq * seq * micro_batch * (FP32 + copy + mask)


def fused_loss_bytes(shape: ModelShape, tokens: int, act_bytes: int) -> float:
    """train.fused_loss (linear_ce): one chunk's fp32 logits and softmax, the hidden states' gradient and
    the head's fp32 gradient, computed in the forward; no full-vocabulary logits."""
    chunk = min(tokens * shape.vocab, CHUNK_ELEMENTS)
    return chunk * 2 * FP32 + tokens * shape.hidden * act_bytes + shape.vocab * shape.hidden * FP32


def logit_bytes(act_bytes: int, compiled: bool, masked: float | None) -> float:
    """Bytes per logit (token x vocabulary entry) alive at the loss's peak."""
    if compiled:
        return 2 * act_bytes
    if masked is None:
        return EAGER_LOSS_BYTES
    fp32_copy = FP32 if act_bytes < FP32 else 0
    return max(act_bytes + masked * (act_bytes + fp32_copy + FP32), masked * EAGER_LOSS_BYTES)


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
    compiled: bool = False,
    accumulation: int = 1,
    masked: float | None = None,
    reduce_bytes: int = FP32,
    fused_loss: bool = False,
) -> Memory:
    """The peak for one strategy (DDP or FSDP) with or without gradient checkpointing. `eager`: eager
    attention; `compiled`: train.compile on; `masked`: a masked LM's masking probability; `fused_loss`:
    train.fused_loss in use (never under FSDP on several GPUs)."""
    sharded = fsdp and world > 1
    shards = world if sharded else 1
    params = shape.parameters
    tokens = seq * micro_batch
    policy_cast = sharded and act_bytes < FP32  # FSDP's mixed precision: 16-bit weights, no autocast
    residual = act_bytes if policy_cast else FP32
    layer = layer_activation_bytes(shape, seq, micro_batch, act_bytes, eager, residual)
    kept = shape.layers * (residual * tokens * shape.hidden if checkpointing else layer)
    kept += tokens * shape.hidden * (residual + act_bytes)  # final norm's input, the head's input
    block_params = (params - shape.embedding_parameters) / max(shape.layers, 1)
    gathered = act_bytes * (2 * block_params + shape.embedding_parameters) if sharded else 0.0
    copies = act_bytes * shape.matmul_parameters if act_bytes < FP32 and not policy_cast else 0.0
    buckets = FP32 * params if world > 1 and not fsdp else 0.0
    all_gradients = FP32 * params / shards
    accumulated = (reduce_bytes * params if sharded else all_gradients) if accumulation > 1 else 0.0
    held = {"weights": FP32 * params / shards, "optimizer": ADAM_MOMENTS * FP32 * params / shards}
    if fused_loss and not sharded:
        logits = fused_loss_bytes(shape, tokens, act_bytes)
    else:
        logits = tokens * shape.outputs * logit_bytes(act_bytes, compiled, masked)
    phases = [
        Memory(**held, gradients=buckets + accumulated, gathered=gathered, weight_copies=copies,
               activations=kept, logits=logits),
        Memory(**held, gradients=buckets + all_gradients, gathered=0.0, weight_copies=0.0, activations=0.0,
               logits=0.0, peak_at="optimizer"),
    ]  # fmt: skip
    if checkpointing:
        head = accumulated or FP32 * shape.vocab * shape.hidden / shards
        phases.append(
            Memory(**held, gradients=buckets + head, gathered=gathered, weight_copies=copies,
                   activations=kept + layer, logits=0.0, peak_at="recompute")
        )  # fmt: skip
    return max(phases, key=lambda memory: memory.total)
