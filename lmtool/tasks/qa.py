"""Extractive question answering: a start and an end position per window, scored on whole questions.

Loss = (CE(start) + CE(end)) / 2 in fp32, averaged over windows (the count the engine weights
micro-batches by). The evaluator keeps each window's start/end logits by its row (`window`), then
turns every question's windows into one answer with the same post-processing `lmtool predict` uses
and scores the answers with the official SQuAD v1.1 / v2.0 exact match and F1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForQuestionAnswering

from lmtool.config.finetune import QAConfig
from lmtool.data.qa_build import build_qa
from lmtool.errors import LmtoolError
from lmtool.finetune.heads import Head
from lmtool.tasks.base import model_inputs
from lmtool.tasks.decoding import answers
from lmtool.tasks.metrics.squad import squad_v1, squad_v2
from lmtool.tasks.padding import pad_inputs
from lmtool.tasks.qa_postprocess import Window, best_answer
from lmtool.tasks.spec import TaskSpec


@dataclass
class QAReference:
    """What scoring a split needs besides the logits: per window its question and context offsets,
    per question its context and gold answer texts."""

    example_id: list[int]
    offsets: list[list[list[int]]]
    contexts: list[str]
    answers: list[list[str]]

    @classmethod
    def load(cls, processed: Path, split: str = "validation") -> QAReference:
        import datasets

        windows = datasets.load_from_disk(str(processed / split))
        examples = datasets.load_from_disk(str(processed / f"{split}_examples"))
        return cls(windows["example_id"], windows["offset_mapping"], examples["context"], examples["answers"])


def span_nll(outputs, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-window (CE(start) + CE(end)) / 2 in fp32."""
    start = F.cross_entropy(outputs.start_logits.float(), batch["start_positions"], reduction="none")
    end = F.cross_entropy(outputs.end_logits.float(), batch["end_positions"], reduction="none")
    return (start + end) / 2


class QuestionAnsweringTask:
    name = "qa"

    def __init__(
        self, tokenizer, cfg: QAConfig, pad_to_multiple_of: int | None, reference: QAReference | None = None
    ):
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.cfg = cfg
        self.pad_to_multiple_of = pad_to_multiple_of
        self.reference = reference

    def collate(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch, _ = pad_inputs(examples, self.pad_id, self.pad_to_multiple_of)
        for name in ("start_positions", "end_positions"):
            batch[name] = torch.tensor([ex[name] for ex in examples], dtype=torch.long)
        if "window" in examples[0]:
            batch["window"] = torch.tensor([ex["window"] for ex in examples], dtype=torch.long)
        return batch

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean span loss over the batch's windows, number of windows)."""
        losses = span_nll(model(**model_inputs(batch)), batch)
        return losses.mean(), torch.tensor(losses.numel(), device=losses.device)

    def evaluator(self) -> QAEvaluator:
        if self.reference is None:
            raise LmtoolError(
                "qa evaluation needs the processed split's offsets and examples (none were given)"
            )
        return QAEvaluator(self.cfg, self.reference)


class QAEvaluator:
    """Window loss over the split; answers per question once every window has been seen."""

    def __init__(self, cfg: QAConfig, reference: QAReference):
        self.cfg = cfg
        self.reference = reference
        self.nll = 0.0
        self.windows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
        outputs = model(**model_inputs(batch))
        self.nll += float(span_nll(outputs, batch).sum())
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        starts, ends = outputs.start_logits.float().cpu(), outputs.end_logits.float().cpu()
        for row, window in enumerate(batch["window"].tolist()):
            self.windows[window] = (starts[row, : lengths[row]], ends[row, : lengths[row]])

    def state(self) -> tuple[float, dict]:
        """The window loss sum and every window's logits: the answers need all windows of a question."""
        return self.nll, self.windows

    def merge(self, states: Sequence[tuple[float, dict]]) -> None:
        for nll, windows in states:
            self.nll += nll
            self.windows.update(windows)

    def compute(self) -> dict:
        ref, cfg = self.reference, self.cfg
        per_question: dict[int, list[Window]] = {}
        for window, (starts, ends) in sorted(self.windows.items()):
            per_question.setdefault(ref.example_id[window], []).append(
                Window(starts, ends, ref.offsets[window])
            )
        predictions, golds = [], []
        for question in sorted(per_question):
            answer = best_answer(
                per_question[question],
                ref.contexts[question],
                n_best=cfg.n_best,
                max_answer_length=cfg.max_answer_length,
                version_2=cfg.version_2,
                null_threshold=cfg.null_score_diff_threshold,
            )
            predictions.append(answer.text)
            golds.append(ref.answers[question])
        metrics = {"loss": self.nll / max(len(self.windows), 1), "windows": len(self.windows)}
        metrics.update((squad_v2 if cfg.version_2 else squad_v1)(predictions, golds))
        return metrics


def _make_task(manifest: dict, tokenizer, cfg, multiple: int | None, processed) -> QuestionAnsweringTask:
    """`processed` (the processed data directory) gives the evaluator the validation questions."""
    has_validation = processed is not None and (processed / "validation_examples").is_dir()
    reference = QAReference.load(processed) if has_validation else None
    return QuestionAnsweringTask(tokenizer, cfg.qa, multiple, reference)


SPEC = TaskSpec(
    name="qa",
    head=Head("qa", AutoModelForQuestionAnswering, "ForQuestionAnswering"),
    build_data=build_qa,
    make_task=_make_task,
    outputs=lambda problem, labels: 2,  # a start and an end logit per token
    needs_fast_tokenizer=True,
    questions=True,
    has_labels=False,
    new_head_label="start/end",
    # saved with the model: `lmtool predict` decodes answers as the evaluator did
    saved_settings=lambda ft: {"lmtool_qa": ft.qa.model_dump()},
    decode=answers.decode,
    max_length_cap=384,
    describe=lambda pred: "question answering, ",
    route="/answer",
)
