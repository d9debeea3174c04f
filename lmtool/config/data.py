"""The run, data and tokenizer sections: what is read, how it is cleaned and tokenized."""

from __future__ import annotations

import codecs
from typing import Literal

from pydantic import Field, field_validator, model_validator

from lmtool.config.base import Count, Section, Seed

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
    seed: Seed = Field(1234, description="Seed for model init, data order, masking and dropout.")


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
    format: Literal["auto", "text", "json", "csv", "tsv", "parquet", "conll"] = Field(
        "auto",
        description="File format; auto = from the extension (.conll .bio .iob: conll, token_classification only).",
    )
    text_field: str = Field("text", description="Column holding the text in json/csv/tsv/parquet/hub data.")
    doc_split: Literal["line", "paragraph", "file"] = Field(
        "paragraph",
        description="How .txt files split into documents: per line, per blank-line-separated paragraph, or whole file.",
    )
    encoding: str | None = Field(
        None,
        description="Text encoding of local text/json/csv/tsv files, any Python codec name (latin-1, cp1252, "
        "utf-16, ...); null = what a byte-order mark says (UTF-8/16/32), else UTF-8.",
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                known = codecs.lookup(value)._is_text_encoding
            except LookupError:
                known = False
            if not known:
                raise ValueError(f"unknown text encoding {value!r} (e.g. utf-8, latin-1, cp1252, utf-16)")
        return value

    @model_validator(mode="after")
    def _one_origin(self) -> SourceConfig:
        given = [k for k in ("path", "hf", "builtin") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, hf, builtin (got {', '.join(given) or 'none'})")
        if self.encoding is not None and self.path is None:
            raise ValueError("encoding applies to local files (path) only")
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
    max_chars: Count | None = Field(
        None, description="Drop documents longer than this many characters (null = no limit)."
    )
    dedupe: bool = Field(True, description="Drop exact duplicate documents (by content hash).")


class DataConfig(Section):
    sources: list[SourceConfig] = Field(default_factory=list, description="Training text sources.")
    validation_sources: list[SourceConfig] = Field(
        default_factory=list,
        description="Separate validation sources; if empty, a seeded validation_fraction of the documents is held out.",
    )
    test_sources: list[SourceConfig] = Field(
        default_factory=list,
        description="finetune: labeled test sources, preprocessed into test/ (never trained or selected on).",
    )
    validation_fraction: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="Fraction of documents held out for validation when no validation_sources are given.",
    )
    seed: Seed = Field(
        1234,
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
    block_size: int = Field(256, ge=2, description="Tokens per training block (mlm: at least 3).")
    remainder: Literal["drop", "pad"] = Field(
        "drop",
        description="Last partial block of each split: drop it, or pad it (padding is ignored by the loss).",
    )
    clean: CleanConfig = Field(default_factory=CleanConfig, description="Text cleaning steps.")
    encoding_errors: Literal["replace", "skip", "fail"] = Field(
        "replace", description="Undecodable bytes: replace with U+FFFD, skip the document, or fail."
    )
    num_proc: Count | None = Field(
        None,
        description="Tokenizer worker processes, one thread each (null = one process that already spreads the batches over every core).",
    )
    streaming: bool | Literal["auto"] = Field(
        "auto",
        description="Read parquet files and hub datasets as streams instead of first converting them to Arrow (hub datasets: stream instead of download; local text/json/csv files always stream); auto = when local sources exceed streaming_threshold_mb.",
    )
    streaming_threshold_mb: Count = Field(
        512, description="Corpus size above which streaming: auto switches streaming on."
    )

    @model_validator(mode="after")
    def _room_for_text(self) -> DataConfig:
        if self.objective == "mlm" and self.block_size < 3:
            raise ValueError(
                f"data.block_size {self.block_size} is too small for mlm: a block holds [CLS] and [SEP] plus at least one token (at least 3)"
            )
        return self


class TokenizerTrainConfig(Section):
    type: Literal["auto", "bpe", "wordpiece"] = Field(
        "auto",
        description="bpe: byte-level BPE with <|endoftext|> (GPT-2 style; for mlm RoBERTa's <s> <pad> </s> <unk> <mask>); wordpiece: [PAD] [UNK] [CLS] [SEP] [MASK] (BERT style; for clm [SEP] ends documents); auto: bpe for clm, wordpiece for mlm.",
    )
    vocab_size: int = Field(
        8192, ge=64, le=1_000_000, description="Vocabulary size including special tokens."
    )
    min_frequency: Count = Field(
        2, description="Minimum pair/word frequency for a merge or vocabulary entry."
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
