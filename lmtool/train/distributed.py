"""Processes and ranks: torchrun / SLURM environment, process-group set-up and teardown, and the
wrapping strategy (DDP here; FSDP2 in `train.fsdp`, with the same methods).

Without a launcher everything degrades to one process and the collectives are no-ops.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from lmtool.config import DistributedConfig
from lmtool.errors import LmtoolError
from lmtool.runtime import Precision
from lmtool.train import launch_env
from lmtool.train.forward import TaskForward

if TYPE_CHECKING:
    from lmtool.train.fsdp import FSDPStrategy


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
    """Rank layout from torchrun (RANK/WORLD_SIZE/LOCAL_RANK) or from `srun` (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID,
    the rendezvous derived from the job: see launch_env). A partial environment is exit 2, not one process."""
    env = os.environ
    launch_env.check_torchrun(env)
    if "RANK" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        launch_env.from_slurm(env)
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]))
    return DistEnv()


def init(env: DistEnv, device: torch.device, timeout: float = 3600) -> None:
    """Join the process group: nccl for GPUs, gloo for CPUs. Outside torchrun (srun, or variables set by
    hand) the rendezvous store is made here so that an unreachable MASTER_ADDR or a missing rank is exit 2
    after LMTOOL_RENDEZVOUS_TIMEOUT seconds, while collectives wait up to `timeout` seconds
    (train.distributed.timeout)."""
    if not env.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict = {"device_id": device} if device.type == "cuda" else {}
    if "TORCHELASTIC_RUN_ID" not in os.environ:  # torchrun's agent already ran the rendezvous
        wait = launch_env.rendezvous_timeout()
        addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        try:
            kwargs["store"] = dist.TCPStore(
                addr, port, env.world_size, is_master=env.is_main, timeout=timedelta(seconds=wait)
            )
        except (RuntimeError, OSError) as exc:
            raise LmtoolError(
                f"rendezvous at MASTER_ADDR={addr} MASTER_PORT={port} failed within {wait:g} s "
                f"(rank {env.rank} of {env.world_size}): {str(exc).splitlines()[0] if str(exc) else exc!r}"
            ) from None
        kwargs |= {"rank": env.rank, "world_size": env.world_size}
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout), **kwargs)


_on_shutdown: list[Callable[[], None]] = []


def on_shutdown(hook: Callable[[], None]) -> None:
    """Run `hook` (on every rank) when the run ends in order, before the group is left: e.g. to complete a
    checkpoint whose shards were still being written in the background when all ranks stopped alike."""
    _on_shutdown.append(hook)


def forget_shutdown_hooks() -> None:
    """The run is over without an orderly shutdown (Ctrl-C, a rank that left at once): drop the hooks."""
    _on_shutdown.clear()


def shutdown() -> None:
    """Run the on_shutdown hooks, then leave the process group in order: a barrier first (without it gloo
    ranks sometimes abort at teardown)."""
    hooks = list(_on_shutdown)
    forget_shutdown_hooks()
    for hook in hooks:
        hook()
    if dist.is_initialized():
        gc.collect()  # FSDP's modules (reference cycles) release their process group before it is destroyed
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


class StopVote:
    """Whether any rank voted to stop this step (the vote is summed with the step's totals), read without
    draining the GPU: on CUDA each step's sum is copied to pinned host memory as it completes and read one
    step later, so every rank reads the same step's vote and all stop after the same step; elsewhere the
    collectives already block, so it is read at once."""

    def __init__(self, device: torch.device):
        self.lagged = device.type == "cuda"
        self.pending: tuple[torch.Tensor, torch.cuda.Event] | None = None

    def __call__(self, votes: torch.Tensor) -> bool:
        if not self.lagged:
            return bool(votes > 0)
        host = torch.empty((), dtype=votes.dtype, pin_memory=True)
        host.copy_(votes, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        previous, self.pending = self.pending, (host, event)
        if previous is None:
            return False
        previous[1].synchronize()  # recorded a step ago: long done, the queue behind it is not waited for
        return bool(previous[0] > 0)


class SingleProcess:
    """No wrapping, nothing to synchronise. `wrap` returns the module the loop calls, `TaskForward` (the
    model and the task's loss), compiled whole when asked: the loss is then fused with the logits."""

    sharded_checkpoints = False

    def __init__(self, precision: Precision):
        self.precision = precision

    def wrap(self, model: nn.Module, task, device: torch.device, compile: bool = False) -> nn.Module:
        forward = TaskForward(model, task)
        return torch.compile(forward) if compile else forward

    def no_sync(self, model: nn.Module, skip_sync: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.precision.autocast()

    def total_norm(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """The 2-norm of all gradients together, as a device tensor (no host sync)."""
        return torch.nn.utils.get_total_norm(grads, foreach=True)

    def scale_grads(self, grads: list[torch.Tensor], factor: torch.Tensor) -> None:
        torch._foreach_mul_(grads, factor)


class DDPStrategy(SingleProcess):
    """DistributedDataParallel: replicated weights, gradients all-reduced on the last micro-step only.
    Compiled outside DDP (torch.compile(DDP(...))), as torch recommends: the graph is split at the
    gradient buckets, so their all-reduce overlaps the backward."""

    def wrap(self, model: nn.Module, task, device: torch.device, compile: bool = False) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        ddp = DistributedDataParallel(TaskForward(model, task), device_ids=ids)
        return torch.compile(ddp) if compile else ddp

    def no_sync(self, model: nn.Module, skip_sync: bool) -> contextlib.AbstractContextManager:
        return model.no_sync() if skip_sync else contextlib.nullcontext()


def strategy_for(env: DistEnv, cfg: DistributedConfig, precision: Precision) -> SingleProcess | FSDPStrategy:
    """train.distributed.strategy: fsdp even on one process (its checkpoints are sharded); ddp on many."""
    if cfg.strategy == "fsdp":
        from lmtool.train.fsdp import FSDPStrategy

        return FSDPStrategy(cfg, precision, env.world_size)
    return DDPStrategy(precision) if env.enabled else SingleProcess(precision)
