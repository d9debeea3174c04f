"""AdamW with the usual pretraining parameter groups, and the warmup + decay learning-rate schedule.

Each parameter group records its `lr_scale` (1 unless a per-parameter scale such as layer-wise
decay is given): the scheduler starts each group from train.lr x lr_scale, and a resumed run keeps
this config's scales.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from lmtool import console
from lmtool.config import TrainConfig


def param_groups(
    model: nn.Module, weight_decay: float, lr_scale: Callable[[str], float] | None = None
) -> list[dict]:
    """Weight decay on matmul weights only: not on biases, norm scales or embedding tables; frozen
    parameters (requires_grad False) left out; one decay and one no-decay group per `lr_scale` value
    (in order of first appearance).

    Decaying a LayerNorm gain or an embedding row pulls it toward zero for no regularising benefit
    (GPT-2/BERT practice); a weight tied to an embedding counts as the embedding.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    by_scale: dict[float, tuple[list, list]] = {}
    for name, param in model.named_parameters():  # a tied weight once, under its first name
        if not param.requires_grad:
            continue
        scale = 1.0 if lr_scale is None else float(lr_scale(name))
        if not scale > 0:
            raise ValueError(f"lr_scale({name!r}) = {scale}: a learning-rate scale must be positive")
        decay, no_decay = by_scale.setdefault(scale, ([], []))
        (no_decay if param.ndim < 2 or id(param) in embeddings else decay).append(param)
    groups = [
        group
        for scale, (decay, no_decay) in by_scale.items()
        for group in (
            {"params": decay, "weight_decay": weight_decay, "lr_scale": scale},
            {"params": no_decay, "weight_decay": 0.0, "lr_scale": scale},
        )
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    cfg: TrainConfig,
    device: torch.device,
    lr_scale: Callable[[str], float] | None = None,
) -> torch.optim.AdamW:
    """AdamW; the fused kernel on CUDA and CPU (one pass over each parameter instead of one per
    operation: ~10% of a CPU step for a 14M-parameter GPT-2), the foreach path elsewhere.
    `lr_scale(name)` multiplies the lr of each parameter (e.g. layer-wise decay)."""
    fused = device.type in ("cuda", "cpu")
    groups = param_groups(model, cfg.weight_decay, lr_scale)
    for group in groups:
        group["lr"] = cfg.lr * group["lr_scale"]
    return torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        eps=cfg.eps,
        fused=fused or None,
        foreach=None if fused else True,
    )


class WarmupDecay:
    """Learning-rate multiplier: linear warmup to 1, then cosine / linear decay to `floor` (or constant).

    A class rather than a closure so that LambdaLR can save its settings in the scheduler state.
    """

    def __init__(self, warmup_steps: int, total_steps: int, schedule: str, floor: float):
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.schedule = schedule
        self.floor = floor

    def __call__(self, step: int) -> float:
        # LambdaLR asks for step 0 before the first update; step s is the lr used by update s + 1.
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.schedule == "constant":
            return 1.0
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.schedule == "cosine" else 1.0 - progress
        return self.floor + (1.0 - self.floor) * shape


DEFAULT_WARMUP_STEPS = 100


def resolve_warmup(cfg: TrainConfig, total_steps: int) -> int:
    """Warmup steps: `warmup_ratio` of the run (rounded up, as the transformers Trainer does), else
    `warmup_steps`, else DEFAULT_WARMUP_STEPS; a warning when that leaves no step past the warmup."""
    if cfg.warmup_ratio is not None:
        warmup = math.ceil(cfg.warmup_ratio * total_steps)
    else:
        warmup = DEFAULT_WARMUP_STEPS if cfg.warmup_steps is None else cfg.warmup_steps
    if warmup >= total_steps:
        console.warning(
            f"warmup ({warmup} steps) is not shorter than the run ({total_steps} steps): the lr never reaches "
            "train.lr nor decays; lower train.warmup_steps or set train.warmup_ratio"
        )
    return warmup


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int, warmup: int, done_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule of this config, positioned after `done_steps` updates (a resumed run).

    Built from the config rather than loaded from a checkpoint, so that a resume with another
    `lr`, `max_steps` or warmup follows the new settings: the scheduler's saved state would bring back
    the old base lr and total steps.
    """
    fn = WarmupDecay(warmup, total_steps, cfg.schedule, cfg.min_lr_ratio)
    for group in optimizer.param_groups:
        group["initial_lr"] = cfg.lr * group.get("lr_scale", 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn, last_epoch=done_steps - 1)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a checkpoint's moments and step counts but keep this config's lr, betas, eps and weight decay
    (`load_state_dict` alone would bring back the param-group settings of the saved run)."""
    settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, own in zip(optimizer.param_groups, settings, strict=True):
        group.update(own)
