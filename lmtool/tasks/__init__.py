"""Tasks: what a batch looks like, its loss, and its evaluation metrics. The engine knows nothing else."""

from __future__ import annotations

from lmtool.config import MLMConfig
from lmtool.tasks.base import Evaluator, Task


def make_task(objective: str, tokenizer, seed: int, mlm: MLMConfig | None = None) -> Task:
    if objective == "clm":
        from lmtool.tasks.clm import CausalLMTask

        return CausalLMTask(tokenizer)
    if objective == "mlm":
        from lmtool.tasks.mlm import MaskedLMTask

        return MaskedLMTask(tokenizer, seed=seed, cfg=mlm or MLMConfig())
    raise ValueError(f"unknown objective {objective!r}")


__all__ = ["Evaluator", "Task", "make_task"]
