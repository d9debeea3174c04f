"""Tasks: what a batch looks like, its loss, and its evaluation metrics. The engine knows nothing else.
The pretraining objectives are made here by name; the fine-tune tasks are in registry.py."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lmtool.config import MLMConfig
from lmtool.tasks.base import Evaluator, Task

if TYPE_CHECKING:
    from lmtool.config.finetune import FinetuneConfig


def make_task(objective: str, tokenizer, seed: int, mlm: MLMConfig | None = None) -> Task:
    if objective == "clm":
        from lmtool.tasks.clm import CausalLMTask

        return CausalLMTask(tokenizer)
    if objective == "mlm":
        from lmtool.tasks.mlm import MaskedLMTask

        return MaskedLMTask(tokenizer, seed=seed, cfg=mlm or MLMConfig())
    raise ValueError(f"unknown objective {objective!r}")


def make_finetune_task(
    manifest: dict, tokenizer, cfg: FinetuneConfig, device: torch.device | str, processed: Path | None = None
) -> Task:
    """The task of a fine-tuning run, from its processed data's manifest (labels in id order, problem)
    and the `finetune:` section. On CUDA, batches are padded to a multiple of 8 (tensor cores).
    `processed` (the processed data directory) gives QA's evaluator the validation questions."""
    from lmtool.tasks.registry import finetune_spec

    multiple = 8 if torch.device(device).type == "cuda" else None
    return finetune_spec(cfg.task).make_task(manifest, tokenizer, cfg, multiple, processed)


__all__ = ["Evaluator", "Task", "make_finetune_task", "make_task"]
