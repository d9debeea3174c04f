"""Processes and ranks: torchrun / SLURM environment, process-group set-up and teardown, and the
wrapping strategy (DDP today; an FSDP strategy with the same three methods can be slotted in).

Without a launcher everything degrades to one process and the collectives are no-ops.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from lmtool.errors import LmtoolError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def read_env() -> DistEnv:
    """Rank layout from torchrun (RANK/WORLD_SIZE/LOCAL_RANK) or from `srun` (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        if "MASTER_ADDR" not in env:
            raise LmtoolError(
                "under srun with several tasks, set MASTER_ADDR and MASTER_PORT (see scripts/slurm/) or use torchrun"
            )
        env.setdefault("MASTER_PORT", "29500")
        env["RANK"], env["WORLD_SIZE"] = env["SLURM_PROCID"], env["SLURM_NTASKS"]
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]))
    return DistEnv()


def init(env: DistEnv, device: torch.device) -> None:
    """Join the process group: nccl for GPUs, gloo for CPUs."""
    if env.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=60), **kwargs)


def shutdown() -> None:
    """Leave the process group in order: a barrier first (without it gloo ranks sometimes abort at teardown)."""
    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 keeps long loss sums exact; MPS has no float64, so float32 there (a step's sums are short)."""
    return torch.float32 if device.type == "mps" else torch.float64


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when the flag is set on any rank (how all ranks agree to stop)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class SingleProcess:
    """No wrapping, nothing to synchronise."""

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        return model

    def no_sync(self, model: nn.Module, skip_sync: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


class DDPStrategy:
    """DistributedDataParallel: replicated weights, gradients all-reduced on the last micro-step only."""

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def no_sync(self, model: nn.Module, skip_sync: bool) -> contextlib.AbstractContextManager:
        return model.no_sync() if skip_sync else contextlib.nullcontext()


def strategy_for(env: DistEnv) -> SingleProcess | DDPStrategy:
    return DDPStrategy() if env.enabled else SingleProcess()
