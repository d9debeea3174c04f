"""Sharded checkpoints (train.distributed.strategy fsdp) with torch.distributed.checkpoint (DCP).

Each rank writes its shards of the model and optimizer state into `<checkpoint>/sharded/` (DCP files plus
`.metadata`, which DCP's coordinator writes once every rank has written its part). The state dicts come
from `get_state_dict` (parameter names, not positions), and DCP reshards on load, so a run resumes on
another number of ranks, or on one process into a model that is not sharded at all.
"""

from __future__ import annotations

import warnings
from concurrent.futures import Future
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

SHARDED = "sharded"


def is_sharded(path: Path) -> bool:
    return (Path(path) / SHARDED / ".metadata").is_file()


def save(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    directory: Path,
    *,
    background: bool = False,
    process_group: dist.ProcessGroup | None = None,
) -> Future | None:
    """All ranks: write this rank's shards into `directory`. With `background` the state is first staged
    in memory and written by a thread: the returned future is done once every rank has written."""
    state = _state(model, optimizer)
    if background:
        return dcp.async_save(
            state, checkpoint_id=str(directory), process_group=process_group, no_dist=_no_dist()
        )
    dcp.save(state, checkpoint_id=str(directory), no_dist=_no_dist())
    return None


def load(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """All ranks: model weights and optimizer moments of checkpoint `path`, resharded to this run's ranks."""
    state = _state(model, optimizer)
    dcp.load(state, checkpoint_id=str(Path(path) / SHARDED), no_dist=_no_dist())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def load_full(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path, optimizer_state: dict
) -> None:
    """All ranks: a full (ddp) checkpoint's safetensors and optimizer state into a sharded model. The saved
    optimizer state numbers the parameters in param-group order, which this run's optimizer shares (the same
    model and grouping): the numbers are turned into the parameter names that set_state_dict reads."""
    weights: dict[str, torch.Tensor] = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        weights.update(load_file(file))
    names = {id(param): name for name, param in model.named_parameters()}
    order = [names[id(param)] for group in optimizer.param_groups for param in group["params"]]
    by_name = {
        "state": {order[index]: state for index, state in optimizer_state["state"].items()},
        "param_groups": [
            {**group, "params": [order[index] for index in group["params"]]}
            for group in optimizer_state["param_groups"]
        ],
    }
    options = StateDictOptions(full_state_dict=True, strict=False)  # strict: tied weights are saved once
    set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=by_name, options=options)


def load_model(model: torch.nn.Module, path: Path) -> None:
    """All ranks: only the weights of checkpoint `path` (final_model best)."""
    state = {"model": get_model_state_dict(model)}
    dcp.load(state, checkpoint_id=str(Path(path) / SHARDED), no_dist=_no_dist())
    set_model_state_dict(model, state["model"])


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """All ranks: the whole weights, gathered on CPU at rank 0 (empty elsewhere); None on one process,
    where the model in memory is whole already."""
    if not dist.is_initialized():
        return None
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


def _no_dist() -> bool:
    """One process without a process group: DCP reads and writes all shards itself (and need not warn)."""
    return not dist.is_initialized()


# DCP warns on every save and load by one process that this is what it assumes: it is what fsdp on one
# process (a 2-rank checkpoint resumed on 1, say) means.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
