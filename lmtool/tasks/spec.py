"""What a fine-tune task is to the rest of lmtool: one `TaskSpec` per task module, listed in
lmtool/tasks/registry.py. Callers (recipes, preprocessing, prediction, evaluation, serve, planning) read
its attributes and call its functions instead of comparing task names, so a new task is one module
holding a `SPEC` plus one registry line."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedConfig, PreTrainedModel

from lmtool.data.preprocess import Builder
from lmtool.finetune.heads import Head, check_head_model, load_with_head
from lmtool.tasks.base import Task

# (manifest, tokenizer, finetune section, pad-to multiple or None, processed dir or None) -> the Task
TaskMaker = Callable[[dict, Any, Any, "int | None", "Path | None"], Task]
# (predictor, items, batch size, max length, --stride or None) -> the records `lmtool predict` writes
Decoder = Callable[[Any, list, int, int, "int | None"], list[dict]]


def _same_rows(model, ft, train, validation):
    return train, validation


def _no_prefix(pred) -> str:
    return ""


@dataclass(frozen=True)
class TaskSpec:
    """A fine-tune task. `head` is the head it puts on the model (None: the model's own LM head, a causal
    LM); `outputs(problem, labels)` the head's output count (None: not known yet, or no head to size)."""

    name: str
    head: Head | None
    # labeled sources -> processed splits, tokenizer/ and manifest.json (in preprocess's work directory)
    build_data: Builder
    make_task: TaskMaker
    outputs: Callable[[str, Sequence[str] | None], int | None]
    # flags callers branch on
    is_causal: bool = False  # a causal LM trained on tokens (fused loss, AutoModelForCausalLM)
    word_level: bool = False  # labels per word: word ids, add_prefix_space for byte-level BPE
    needs_fast_tokenizer: bool = False  # word ids / character offsets need a Rust tokenizer
    questions: bool = False  # inputs are {question, context} (predict, serve, evaluate read them so)
    has_labels: bool = True  # the saved model names its labels (id2label)
    has_problem: bool = False  # finetune.problem applies (single_label, multi_label, regression)
    # the run: config entries the head needs, rows as the model takes them, settings saved with the model
    head_settings: Callable[[str], dict] = lambda problem: {}
    new_head_label: str | None = None  # what the new head predicts, in the log (default: its labels)
    prepare_rows: Callable = _same_rows  # (model, finetune section, train, validation) -> (train, validation)
    saved_settings: Callable[[Any], dict] = lambda ft: {}  # entries written into the model's config.json
    # prediction (lmtool predict, lmtool serve)
    decode: Decoder | None = None
    max_length_cap: int | None = None  # predict's default max length is at most this
    describe: Callable[[Any], str] = _no_prefix  # predict's log line, before the input count
    route: str | None = None  # lmtool serve's endpoint

    def default_max_length(self, pred) -> int:
        """predict's and serve's tokens per input when none is asked for: the model's limit, within the
        task's cap."""
        length = pred.default_max_length()
        return length if self.max_length_cap is None else min(self.max_length_cap, length)

    def check_model(
        self, init_from: str, reinit_head: bool, trust_remote_code: bool = False
    ) -> PreTrainedConfig:
        """The config of `init_from` once it is known to take this task's head (or, causal, to be a causal
        LM): checked before any preprocessing or run directory, so a bad model leaves nothing."""
        if self.head is None:
            from lmtool.finetune.causal import check_causal_lm

            return check_causal_lm(init_from, trust_remote_code)
        return check_head_model(init_from, self.head, reinit_head, trust_remote_code)

    def load_model(
        self,
        init_from: str,
        problem: str,
        labels: list[str],
        reinit_head: bool,
        trust_remote_code: bool = False,
        overrides: dict | None = None,
    ) -> PreTrainedModel:
        """`init_from` with this task's head for `labels` (and `problem`), in train mode. Seed torch first:
        new head weights come from its generator."""
        if self.head is None:
            from lmtool.finetune.causal import load_causal_lm

            return load_causal_lm(init_from, trust_remote_code, overrides)
        num_labels = self.outputs(problem, labels)
        id2label = dict(enumerate(labels)) if self.has_labels and len(labels) == num_labels else None
        settings = {**(overrides or {}), **self.head_settings(problem)}
        return load_with_head(
            init_from, self.head, num_labels, id2label, reinit_head, trust_remote_code, settings,
            what=self.new_head_label,
        )  # fmt: skip
