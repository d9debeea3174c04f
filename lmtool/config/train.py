"""The train section: batch geometry, optimisation, stopping, checkpoints and masking."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from lmtool.config.base import Count, Device, Precision, Section
from lmtool.config.errors import ConfigError

# --------------------------------------------------------------------------- train

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


def _seconds(value: object) -> object:
    """`10m`, `90s`, `1h` or a number of seconds."""
    if isinstance(value, str) and (match := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", value)):
        return float(match[1]) * _UNITS[match[2]]
    return value


Duration = Annotated[float, BeforeValidator(_seconds)]


class MLMConfig(Section):
    probability: float = Field(
        0.15, gt=0.0, lt=1.0, description="Fraction of non-special tokens selected for prediction."
    )
    mask_fraction: float = Field(
        0.8, ge=0.0, le=1.0, description="Of the selected tokens, the fraction replaced by [MASK]."
    )
    random_fraction: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Of the selected tokens, the fraction replaced by a random token (the rest are kept).",
    )
    whole_word: bool = Field(False, description="Mask whole words (all sub-tokens of a word together).")

    @model_validator(mode="after")
    def _fractions(self) -> MLMConfig:
        if self.mask_fraction + self.random_fraction > 1.0:
            raise ValueError("mask_fraction + random_fraction must be at most 1")
        return self


class DistributedConfig(Section):
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="ddp: replicated weights, all-reduced gradients; fsdp: FSDP2 (fully_shard per transformer block), weights, gradients and optimizer state sharded across ranks, sharded checkpoints.",
    )
    timeout: Duration = Field(
        3600,
        gt=0,
        description="A collective that waits longer than this (seconds, or 30m, 1h) ends the job with a message naming the step.",
    )
    reshard_after_forward: bool = Field(
        True,
        description="fsdp: free the gathered weights of a block after its forward (less memory, one more all-gather in backward).",
    )
    reduce_dtype: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="fsdp: dtype of the gradient reduce-scatter when parameters are kept in bf16 (fp32 = exact sums).",
    )


class TrainConfig(Section):
    batch_size: Count = Field(16, description="Sequences per device per micro-step.")
    global_batch_size: Count | None = Field(
        None,
        description="Sequences per optimizer step across all devices (gradient accumulation fills the gap). Null = batch_size x devices.",
    )
    global_batch_tokens: Count | None = Field(
        None, description="Alternative to global_batch_size, in tokens (rounded to whole sequences)."
    )
    lr: float = Field(6e-4, gt=0.0, description="Peak learning rate.")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Floor of the schedule as a fraction of lr.")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warmup.")
    warmup_steps: int | None = Field(
        None,
        ge=0,
        description="Linear warmup steps (null = warmup_ratio, or 100 steps when that is null too).",
    )
    warmup_ratio: float | None = Field(
        None, ge=0.0, lt=1.0, description="Linear warmup as a fraction of the run's steps (rounded up)."
    )
    weight_decay: float = Field(
        0.1, ge=0.0, description="AdamW weight decay (not applied to biases, norms, embeddings)."
    )
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    eps: float = Field(1e-8, gt=0.0, description="AdamW epsilon.")
    grad_clip: float = Field(1.0, ge=0.0, description="Clip the global gradient norm to this (0 = off).")
    precision: Precision = Field(
        "auto",
        description="auto: bf16 autocast where the device supports it (GPU, or CPU with AVX512-BF16/AMX), fp16 + GradScaler on older GPUs, else fp32.",
    )
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="torch.compile the model; auto = on for CUDA runs of at least 1000 steps (on CPU compiling does not pay off).",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass to save memory."
    )
    fused_loss: bool | Literal["auto"] = Field(
        "auto",
        description="Causal LM losses (clm, sft) from the hidden states and the head's weight in chunks, never forming the full-vocabulary logits (liger-kernel's kernel on CUDA when the `fused` extra is installed, else chunked PyTorch); auto = on for CUDA with liger-kernel installed. Off under fsdp on several processes and for heads that are not a plain linear layer.",
    )
    max_steps: Count | None = Field(None, description="Stop after this many optimizer steps.")
    max_tokens: Count | None = Field(None, description="Stop after this many training tokens.")
    epochs: float | None = Field(
        None,
        gt=0.0,
        description="Stop after this many passes over the data (default 1 when no other limit is set).",
    )
    eval_every: int = Field(
        500, ge=0, description="Evaluate on the validation split every N steps (0 = only at the end)."
    )
    eval_batches: Count | None = Field(
        50, description="Cap on validation batches per evaluation (null = whole split)."
    )
    log_every: Count = Field(10, description="Log training metrics every N steps.")
    save_every: int = Field(
        1000, ge=0, description="Save a checkpoint every N steps (0 = only at the end and on signals)."
    )
    keep_last: Count = Field(
        3, description="Keep this many most recent complete checkpoints of the run's current line."
    )
    keep_best: bool = Field(
        False,
        description="Also keep the checkpoint with the best validation metric_for_best (saved when an eval finds a new best).",
    )
    metric_for_best: str = Field(
        "loss",
        min_length=1,
        description="Validation metric that decides the best model (keep_best, patience, final_model).",
    )
    greater_is_better: bool | None = Field(
        None,
        description="Whether a higher metric_for_best is better; null = false for loss, perplexity, mse and *_loss, true otherwise.",
    )
    patience: Count | None = Field(
        None,
        description="Stop early (checkpoint and final/ as at the end) after this many evaluations without a new best; null = never.",
    )
    final_model: Literal["last", "best"] = Field(
        "last",
        description="What final/ holds: the last weights, or the best evaluated ones (best implies keep_best).",
    )
    resume: str = Field(
        "auto",
        description="auto: continue from the latest complete checkpoint in output_dir; never: start fresh; or a checkpoint path.",
    )
    max_nonfinite: Count = Field(
        5,
        description="Stop with an error after this many non-finite losses in a row (each one skips its update).",
    )
    stop_before: Duration | None = Field(
        None,
        ge=0,
        description="Save and exit 3 (requeue) this long before the job's end (SLURM_JOB_END_TIME, squeue or deadline), e.g. 10m.",
    )
    deadline: datetime | None = Field(
        None,
        description="The job's end as an ISO date-time, for stop_before outside SLURM (e.g. 2026-12-01T18:00).",
    )
    device: Device = Field("auto", description="Training device; auto = cuda if available, else cpu.")
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig, description="Multi-process training: strategy and timeouts."
    )
    async_checkpoint: bool = Field(
        False,
        description="fsdp only (with ddp: exit 2): write the sharded checkpoints in the background with torch.distributed.checkpoint.async_save, so the step loop waits only while the state is copied to memory.",
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    mlm: MLMConfig = Field(default_factory=MLMConfig, description="Masking for the mlm objective.")

    @model_validator(mode="after")
    def _one_batch_spec(self) -> TrainConfig:
        if self.global_batch_size is not None and self.global_batch_tokens is not None:
            raise ValueError("set global_batch_size or global_batch_tokens, not both")
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("set warmup_steps or warmup_ratio, not both")
        return self

    @model_validator(mode="after")
    def _async_needs_fsdp(self) -> TrainConfig:
        if self.async_checkpoint and self.distributed.strategy != "fsdp":
            raise ConfigError(
                "train.async_checkpoint",
                "needs train.distributed.strategy fsdp (sharded checkpoints); ddp checkpoints are written by rank 0 alone",
                value=True,
            )
        return self
