"""The numbers of `lmtool plan`: batch geometry, FLOPs, memory per GPU, throughput, wall time, warnings.

Throughput is stated, not measured: tokens/s = MFU x peak FLOP/s x GPUs / FLOPs per token, with the
FLOPs per token of the MFU training logs (lmtool.train.metrics.flops_per_token).
"""

from __future__ import annotations

import math
from pathlib import Path

from lmtool.config import Config
from lmtool.config import checks as config_checks
from lmtool.errors import ConfigError, LmtoolError
from lmtool.planning.memory import memory_per_gpu
from lmtool.planning.model import ModelShape, model_shape, sequence_length
from lmtool.train.metrics import GPU_MEMORY_GB, GPU_PEAK_BF16
from lmtool.train.plan import compiles, total_steps

# A micro-step of fewer tokens per GPU leaves a large GPU waiting on kernel launches.
MIN_TOKENS_PER_MICRO_STEP = 4096
# Share of GPU memory an estimate may fill and still "fit": the rest is the CUDA context,
# the allocator's fragmentation and temporaries the formula leaves out.
FIT_FRACTION = 0.9
# --gpu names and the device-name substring the tables know them by.
GPUS = {
    "h200": "H200",
    "h100": "H100",
    "h100-pcie": "H100 PCIe",
    "h100-nvl": "H100 NVL",
    "b200": "B200",
    "a100": "A100",
    "a100-40": "A100 40GB",
    "a10g": "A10G",
    "a10": "A10",
    "l40s": "L40S",
    "l4": "L4",
    "rtx4090": "RTX 4090",
    "rtx3090": "RTX 3090",
    "v100": "V100",
    "v100-16": "V100 16GB",
    "t4": "T4",
}
FP16_ONLY = ("V100", "T4")


def _lookup(table: tuple, name: str) -> float:
    return next(value for key, value in table if key in name)


def estimate(
    config: Config,
    *,
    gpu: str,
    gpus_per_node: int,
    nodes: int,
    mfu: float,
    time_limit: tuple[float | None, str | None] = (None, None),
) -> dict:
    """Everything the report shows, as one JSON-ready dict."""
    if gpu not in GPUS:
        raise LmtoolError(f"--gpu must be one of {', '.join(GPUS)} (got {gpu!r})")
    if gpus_per_node < 1 or nodes < 1:
        raise LmtoolError("--gpus and --nodes must be at least 1")
    if not 0 < mfu <= 1:
        raise LmtoolError(f"--mfu must be in (0, 1] (got {mfu})")
    device = GPUS[gpu]
    world = gpus_per_node * nodes
    train, seq = config.train, sequence_length(config)
    shape = model_shape(config)
    warnings: list[str] = []
    batch = _batch(config, world, warnings)
    precision = _precision(train.precision, device)
    act_bytes = 4 if precision == "fp32" else 2
    memory_gb = _lookup(GPU_MEMORY_GB, device)
    steps = _total_steps(config, batch["global_batch"], batch["tokens_per_step"])
    compiled = compiles(train.compile, steps, shape.transformer, cuda=True)
    step = {
        "seq": seq, "micro_batch": train.batch_size, "act_bytes": act_bytes, "world": world,
        "eager": shape.eager_attention, "compiled": compiled, "accumulation": batch["accumulation"],
        "masked": train.mlm.probability if config.data.objective == "mlm" else None,
        "reduce_bytes": 2 if train.distributed.reduce_dtype == "bf16" and act_bytes < 4 else 4,
        "fused_loss": _fused_loss(config),
    }  # fmt: skip
    memory = {}
    for strategy in ("ddp", "fsdp"):
        for checkpointing in (False, True):
            parts = memory_per_gpu(
                shape, fsdp=strategy == "fsdp", checkpointing=checkpointing, **step
            ).as_dict()
            gb = {key: value if isinstance(value, str) else value / 1e9 for key, value in parts.items()}
            gb["fits"] = gb["total"] <= FIT_FRACTION * memory_gb
            memory[f"{strategy}{'_checkpointing' if checkpointing else ''}"] = gb
    configured = "ddp" + ("_checkpointing" if train.gradient_checkpointing else "")
    if not memory[configured]["fits"]:
        warnings.append(f"{configured.replace('_', ' + ')} needs {memory[configured]['total']:.1f} GB per GPU, "
                        f"over {FIT_FRACTION:.0%} of the {memory_gb} GB of a {device}")  # fmt: skip
    if not shape.transformer:
        warnings.append(
            f"{shape.name} has no attention layers: its activations are estimated as transformer blocks"
        )
    tokens_micro = train.batch_size * seq
    if tokens_micro < MIN_TOKENS_PER_MICRO_STEP:
        length_key = "finetune.max_length" if config.finetune is not None else "data.block_size"
        warnings.append(f"micro-batch of {tokens_micro} tokens per GPU (train.batch_size x {length_key}) is "
                        f"under {MIN_TOKENS_PER_MICRO_STEP}: too small to keep a GPU busy")  # fmt: skip
    if config.finetune is not None and (
        config.finetune.lora is not None or config.finetune.freeze is not None
    ):
        warnings.append("finetune.lora / finetune.freeze train part of the model: gradients and optimizer "
                        "state are counted for all of it (an upper bound)")  # fmt: skip
    throughput = _throughput(shape, batch, steps, precision, device, world, mfu, warnings)
    _checkpoint_warning(config, throughput, time_limit, warnings)
    return {
        "model": {
            "class": shape.name,
            "parameters": shape.parameters,
            "embedding_parameters": shape.embedding_parameters,
            "non_embedding_parameters": shape.parameters - shape.embedding_parameters,
            "vocab_size": shape.vocab,
            "vocab_from": shape.vocab_source,
            "layers": shape.layers,
            "hidden_size": shape.hidden,
            "attention": "eager" if shape.eager_attention else "sdpa",
            "compiled": compiled,
        },
        "cluster": {
            "gpu": device,
            "gpus_per_node": gpus_per_node,
            "nodes": nodes,
            "world_size": world,
            "gpu_memory_gb": memory_gb,
            "precision": precision,
        },  # fmt: skip
        "batch": {
            **batch,
            "flops_per_token": shape.flops_per_token,
            "flops_per_step": shape.flops_per_token * batch["tokens_per_step"],
        },  # fmt: skip
        "memory_gb_per_gpu": memory,
        "throughput": throughput,
        "warnings": warnings,
    }


