"""Sequence classification: one label (or label set, or score) per example.

The loss is computed here from the logits in fp32, not by the model's `labels=` path, and is a mean
over examples with the example count beside it: the engine's count-weighted accumulation then gives
exactly the full batch's loss however the batch is cut into micro-batches or ranks. With class
weights the mean is sum(weight[gold] * loss) / examples (not torch's division by the summed weights,
which would not add up across micro-batches); the validation loss is the same weighted objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

from lmtool.data.labeled_build import build_labeled
from lmtool.errors import ConfigError, LmtoolError
from lmtool.finetune.heads import Head
from lmtool.tasks.base import model_inputs
from lmtool.tasks.decoding import classify
from lmtool.tasks.metrics.classification import (
    multi_label_metrics,
    regression_metrics,
    single_label_metrics,
)
from lmtool.tasks.padding import pad_inputs
from lmtool.tasks.spec import TaskSpec

PROBLEMS = ("single_label", "multi_label", "regression")
PROBLEM_TYPES = {  # transformers' names, saved as the model's problem_type
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}


class SequenceClassificationTask:
    name = "classification"

    def __init__(
        self,
        tokenizer,
        num_labels: int,
        problem: str,
        class_weights: list[float] | None,
        pad_to_multiple_of: int | None,
        labels: Sequence[str] | None = None,
    ):
        if problem not in PROBLEMS:
            raise ValueError(f"unknown problem {problem!r}")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.num_labels = num_labels
        self.problem = problem
        self.weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.pad_to_multiple_of = pad_to_multiple_of
        self.labels = list(labels) if labels is not None else [str(i) for i in range(num_labels)]

    def collate(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch, _ = pad_inputs(examples, self.pad_id, self.pad_to_multiple_of)
        gold = [ex["labels"] for ex in examples]
        dtype = torch.long if self.problem == "single_label" else torch.float32
        batch["labels"] = torch.tensor(gold, dtype=dtype)
        return batch

    def example_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-example loss in fp32 (class-weighted when weights are set)."""
        logits = logits.float()
        weights = self.weights.to(logits.device) if self.weights is not None else None
        if self.problem == "regression":
            return (logits.squeeze(-1) - labels) ** 2
        if self.problem == "multi_label":
            bce = F.binary_cross_entropy_with_logits(logits, labels, weight=weights, reduction="none")
            return bce.mean(dim=-1)
        nll = F.cross_entropy(logits, labels, reduction="none")
        return nll * weights[labels] if weights is not None else nll

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss over the batch's examples, number of examples)."""
        logits = model(**model_inputs(batch)).logits
        losses = self.example_losses(logits, batch["labels"])
        return losses.mean(), torch.tensor(losses.numel(), device=losses.device)

    def evaluator(self) -> ClassificationEvaluator:
        return ClassificationEvaluator(self)


class ClassificationEvaluator:
    """Sums the loss and keeps every (gold, predicted) pair of the split, then computes the metrics."""

    def __init__(self, task: SequenceClassificationTask):
        self.task = task
        self.loss_sum = 0.0
        self.gold: list = []
        self.predicted: list = []

    @torch.no_grad()
    def update(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
        logits = model(**model_inputs(batch)).logits.float()
        gold = batch["labels"]
        self.loss_sum += float(self.task.example_losses(logits, gold).sum())
        if self.task.problem == "regression":
            predicted = logits.squeeze(-1)
        elif self.task.problem == "multi_label":
            predicted, gold = (logits > 0).long(), gold.long()  # sigmoid > 0.5
        else:
            predicted = logits.argmax(dim=-1)
        self.gold.extend(gold.tolist())
        self.predicted.extend(predicted.tolist())

    def state(self) -> tuple[float, list, list]:
        return self.loss_sum, self.gold, self.predicted

    def merge(self, states: Sequence[tuple[float, list, list]]) -> None:
        for loss_sum, gold, predicted in states:
            self.loss_sum += loss_sum
            self.gold.extend(gold)
            self.predicted.extend(predicted)

    def compute(self) -> dict:
        examples = len(self.gold)
        metrics = {"loss": self.loss_sum / max(examples, 1), "examples": examples}
        if self.task.problem == "regression":
            metrics.update(regression_metrics(self.gold, self.predicted))
        elif self.task.problem == "multi_label":
            metrics.update(multi_label_metrics(self.gold, self.predicted, self.task.labels))
        else:
            metrics.update(single_label_metrics(self.gold, self.predicted, self.task.labels))
        return metrics


def resolve_class_weights(
    setting: str | list[float] | None, labels: Sequence[str], problem: str, manifest: dict
) -> list[float] | None:
    """`finetune.class_weights` as one weight per label. "balanced" is scikit-learn's
    examples / (labels * examples of the label), from the training label counts in the manifest
    (for multi_label: the examples where the label is on)."""
    if setting is None:
        return None
    if problem == "regression":
        raise ConfigError("finetune.class_weights", "has no meaning for problem regression", value=setting)
    if setting != "balanced":
        if len(setting) != len(labels):
            raise ConfigError(
                "finetune.class_weights",
                f"needs one weight per label ({len(labels)}: {list(labels)})",
                value=setting,
            )
        return [float(w) for w in setting]
    counts = manifest.get("counts", {}).get("train", {}).get("labels")
    if not isinstance(counts, dict):
        raise LmtoolError(
            "finetune.class_weights: balanced needs the training label counts, which the processed data's "
            "manifest.json lacks (run `lmtool preprocess` again)"
        )
    missing = [label for label in labels if not counts.get(label)]
    if missing:
        raise ConfigError(
            "finetune.class_weights",
            f"balanced cannot weight labels with no training example: {missing}",
            value=setting,
        )
    total = (
        manifest["counts"]["train"]["examples"]
        if problem == "multi_label"
        else sum(counts[label] for label in labels)
    )
    return [total / (len(labels) * counts[label]) for label in labels]


def _make_task(manifest: dict, tokenizer, cfg, multiple: int | None, processed) -> SequenceClassificationTask:
    labels = list(manifest.get("labels") or [])
    problem = manifest.get("problem", cfg.problem)
    weights = resolve_class_weights(cfg.class_weights, labels, problem, manifest)
    num_labels = 1 if problem == "regression" else len(labels)
    return SequenceClassificationTask(
        tokenizer, num_labels, problem, weights, multiple, labels=labels or None
    )


def _outputs(problem: str, labels: Sequence[str] | None) -> int | None:
    if problem == "regression":
        return 1
    return None if labels is None else len(labels)


SPEC = TaskSpec(
    name="classification",
    head=Head("classification", AutoModelForSequenceClassification, "ForSequenceClassification"),
    build_data=partial(build_labeled, word_level=False),
    make_task=_make_task,
    outputs=_outputs,
    has_problem=True,
    head_settings=lambda problem: {"problem_type": PROBLEM_TYPES[problem]},
    decode=classify.decode,
    describe=lambda pred: f"classification ({pred.problem}) with {len(pred.labels)} labels, ",
    route="/classify",
)
