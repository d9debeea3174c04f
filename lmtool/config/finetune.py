"""The finetune section: which labeled columns to read, how to tokenize them, and the head to train."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from lmtool.config.base import Count, Section


class ConllConfig(Section):
    """Columns of CoNLL files (.conll .bio .iob, or format: conll): one token per line, blank line between sentences."""

    token_column: int = Field(
        0, description="Column holding the token (0-based; negative counts from the end)."
    )
    tag_column: int = Field(-1, description="Column holding the tag (0-based; negative counts from the end).")
    separator: str | None = Field(
        None, description="Column separator; null = any run of whitespace (tabs or spaces)."
    )

    @field_validator("separator")
    @classmethod
    def _not_empty(cls, value: str | None) -> str | None:
        if value == "":
            raise ValueError("separator must not be empty (null = any whitespace)")
        return value


class LoraConfig(Section):
    """LoRA adapters (peft, `pip install "lmtool[lora]"`): only they and the task head train and are checkpointed."""

    r: Count = Field(8, description="Rank of each adapter's update matrices.")
    alpha: float = Field(16, gt=0, description="Scaling of the update: alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapters' input.")
    target_modules: Literal["auto"] | list[str] = Field(
        "auto",
        description="Modules (names or name suffixes) that get adapters; auto = the attention projections "
        "of the architecture.",
    )
    modules_to_save: list[str] | None = Field(
        None, description="Modules trained fully and saved with the adapter; null = the task head."
    )
    merge: bool = Field(
        True,
        description="final/ holds the model with the adapters merged in (plain transformers loads it) and "
        "final/adapter/ the adapter; false: final/ holds the adapter only.",
    )

    @field_validator("target_modules")
    @classmethod
    def _some_targets(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("target_modules must name at least one module (or be auto)")
        return value


class SftConfig(Section):
    """task: sft (causal-LM supervised fine-tuning): where the text is and which tokens are trained on."""

    format: Literal["text", "prompt_response", "messages"] = Field(
        "prompt_response",
        description="text: plain text (text_field), every token trained; prompt_response: prompt_field + "
        "response_field through `template`; messages: chat [{role, content}] lists through the chat template.",
    )
    text_field: str = Field("text", description="format text: column holding the text.")
    prompt_field: str = Field("prompt", description="format prompt_response: column holding the prompt.")
    response_field: str = Field(
        "response", description="format prompt_response: column holding the response."
    )
    template: str = Field(
        "### Instruction:\n{prompt}\n\n### Response:\n",
        description="format prompt_response: the text before the response; {prompt} is replaced by the prompt.",
    )
    messages_field: str = Field("messages", description="format messages: column holding the message list.")
    chat_template: str | None = Field(
        None, description="format messages: a Jinja chat template; null = the tokenizer's own."
    )
    train_on_prompt: bool = Field(
        False, description="Also train on prompt/system/user tokens (false: loss on responses only)."
    )
    packing: bool = Field(
        True,
        description="Pack short examples into max_length rows, each attending only to itself (models "
        "that take a 4D attention mask); otherwise one padded example per row.",
    )

    @field_validator("template")
    @classmethod
    def _has_prompt(cls, value: str) -> str:
        if "{prompt}" not in value:
            raise ValueError("template must contain {prompt}")
        return value


class QAConfig(Section):
    """Extractive question answering (SQuAD v1.1 / v2.0 JSON, or rows with question/context/answers)."""

    question_field: str = Field("question", description="Rows: column holding the question.")
    context_field: str = Field("context", description="Rows: column holding the context passage.")
    answers_field: str = Field(
        "answers", description="Rows: column holding {text: [...], answer_start: [...]} (the hub's squad)."
    )
    doc_stride: int = Field(
        128,
        ge=0,
        description="Context tokens shared by consecutive windows of a context longer than max_length.",
    )
    max_answer_length: Count = Field(30, description="Longest answer predicted, in tokens.")
    n_best: Count = Field(20, description="Start and end positions tried per window when predicting.")
    version_2: bool = Field(
        False, description="SQuAD v2.0: questions may have no answer (predicted when the null score wins)."
    )
    null_score_diff_threshold: float = Field(
        0.0, description="version_2: predict no answer when null score - best span score exceeds this."
    )
    on_bad_answer: Literal["skip", "fail"] = Field(
        "skip",
        description="An answer whose answer_start does not point at its text: skip it (counted in the "
        "manifest) or stop with an error.",
    )


# Every fine-tune task: its name (a value of finetune.task) and the module under lmtool/tasks/ whose `SPEC`
# is the task. The one line that registers a task (lmtool/tasks/registry.py imports the modules): names
# only, so that the config imports no task and the schema still lists the choices.
TASK_MODULES: dict[str, str] = {
    "classification": "lmtool.tasks.classification",
    "token_classification": "lmtool.tasks.token_classification",
    "qa": "lmtool.tasks.qa",
    "sft": "lmtool.tasks.sft",
}
TaskName = Literal[tuple(TASK_MODULES)]  # Literal["classification", "token_classification", ...]


class FinetuneConfig(Section):
    task: TaskName = Field(
        description="classification: one label per text (or text pair); token_classification: one tag per word "
        "(NER); qa: extractive question answering (an answer span in a context); sft: causal-LM fine-tuning "
        "on responses (see sft:)."
    )
    max_length: int = Field(
        128,
        ge=4,
        description="Tokens per example including special tokens; longer inputs are truncated (NER: split into windows).",
    )
    text_field: str = Field("text", description="classification: column holding the text.")
    text_pair_field: str | None = Field(
        None, description="classification: column holding the second text of a pair (e.g. NLI hypothesis)."
    )
    label_field: str = Field("label", description="classification: column holding the label.")
    labels: list[str] | None = Field(
        None,
        description="The label (or tag) set in id order; null = the sorted set found in the training data "
        "(integer labels sort numerically).",
    )
    problem: Literal["single_label", "multi_label", "regression"] = Field(
        "single_label",
        description="classification: one label per example, a list of labels (multi-hot), or one number.",
    )
    class_weights: Literal["balanced"] | list[float] | None = Field(
        None,
        description="classification loss weights per label: balanced = examples / (labels x label count) "
        "from the training split, or one weight per label.",
    )
    tokens_field: str = Field(
        "tokens", description="token_classification JSON data: column holding the word list."
    )
    tags_field: str = Field(
        "tags", description="token_classification JSON data: column holding the tag list."
    )
    conll: ConllConfig = Field(
        default_factory=ConllConfig, description="token_classification: CoNLL columns."
    )
    label_all_subtokens: bool = Field(
        False,
        description="token_classification: label every sub-token of a word (B-X continuations get I-X, as "
        "HF run_ner's label_all_tokens), not only the first.",
    )
    stride: int = Field(
        32,
        ge=0,
        description="token_classification: tokens shared by consecutive windows of a sentence longer than max_length.",
    )
    tag_scheme: Literal["auto", "IOB1", "IOB2", "BIOES"] = Field(
        "auto",
        description="token_classification: tagging scheme for entity-level metrics; auto = from the tags.",
    )
    reinit_head: bool = Field(
        False,
        description="Start a new classification head even if the checkpoint has one (other label count).",
    )
    freeze: Literal["embeddings", "all_but_head"] | int | None = Field(
        None,
        description="Parameters left untrained: embeddings, all_but_head, or N = embeddings and the first N layers.",
    )
    layer_lr_decay: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Layer-wise learning-rate decay: layer l of L gets lr x decay^(L - l).",
    )
    group_by_length: bool = Field(
        True, description="Batch examples of similar length together (less padding), in a seeded order."
    )
    sft: SftConfig = Field(default_factory=SftConfig, description="task sft: data format, masking, packing.")
    eval_strategy: Literal["epoch", "steps"] = Field(
        "epoch", description="Evaluate after every epoch, or every train.eval_every steps."
    )
    lora: LoraConfig | None = Field(
        None,
        description="Train LoRA adapters (and the head) instead of the whole model; null = full fine-tuning.",
    )
    qa: QAConfig = Field(default_factory=QAConfig, description="qa: fields, windows and answer decoding.")

    @field_validator("freeze")
    @classmethod
    def _layers_not_negative(cls, value):
        if isinstance(value, int) and value < 0:
            raise ValueError("freeze must be embeddings, all_but_head or a number of layers >= 0")
        return value

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("labels must not be empty (null = from the training data)")
            if "" in value:
                raise ValueError("labels must not hold an empty label")
            doubled = sorted({v for v in value if value.count(v) > 1})
            if doubled:
                raise ValueError(f"labels lists {', '.join(doubled)} more than once")
        return value

    @model_validator(mode="after")
    def _fits_task(self) -> FinetuneConfig:
        if self.problem == "regression" and self.labels is not None:
            raise ValueError("labels do not apply to problem: regression (its label is a number)")
        if self.problem == "regression" and self.class_weights is not None:
            raise ValueError("class_weights do not apply to problem: regression")
        weights = self.class_weights if isinstance(self.class_weights, list) else None
        if weights is not None and self.labels is not None and len(weights) != len(self.labels):
            raise ValueError(
                f"class_weights has {len(self.class_weights)} weights for {len(self.labels)} labels"
            )
        if isinstance(self.class_weights, list) and any(w < 0 for w in self.class_weights):
            raise ValueError("class_weights must not be negative")
        if self.lora is not None and self.freeze is not None:
            raise ValueError("freeze does not apply with lora (LoRA trains only the adapters and the head)")
        return self


# Fine-tuning's usual recipe (BERT paper, run_glue/run_ner) where the config leaves `train:` keys unset:
# pretraining's defaults (lr 6e-4, weight decay 0.1, a fixed warmup) would wreck a pretrained model.
FINETUNE_TRAIN_DEFAULTS = {
    "lr": 5e-5,
    "schedule": "linear",
    "min_lr_ratio": 0.0,
    "weight_decay": 0.01,
    "betas": [0.9, 0.999],
    "batch_size": 32,
    "eval_batches": None,  # the whole validation split
    "keep_best": True,
    "final_model": "best",
}


def best_metric(task: str, problem: str) -> str:
    """The validation metric a fine-tuning run keeps its best model by, unless train.metric_for_best says."""
    if task in ("token_classification", "qa"):
        return "f1"
    if task == "sft":
        return "loss"
    return {"multi_label": "f1_micro", "regression": "pearson"}.get(problem, "accuracy")


def with_finetune_defaults(raw: dict) -> dict:
    """The raw config with fine-tuning's `train:` defaults filled in where a `finetune:` section is present
    and the user set nothing (before validation, so `config show` and the saved config.yaml show them)."""
    section = raw.get("finetune")
    if not isinstance(section, dict):
        return raw
    train = raw.get("train")
    train = dict(train) if isinstance(train, dict) else {}
    defaults = dict(FINETUNE_TRAIN_DEFAULTS)
    defaults["metric_for_best"] = best_metric(
        str(section.get("task", "")), str(section.get("problem", "single_label"))
    )
    if "warmup_steps" not in train:
        defaults["warmup_ratio"] = 0.1
    if not {"max_steps", "max_tokens"} & train.keys():
        defaults["epochs"] = 3
    return {**raw, "train": {**defaults, **train}}
