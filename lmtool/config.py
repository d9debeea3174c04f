"""The config schema (one source of truth for options, defaults, docs and validation) and its loading.

A YAML file plus `--set a.b.c=value` overrides becomes a validated `Config`. Every model
forbids unknown keys, so a typo anywhere is an error that names the dotted key. Strings may
refer to other values as `${run.name}` or to the environment as `${env:HOME}`.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lmtool.errors import ConfigError, LmtoolError

Precision = Literal["auto", "bf16", "fp16", "fp32"]
Device = Literal["auto", "cpu", "cuda", "mps"]


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads `3e-4` as a float (YAML 1.1 needs a dot: `3.0e-4`)."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - YamlLoader is a SafeLoader


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# --------------------------------------------------------------------------- run


class RunConfig(Section):
    name: str = Field(
        "run",
        pattern=r"^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$",  # not `.` or `..`: it names directories
        description="Run name (letters, digits, . _ -, not only dots); other values refer to it as ${run.name}.",
    )
    output_dir: str = Field(
        "runs/${run.name}", description="Run directory: config, metrics.jsonl, checkpoints/, final/."
    )
    seed: int = Field(1234, ge=0, description="Seed for model init, data order, masking and dropout.")


# --------------------------------------------------------------------------- data


class SourceConfig(Section):
    """One input: a local path (file, directory or glob), a hub dataset, or a built-in corpus."""

    path: str | None = Field(
        None,
        description="Local file, directory or glob (.txt .jsonl .json .csv .tsv .parquet, optionally .gz).",
    )
    hf: str | None = Field(None, description="Hugging Face hub dataset name, e.g. wikitext (needs network).")
    name: str | None = Field(None, description="Hub dataset config name, e.g. wikitext-2-raw-v1.")
    split: str = Field("train", description="Hub dataset split to read.")
    builtin: Literal["stdlib-docs"] | None = Field(
        None,
        description="Built-in corpus: stdlib-docs = docstrings of the installed Python standard library.",
    )
    format: Literal["auto", "text", "json", "csv", "tsv", "parquet"] = Field(
        "auto", description="File format; auto = from the extension."
    )
    text_field: str = Field("text", description="Column holding the text in json/csv/tsv/parquet/hub data.")
    doc_split: Literal["line", "paragraph", "file"] = Field(
        "paragraph",
        description="How .txt files split into documents: per line, per blank-line-separated paragraph, or whole file.",
    )

    @model_validator(mode="after")
    def _one_origin(self) -> SourceConfig:
        given = [k for k in ("path", "hf", "builtin") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, hf, builtin (got {', '.join(given) or 'none'})")
        return self


class CleanConfig(Section):
    normalize: Literal["none", "NFC", "NFKC"] = Field("NFC", description="Unicode normalisation form.")
    remove_control_chars: bool = Field(True, description="Drop control characters (keeps tab and newline).")
    collapse_whitespace: bool = Field(
        True, description="Collapse runs of spaces/tabs to one space and strip ends."
    )
    keep_linebreaks: bool = Field(
        True, description="Keep newlines inside a document when collapsing whitespace."
    )
    min_chars: int = Field(
        1, ge=0, description="Drop documents shorter than this many characters (after cleaning)."
    )
    max_chars: int | None = Field(
        None, ge=1, description="Drop documents longer than this many characters (null = no limit)."
    )
    dedupe: bool = Field(True, description="Drop exact duplicate documents (by content hash).")


class DataConfig(Section):
    sources: list[SourceConfig] = Field(default_factory=list, description="Training text sources.")
    validation_sources: list[SourceConfig] = Field(
        default_factory=list,
        description="Separate validation sources; if empty, a seeded validation_fraction of the documents is held out.",
    )
    validation_fraction: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="Fraction of documents held out for validation when no validation_sources are given.",
    )
    seed: int = Field(
        1234,
        ge=0,
        description="Seed of the validation hold-out (kept apart from run.seed, so a new training seed reuses the processed data).",
    )
    processed_dir: str = Field(
        "data/processed/${run.name}",
        description="Where `lmtool preprocess` writes train/, validation/, tokenizer/ and manifest.json.",
    )
    objective: Literal["clm", "mlm"] = Field(
        "clm",
        description="clm: causal LM (documents joined with EOS); mlm: masked LM ([CLS] ... [SEP] blocks).",
    )
    block_size: int = Field(256, ge=2, description="Tokens per training block.")
    remainder: Literal["drop", "pad"] = Field(
        "drop",
        description="Last partial block of each split: drop it, or pad it (padding is ignored by the loss).",
    )
    clean: CleanConfig = Field(default_factory=CleanConfig, description="Text cleaning steps.")
    encoding_errors: Literal["replace", "skip", "fail"] = Field(
        "replace", description="Undecodable bytes: replace with U+FFFD, skip the document, or fail."
    )
    num_proc: int | None = Field(
        None,
        ge=1,
        description="Tokenizer worker processes, one thread each (null = one process that already spreads the batches over every core).",
    )
    streaming: bool | Literal["auto"] = Field(
        "auto",
        description="Read sources as streams instead of first converting them to Arrow (hub datasets: stream instead of download); auto = when local sources exceed streaming_threshold_mb.",
    )
    streaming_threshold_mb: int = Field(
        512, ge=1, description="Corpus size above which streaming: auto switches streaming on."
    )


class TokenizerTrainConfig(Section):
    type: Literal["auto", "bpe", "wordpiece"] = Field(
        "auto",
        description="bpe: byte-level BPE with <|endoftext|> (GPT-2 style); wordpiece: [PAD] [UNK] [CLS] [SEP] [MASK] (BERT style); auto: bpe for clm, wordpiece for mlm.",
    )
    vocab_size: int = Field(
        8192, ge=64, le=1_000_000, description="Vocabulary size including special tokens."
    )
    min_frequency: int = Field(
        2, ge=1, description="Minimum pair/word frequency for a merge or vocabulary entry."
    )
    lowercase: bool = Field(False, description="Lowercase text before WordPiece training (uncased BERT).")


class TokenizerConfig(Section):
    path: str | None = Field(
        None, description="Existing tokenizer: local directory or hub name. Mutually exclusive with train."
    )
    train: TokenizerTrainConfig | None = Field(
        None,
        description="Train a new tokenizer on the cleaned training split (the default when path is not set).",
    )
    trust_remote_code: bool = Field(False, description="Allow custom tokenizer code from the hub.")
    engine: Literal["auto", "tokenizers"] = Field(
        "auto",
        description="What tokenizes the corpus in preprocess. auto = tiktoken for GPT-2-style byte-level BPE "
        "(several times faster) once it has given the same ids as `tokenizers` on a sample of the corpus, "
        "else `tokenizers`; tokenizers = always the `tokenizers` library.",
    )

    @model_validator(mode="after")
    def _path_or_train(self) -> TokenizerConfig:
        if self.path is not None and self.train is not None:
            raise ValueError("set either tokenizer.path or tokenizer.train, not both")
        if self.path is None and self.train is None:
            self.train = TokenizerTrainConfig()
        return self


# --------------------------------------------------------------------------- model


COMMON_ARCHS = (
    "gpt2",
    "bert",
    "lstm",
    "llama",
    "roberta",
    "gpt_neox",
    "mistral",
    "qwen2",
    "distilbert",
    "opt",
)


class ModelConfig(Section):
    arch: str = Field(
        "gpt2",
        description="gpt2 | bert | lstm | any transformers model_type (used when building from scratch).",
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides for the architecture's config, e.g. {n_layer: 6, n_embd: 384}. Built from scratch, models default to no dropout and GPT-2's tanh GELU as one fused kernel (gelu_pytorch_tanh) unless set here.",
    )
    init_from: str | None = Field(
        None,
        description="Start from this checkpoint (local dir or hub name) instead of building from scratch.",
    )
    pad_vocab_multiple: int = Field(
        64,
        ge=1,
        description="Pad the vocabulary up to a multiple of this when building from scratch (faster matmuls).",
    )
    attention: Literal["auto", "sdpa", "eager"] = Field(
        "auto", description="Attention kernel; auto = SDPA where the model supports it."
    )
    trust_remote_code: bool = Field(False, description="Allow custom model code from the hub.")


def check_arch(arch: str) -> None:
    """Exit-2 error for an architecture neither lmtool nor transformers knows (imports transformers: ~3 s)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    known = set(CONFIG_MAPPING_NAMES) | {"lstm"}
    if arch not in known:
        close = difflib.get_close_matches(arch, sorted(known), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(
            "model.arch",
            f"unknown architecture; {hint}known: {', '.join(COMMON_ARCHS)} or any of {len(known)} transformers model types",
            value=arch,
        )


# --------------------------------------------------------------------------- train


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


class TrainConfig(Section):
    batch_size: int = Field(16, ge=1, description="Sequences per device per micro-step.")
    global_batch_size: int | None = Field(
        None,
        ge=1,
        description="Sequences per optimizer step across all devices (gradient accumulation fills the gap). Null = batch_size x devices.",
    )
    global_batch_tokens: int | None = Field(
        None, ge=1, description="Alternative to global_batch_size, in tokens (rounded to whole sequences)."
    )
    lr: float = Field(6e-4, gt=0.0, description="Peak learning rate.")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Floor of the schedule as a fraction of lr.")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warmup.")
    warmup_steps: int = Field(100, ge=0, description="Linear warmup steps.")
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
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    max_tokens: int | None = Field(None, ge=1, description="Stop after this many training tokens.")
    epochs: float | None = Field(
        None,
        gt=0.0,
        description="Stop after this many passes over the data (default 1 when no other limit is set).",
    )
    eval_every: int = Field(
        500, ge=0, description="Evaluate on the validation split every N steps (0 = only at the end)."
    )
    eval_batches: int | None = Field(
        50, ge=1, description="Cap on validation batches per evaluation (null = whole split)."
    )
    log_every: int = Field(10, ge=1, description="Log training metrics every N steps.")
    save_every: int = Field(
        1000, ge=0, description="Save a checkpoint every N steps (0 = only at the end and on signals)."
    )
    keep_last: int = Field(3, ge=1, description="Keep this many most recent checkpoints.")
    keep_best: bool = Field(False, description="Also keep the checkpoint with the best validation loss.")
    resume: str = Field(
        "auto",
        description="auto: continue from the latest complete checkpoint in output_dir; never: start fresh; or a checkpoint path.",
    )
    max_nonfinite: int = Field(
        5,
        ge=1,
        description="Stop with an error after this many non-finite losses in a row (each one skips its update).",
    )
    device: Device = Field("auto", description="Training device; auto = cuda if available, else cpu.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    mlm: MLMConfig = Field(default_factory=MLMConfig, description="Masking for the mlm objective.")

    @model_validator(mode="after")
    def _one_batch_spec(self) -> TrainConfig:
        if self.global_batch_size is not None and self.global_batch_tokens is not None:
            raise ValueError("set global_batch_size or global_batch_tokens, not both")
        return self


# --------------------------------------------------------------------------- evaluate / generate


class EvaluateConfig(Section):
    model: str = Field("${run.output_dir}/final", description="Model directory to evaluate.")
    data: str | None = Field(
        None, description="Processed data dir or a raw text/jsonl file (null = data.processed_dir)."
    )
    split: str = Field("validation", description="Split of a processed data dir to evaluate.")
    max_length: int | None = Field(
        None, ge=2, description="Window length for causal LM perplexity (null = the model's context)."
    )
    stride: int | None = Field(
        None, ge=1, description="Tokens the window moves each step (null = the window: no overlap)."
    )
    documents: Literal["concatenate", "separate"] = Field(
        "concatenate", description="Score documents as one stream or each on its own."
    )
    batch_size: int = Field(8, ge=1, description="Windows/sequences per forward pass.")
    max_samples: int | None = Field(
        None, ge=1, description="Evaluate at most this many documents/blocks (quick checks)."
    )
    pseudo_perplexity: bool = Field(
        False, description="Masked LMs: also compute pseudo-perplexity (slow: one pass per token)."
    )
    mask_probability: float = Field(
        0.15, gt=0.0, lt=1.0, description="Masked LMs: fraction of tokens masked for loss/accuracy."
    )
    seed: int = Field(0, ge=0, description="Seed for the evaluation mask.")
    precision: Precision = Field("fp32", description="Evaluation precision.")
    device: Device = Field("auto", description="Evaluation device.")
    output: str | None = Field(
        None, description="Where to write the result JSON (null = eval.json in the model directory)."
    )
    text_field: str = Field("text", description="Field holding the text when data is a .jsonl file.")
    doc_split: Literal["line", "paragraph", "file"] = Field(
        "paragraph",
        description="How a raw .txt data file splits into documents: per line, per blank-line-separated paragraph, or whole file.",
    )
    trust_remote_code: bool = Field(False, description="Allow custom model code from the hub.")


class GenerateConfig(Section):
    model: str = Field("${run.output_dir}/final", description="Model directory to sample from.")
    max_new_tokens: int = Field(64, ge=1, description="Tokens to generate per sample.")
    do_sample: bool = Field(True, description="Sample (true) or decode greedily / by beam search (false).")
    temperature: float = Field(0.8, gt=0.0, description="Sampling temperature.")
    top_k: int | None = Field(50, ge=1, description="Sample from the k most likely tokens (null = all).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    repetition_penalty: float = Field(1.0, gt=0.0, description="Penalty for repeating tokens (1.0 = none).")
    num_beams: int = Field(1, ge=1, description="Beam search width (1 = no beam search).")
    num_return_sequences: int = Field(1, ge=1, description="Samples per prompt.")
    stop: list[str] = Field(
        default_factory=list, description="Stop strings: output is cut before the first one."
    )
    seed: int | None = Field(
        None, ge=0, description="Seed; the same seed gives the same output (null = random)."
    )
    batch_size: int = Field(16, ge=1, description="Prompts per batch (left-padded, KV cache).")
    fill_mask_top_k: int = Field(5, ge=1, description="Masked LMs: candidates per mask token.")
    mode: Literal["auto", "generate", "fill-mask"] = Field(
        "auto",
        description="generate: continue prompts (causal LMs); fill-mask: predict each mask token (masked LMs); auto: by the model type.",
    )
    format: Literal["auto", "text", "jsonl"] = Field(
        "auto",
        description="stdout format: text (streamed as produced), jsonl (one JSON object per prompt x sample); auto: text on a terminal, jsonl otherwise.",
    )
    precision: Precision = Field("fp32", description="Generation precision.")
    device: Device = Field("auto", description="Generation device.")
    trust_remote_code: bool = Field(False, description="Allow custom model code from the hub.")

    @model_validator(mode="after")
    def _sequences(self) -> GenerateConfig:
        if self.num_return_sequences > 1 and not self.do_sample:
            if self.num_beams == 1:
                raise ValueError(
                    "num_return_sequences > 1 needs do_sample: true or num_beams > 1 (greedy decoding gives one sequence)"
                )
            if self.num_return_sequences > self.num_beams:
                raise ValueError(
                    f"num_return_sequences ({self.num_return_sequences}) must be at most num_beams ({self.num_beams}) for beam search"
                )
        return self


class LoggingConfig(Section):
    tensorboard: bool = Field(
        False,
        description="Also write TensorBoard event files to <output_dir>/tensorboard (needs the tensorboard extra).",
    )


# --------------------------------------------------------------------------- root


class Config(Section):
    run: RunConfig = Field(default_factory=RunConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    source_file: str | None = Field(
        None, exclude=True, description="File the config was read from (not part of the schema)."
    )


# =========================================================================== loading


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read YAML, apply `--set` overrides, fill defaults, resolve `${...}`, validate."""
    raw: dict[str, Any] = {}
    lines: dict[tuple, int] = {}
    label = "<defaults>"
    if path is not None:
        path = Path(path)
        label = str(path)
        raw, lines = _read_yaml(path)
    override_keys: set[tuple] = set()
    for item in overrides:
        keys, value = parse_override(item)
        _set_path(raw, keys, value, item)
        override_keys.add(tuple(keys))

    located = _Locator(label, lines, override_keys)
    config = _validate(raw, located)
    resolved = _interpolate(config.model_dump(mode="python"), located)
    config = _validate(resolved, located)
    config.source_file = label if path is not None else None
    return config


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def json_schema() -> dict:
    return Config.model_json_schema()


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError("--set", "expects key.path=value", value=item)
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError("--set", "expects key.path=value with a non-empty dotted key", value=item)
    try:
        value = yaml_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text  # not valid YAML: take it as a plain string
    return key.split("."), value


def _read_yaml(path: Path) -> tuple[dict, dict[tuple, int]]:
    if not path.exists():
        raise LmtoolError(f"config file not found: {path}")
    if path.is_dir():
        raise LmtoolError(f"config path is a directory, not a YAML file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LmtoolError(f"cannot read config file {path}: {exc}") from None
    try:
        node = yaml.compose(text, Loader=YamlLoader)
        data = yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LmtoolError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise LmtoolError(f"{path}: the config must be a YAML mapping (got {type(data).__name__})")
    return data, _line_numbers(node)


def _line_numbers(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = prefix + (key_node.value,)
            lines[key] = key_node.start_mark.line + 1
            lines.update(_line_numbers(value_node, key))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = prefix + (index,)
            lines[key] = item.start_mark.line + 1
            lines.update(_line_numbers(item, key))
    return lines


def _set_path(raw: dict, keys: list[str], value: Any, item: str) -> None:
    target: Any = raw
    for depth, key in enumerate(keys[:-1]):
        if isinstance(target, list):
            target = target[_list_index(target, key, keys[: depth + 1], item)]
            continue
        nxt = target.get(key)
        if nxt is None:
            nxt = target[key] = {}
        elif not isinstance(nxt, dict | list):
            raise ConfigError(
                ".".join(keys[: depth + 1]),
                f"is a value, not a section, so --set {item!r} cannot go inside it",
                has_value=False,
            )
        target = nxt
    last = keys[-1]
    if isinstance(target, list):
        target[_list_index(target, last, keys, item)] = value
    else:
        target[last] = value


def _list_index(target: list, key: str, keys: list[str], item: str) -> int:
    if not key.isdigit() or int(key) >= len(target):
        raise ConfigError(
            ".".join(keys),
            f"is not an index of a list of {len(target)} items (from --set {item!r})",
            has_value=False,
        )
    return int(key)


class _Locator:
    """Says where a dotted key came from: a file line or a --set override."""

    def __init__(self, label: str, lines: dict[tuple, int], overrides: set[tuple]):
        self.label, self.lines, self.overrides = label, lines, overrides

    def where(self, loc: tuple) -> str | None:
        loc = tuple(str(p) if not isinstance(p, int) else p for p in loc)
        for cut in range(len(loc), 0, -1):
            key = loc[:cut]
            if tuple(str(k) for k in key) in {tuple(str(k) for k in o) for o in self.overrides}:
                return "from --set"
            if key in self.lines:
                return f"{self.label}:{self.lines[key]}"
        return None


def _validate(raw: dict, located: _Locator) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first = _strip_union_tags(errors[0]["loc"])
        # A union field (e.g. `bool | "auto"`) fails once per member: say all the ways it could be right.
        alternatives = [e["msg"].split(", unable")[0] for e in errors if _strip_union_tags(e["loc"]) == first]
        err = dict(errors[0], loc=first)
        if len(alternatives) > 1:
            err["msg"] = " or ".join(m.removeprefix("Input should be ") for m in alternatives)
            err["msg"] = "Input should be " + err["msg"]
        raise _config_error(err, located) from None


def _config_error(err: dict, located: _Locator) -> ConfigError:
    loc = err["loc"]
    key = ".".join(str(p) for p in loc)
    where = located.where(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        options = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), options, n=1, cutoff=0.5)
        hint = f"did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?" if close else None
        if not close and options:
            hint = f"known keys here: {', '.join(sorted(options))}"
        return ConfigError(key, "unknown key", value=err.get("input"), hint=hint, location=where)
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind == "missing":
        return ConfigError(key, "is required", has_value=False, location=where)
    value = err.get("input")
    has_value = not isinstance(value, dict)
    return ConfigError(
        key or "config", message[0].lower() + message[1:], value=value, has_value=has_value, location=where
    )


def _strip_union_tags(loc: tuple) -> tuple:
    """Drop the union-member tags pydantic adds to a location (e.g. `bool`, `literal['auto']`)."""
    out: list = []
    model: Any = Config
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if isinstance(part, int):
            out.append(part)
        elif fields is not None:
            out.append(part)
            model = _section_type(fields[part].annotation) if part in fields else None
        elif not _is_union_tag(part):
            out.append(part)
    return tuple(out)


def _is_union_tag(part: str) -> bool:
    return part in ("int", "float", "str", "bool", "none") or part.startswith(
        ("literal[", "list[", "dict[", "tuple[", "function-")
    )


def _section_type(annotation: Any) -> Any:
    """The Section class behind an annotation such as `SourceConfig | None` or `list[SourceConfig]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _section_type(arg)
        if found is not None:
            return found
    return None


def _fields_at(loc: tuple) -> list[str]:
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return []
        model = _section_type(fields[part].annotation)
        if model is None:
            return []
    return [name for name in getattr(model, "model_fields", {}) if name != "source_file"]


_REF = re.compile(r"\$\{([^}]+)\}")


def _interpolate(data: dict, located: _Locator) -> dict:
    """Replace `${a.b}` by the value at a.b and `${env:NAME}` by an environment variable."""

    def lookup(ref: str, key: str, seen: tuple[str, ...]) -> str:
        if ref.startswith("env:"):
            name = ref[4:]
            if name not in os.environ:
                raise ConfigError(
                    key,
                    f"refers to environment variable {name}, which is not set",
                    has_value=False,
                    location=located.where(tuple(key.split("."))),
                )
            return os.environ[name]
        if ref in seen:
            raise ConfigError(key, f"circular reference ${{{ref}}}", has_value=False)
        target: Any = data
        for part in ref.split("."):
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                raise ConfigError(
                    key,
                    f"refers to ${{{ref}}}, which is not a config key",
                    has_value=False,
                    location=located.where(tuple(key.split("."))),
                )
        if isinstance(target, dict | list):
            raise ConfigError(key, f"refers to ${{{ref}}}, which is a section, not a value", has_value=False)
        return resolve(target, ref, (*seen, ref)) if isinstance(target, str) else str(target)

    def resolve(value: Any, key: str, seen: tuple[str, ...] = ()) -> Any:
        if isinstance(value, str):
            return _REF.sub(lambda m: lookup(m.group(1).strip(), key, seen or (key,)), value)
        if isinstance(value, dict):
            return {k: resolve(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, f"{key}.{i}") for i, v in enumerate(value)]
        return value

    return resolve(data, "")


# =========================================================================== path checks


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_hub_id(name: str) -> bool:
    """`gpt2` or `org/model` (not a path that starts with . or / and has no more than one slash)."""
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "/", "~"))


def check_references(config: Config, *, need_sources: bool = True) -> None:
    """Check what the schema alone cannot: the model architecture exists, and the local paths the
    config names exist (hub names are taken on trust: we may be offline)."""
    if config.model.init_from is None:
        check_arch(config.model.arch)
    from glob import glob

    for field, sources in (
        ("data.sources", config.data.sources),
        ("data.validation_sources", config.data.validation_sources),
    ):
        for i, source in enumerate(sources):
            if source.path is None:
                continue
            path = os.path.expanduser(source.path)
            if any(ch in path for ch in "*?["):
                if not glob(path, recursive=True):
                    raise ConfigError(f"{field}.{i}.path", "glob matches no files", value=source.path)
            elif not os.path.exists(path):
                raise ConfigError(f"{field}.{i}.path", "file or directory not found", value=source.path)
    if need_sources and not config.data.sources and not os.path.isdir(config.data.processed_dir):
        raise ConfigError(
            "data.sources",
            f"is empty and {config.data.processed_dir} does not exist: give at least one source",
            value=[],
        )
    for key, name in (("tokenizer.path", config.tokenizer.path), ("model.init_from", config.model.init_from)):
        if name is not None and not os.path.exists(os.path.expanduser(name)) and not looks_like_hub_id(name):
            raise ConfigError(key, "directory not found (and not a hub model name)", value=name)
