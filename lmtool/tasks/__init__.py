"""Tasks: what a batch looks like, its loss, and its evaluation metrics. The engine knows nothing else."""

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
    multiple = 8 if torch.device(device).type == "cuda" else None
    labels = list(manifest.get("labels") or [])
    if cfg.task == "qa":
        from lmtool.tasks.qa import QAReference, QuestionAnsweringTask

        has_validation = processed is not None and (processed / "validation_examples").is_dir()
        reference = QAReference.load(processed) if has_validation else None
        return QuestionAnsweringTask(tokenizer, cfg.qa, multiple, reference)
    if cfg.task == "token_classification":
        from lmtool.tasks.token_classification import TokenClassificationTask

        return TokenClassificationTask(tokenizer, labels, cfg.tag_scheme, multiple)
    if cfg.task == "classification":
        from lmtool.tasks.classification import SequenceClassificationTask, resolve_class_weights

        problem = manifest.get("problem", cfg.problem)
        weights = resolve_class_weights(cfg.class_weights, labels, problem, manifest)
        num_labels = 1 if problem == "regression" else len(labels)
        return SequenceClassificationTask(
            tokenizer, num_labels, problem, weights, multiple, labels=labels or None
        )
    if cfg.task == "sft":
        from lmtool.tasks.sft import SftTask

        return SftTask(tokenizer, multiple)
    raise ValueError(f"unknown finetune task {cfg.task!r}")


__all__ = ["Evaluator", "Task", "make_finetune_task", "make_task"]
