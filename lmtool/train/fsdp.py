"""FSDP2 (`train.distributed.strategy: fsdp`): weights, gradients and optimizer state sharded across ranks
with `torch.distributed.fsdp.fully_shard`, one unit per transformer block plus the root.

The same interface as `distributed.DDPStrategy`, so the loop does not branch on the strategy: `wrap`,
`no_sync`, `autocast` (none when the shards hold bf16 parameters: FSDP's mixed-precision policy casts) and
`sharded_checkpoints` (the engine then saves with torch.distributed.checkpoint, see `train.sharded`).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from lmtool import console
from lmtool.config import ConfigError
from lmtool.config.train import DistributedConfig
from lmtool.runtime import Precision
from lmtool.train.forward import TaskForward

_REDUCE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class FSDPStrategy:
    """fully_shard per block (the classes the model names in `_no_split_modules`), then the root, on a
    1-D mesh over all ranks. On one process there is nothing to shard: the model stays whole, and
    checkpoints are still sharded (DCP) ones, so a run can move between 1 and N ranks."""

    sharded_checkpoints = True

    def __init__(self, cfg: DistributedConfig, precision: Precision, world_size: int):
        if precision.needs_scaler:
            raise ConfigError(
                "train.precision",
                "fp16 is not supported with train.distributed.strategy fsdp",
                value=precision.name,
                hint="use bf16 (or fp32)",
            )
        self.cfg, self.precision, self.world_size = cfg, precision, world_size
        self.cast_by_policy = world_size > 1 and precision.autocast_dtype is not None

    def wrap(self, model: nn.Module, task, device: torch.device, compile: bool = False) -> nn.Module:
        """Shard `model` in place (gradient checkpointing must already be on); return it with the task's loss
        (`TaskForward`), compiled after sharding when asked. The model stays the root unit, so evaluation
        calls it directly."""
        if self.world_size > 1:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mesh = init_device_mesh(device.type, (self.world_size,))
            policy = MixedPrecisionPolicy()
            if self.cast_by_policy:
                policy = MixedPrecisionPolicy(
                    param_dtype=self.precision.autocast_dtype,
                    reduce_dtype=_REDUCE_DTYPES[self.cfg.reduce_dtype],
                )
            kwargs = {
                "mesh": mesh,
                "reshard_after_forward": self.cfg.reshard_after_forward,
                "mp_policy": policy,
            }
            units = shard_units(model)
            if not units:
                console.info(
                    f"fsdp: {type(model).__name__} names no transformer block (_no_split_modules): "
                    "one shard unit for the whole model"
                )
            distinct = len(list(model.parameters()))  # a tied weight counts once
            for unit in units:
                fully_shard(unit, **kwargs)
            fully_shard(model, **kwargs)  # the root: tied weights (embeddings, LM head) stay one parameter
            if len(list(model.parameters())) != distinct:
                raise RuntimeError("fully_shard untied a tied weight")
        self.root = model
        forward = TaskForward(model, task)
        return torch.compile(forward) if compile else forward

    def no_sync(self, model: nn.Module, skip_sync: bool) -> contextlib.AbstractContextManager:
        """FSDP2's no_sync: no reduce-scatter on the micro-steps before the last one."""
        if self.world_size > 1:
            self.root.set_requires_gradient_sync(not skip_sync)
        return contextlib.nullcontext()

    def total_norm(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """The 2-norm over every rank's gradient shards, as a plain device tensor (an all-reduce, no host sync)."""
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        full = getattr(norm, "full_tensor", None)
        return full() if full is not None else norm

    def scale_grads(self, grads: list[torch.Tensor], factor: torch.Tensor) -> None:
        """The gradient shards times a plain tensor, taken as replicated on every rank."""
        from torch.distributed.tensor.experimental import implicit_replication

        with implicit_replication():
            torch._foreach_mul_(grads, factor)

    def autocast(self) -> contextlib.AbstractContextManager:
        """None when the mixed-precision policy already computes in bf16 (the loss is taken in fp32)."""
        return contextlib.nullcontext() if self.cast_by_policy else self.precision.autocast()


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The submodules named in `_no_split_modules`, except those holding a weight tied to one outside them
    (BERT's embeddings, tied to the MLM decoder): a tied weight must stay one parameter, in the root's unit."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    uses: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        uses[id(param)] = uses.get(id(param), 0) + 1
    tied = {key for key, count in uses.items() if count > 1}
    return [
        module
        for module in model.modules()
        if type(module).__name__ in names
        and module is not model
        and not any(id(p) in tied for p in module.parameters())
    ]
