"""Cross-entropy of a linear head (the LM head) without the full-vocabulary logits.

`hidden @ weight.T` for a whole batch is tokens x vocabulary: 12 x 1024 x 50,304 values for GPT-2 124M,
2.5 GB in fp32, and an eager loss keeps several such buffers alive at once. Here the rows are taken in
chunks: each chunk's logits give its loss and, at once, its share of the gradients of the hidden states
and the weight (softmax minus one-hot times the chunk), so no more than one chunk's logits ever exist and
nothing is recomputed in the backward. On CUDA, liger-kernel's Triton kernel does the same when the
optional `fused` extra is installed.
"""

from __future__ import annotations

import functools

import torch

IGNORE = -100
CHUNK_ELEMENTS = 1 << 25  # logits per chunk (128 MiB in fp32)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Summed NLL of `hidden @ weight.T` against `targets` (IGNORE skipped); gradients computed in forward."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        rows = max(CHUNK_ELEMENTS // weight.size(0), 1)
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        )
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.size(0), rows):
            h, t = hidden[start : start + rows], targets[start : start + rows]
            logits = (h @ weight.to(h.dtype).T).float()
            valid = t != IGNORE
            picked = t.clamp(min=0).unsqueeze(1)
            lse = torch.logsumexp(logits, dim=-1)
            total += ((lse - logits.gather(1, picked).squeeze(1)) * valid).sum()
            if not (need_hidden or need_weight):
                continue
            grad = torch.exp(logits.sub_(lse.unsqueeze(1)))  # softmax, in place of the logits
            grad.scatter_add_(1, picked, torch.full_like(picked, -1, dtype=grad.dtype))
            grad = (grad * valid.unsqueeze(1)).to(h.dtype)
            if need_hidden:
                grad_hidden[start : start + rows] = grad @ weight.to(h.dtype)
            if need_weight:
                grad_weight += (grad.T @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_total.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_total).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None


@torch.compiler.disable  # a Python loop over chunks: left to run eagerly between compiled graphs
def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed fp32 NLL of the head `weight` (vocabulary x hidden) on `hidden` (..., hidden) for `targets`
    (...), positions with IGNORE left out: what `F.cross_entropy(hidden @ weight.T, targets, reduction="sum")`
    gives, without its logits."""
    hidden = hidden.reshape(-1, hidden.size(-1))
    targets = targets.reshape(-1)
    if hidden.is_cuda:
        fused = _liger()
        if fused is not None:
            return fused(weight.to(hidden.dtype), hidden, targets).float()
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets)


def liger_available() -> bool:
    return _liger() is not None


@functools.cache
def _liger():
    """liger-kernel's fused linear cross-entropy (sum over the targets), if installed; looked up once."""
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except Exception:  # noqa: BLE001 - not installed, or no Triton/GPU for it: the chunked PyTorch path
        return None
    return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE, reduction="sum")


def head_weight(model: torch.nn.Module) -> torch.Tensor | None:
    """The LM head's weight when the model's logits are exactly `model.base_model(...)[0] @ weight.T` (checked
    on a probe, so a head that scales, soft-caps or adds a bias is never fused), else None."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    body = getattr(model, "base_model", None)
    if not isinstance(head, torch.nn.Linear) or head.bias is not None or body is None or body is model:
        return None
    probe = torch.tensor([[1, 2, 3]], device=head.weight.device)
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=probe).logits
            hidden = body(input_ids=probe)[0]
        fused = hidden.shape[:-1] == logits.shape[:-1] and torch.allclose(
            hidden @ head.weight.T, logits, rtol=1e-4, atol=1e-5
        )
    except Exception:  # noqa: BLE001 - a model whose body cannot be called alone is not fused
        fused = False
    finally:
        model.train(training)
    return head.weight if fused else None