def _batch(config: Config, world: int, warnings: list[str]) -> dict:
    """Batch geometry as training would fix it: a global batch that is not a whole number of micro-batches
    across `world` GPUs is rounded as training rounds it (or, where training refuses it, up), and the
    report says from what to what."""
    train, seq = config.train, sequence_length(config)
    per_micro = train.batch_size * world
    geometry = f"{train.batch_size} x {world} GPUs = {per_micro} sequences"
    try:
        global_batch = config_checks.global_batch(train, seq, world)
    except ConfigError as exc:
        global_batch = math.ceil(train.global_batch_size / per_micro) * per_micro
        warnings.append(f"global batch not divisible by world size x micro-batch: {exc}; planned as "
                        f"{global_batch} sequences (rounded up to whole micro-batches of {geometry})")  # fmt: skip
    configured = train.global_batch_tokens
    if configured is not None and configured != global_batch * seq:
        change = global_batch * seq / configured - 1
        warnings.append(f"train.global_batch_tokens {configured:,} is not a whole number of micro-batches of "
                        f"{geometry} x {seq} tokens: training rounds it to {global_batch} sequences = "
                        f"{global_batch * seq:,} tokens per step ({change:+.1%}); a multiple of "
                        f"{per_micro * seq:,} is kept exactly")  # fmt: skip
    return {
        "micro_batch": train.batch_size,
        "sequence_length": seq,
        "accumulation": global_batch // per_micro,
        "global_batch": global_batch,
        "tokens_per_step": global_batch * seq,
        "configured_tokens_per_step": configured,
    }


def _precision(setting: str, device: str) -> str:
    """What `train.precision` becomes on `device` (auto: bf16, or fp16 on GPUs without bf16)."""
    if setting == "auto":
        return "fp16" if any(name in device for name in FP16_ONLY) else "bf16"
    return setting


def _throughput(shape: ModelShape, batch: dict, steps: int | None, precision: str, device: str, world: int,
                mfu: float, warnings: list[str]) -> dict:  # fmt: skip
    """Tokens/s and wall time to the configured budget at the stated MFU."""
    peak = _lookup(GPU_PEAK_BF16, device) if precision != "fp32" else None
    result: dict = {"mfu": mfu, "peak_flops_per_gpu": peak, "total_steps": steps, "tokens_per_s": None,
                    "step_seconds": None, "wall_seconds": None}  # fmt: skip
    if peak is None:
        warnings.append(f"no {precision} peak FLOP/s for a {device} in the table: no throughput estimate")
        return result
    tokens_per_s = mfu * peak * world / shape.flops_per_token
    result["tokens_per_s"] = tokens_per_s
    result["step_seconds"] = batch["tokens_per_step"] / tokens_per_s
    if steps is None:
        warnings.append("the run's length depends on the training split's size: run `lmtool preprocess` "
                        "first, or set train.max_steps or train.max_tokens")  # fmt: skip
    else:
        result["wall_seconds"] = steps * result["step_seconds"]
    return result


def _total_steps(config: Config, global_batch: int, tokens_per_step: int) -> int | None:
    """As the engine counts them (train.plan.total_steps); None when epochs decide and the data is not there."""
    return total_steps(config.train, global_batch, tokens_per_step, _train_sequences(config))


def _train_sequences(config: Config) -> int | None:
    split = Path(config.data.processed_dir) / "train"
    if not split.is_dir():
        return None
    from datasets import load_from_disk

    try:
        return load_from_disk(str(split)).num_rows
    except (OSError, ValueError, FileNotFoundError):
        return None


def _checkpoint_warning(config: Config, throughput: dict, limit: tuple[float | None, str | None],
                        warnings: list[str]) -> None:  # fmt: skip
    """Warn when the job's time limit would end it before its first checkpoint (all its work lost)."""
    seconds, source = limit
    step = throughput["step_seconds"]
    if seconds is None or step is None:
        return
    wall = throughput["wall_seconds"]
    if wall is not None and wall <= seconds:
        return
    every = config.train.save_every
    if every == 0:
        warnings.append(f"no checkpoint within the time limit ({source}, {seconds / 3600:.2f} h): train.save_every "
                        "is 0, so only a signal or the run's end saves")  # fmt: skip
    elif every * step > seconds:
        warnings.append(f"no checkpoint within the time limit ({source}, {seconds / 3600:.2f} h): train.save_every "
                        f"{every} steps take ~{every * step / 3600:.2f} h")  # fmt: skip


def _fused_loss(config) -> bool:
    """Whether train.fused_loss applies to the planned run: causal LM losses with it on, or auto with liger-kernel
    installed where plan runs (the GPU nodes are assumed to have what this environment has)."""
    from lmtool.tasks.linear_ce import liger_available
    from lmtool.tasks.registry import finetune_spec

    finetune = config.finetune
    causal = config.data.objective == "clm" or (
        finetune is not None and finetune_spec(finetune.task).is_causal
    )
    setting = config.train.fused_loss
    return causal and (setting is True or (setting == "auto" and liger_available()))
