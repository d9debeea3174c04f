"""Labeled sources → examples: (text, pair, label) rows for classification, (tokens, tags) sentences
for token classification. Every problem names the source key and the file and line (or row) it is
on, so a bad row is found without opening the data in another tool."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmtool.config import FinetuneConfig
from lmtool.data import sources as src
from lmtool.data.conll import read_conll
from lmtool.data.readers import read_rows
from lmtool.errors import ConfigError, LmtoolError


@dataclass
class Example:
    """One labeled example; `where` says where it was read ("data.sources.0: train.csv line 7")."""

    where: str
    label: object = None  # classification: the raw label value
    text: str | None = None
    pair: str | None = None
    tokens: list[str] | None = None  # token classification: the words and their tags
    tags: list[str] | None = None


def read_examples(
    source: src.Source, cfg: FinetuneConfig, encoding_errors: str, cache_dir: Path, word_level: bool
) -> Iterator[Example]:
    """The examples of one resolved source, in file order: sentences of tagged words when `word_level`."""
    if word_level:
        yield from _sentences(source, cfg, encoding_errors, cache_dir)
        return
    refusal = (
        f"{source.format} files hold no text/label columns; classification reads csv, tsv, json(l) or parquet"
    )
    columns = [cfg.text_field, cfg.label_field]
    for where, row in _table_rows(
        source, cfg, encoding_errors, cache_dir, columns, ("text", "conll"), refusal
    ):
        yield _classification_example(row, cfg, where)


def _rows(source: src.Source, encoding_errors: str, cache_dir: Path) -> Iterator[tuple[str, dict]]:
    """(where, row) of a JSON/CSV/TSV file, parquet file or hub dataset."""
    if source.config.path is not None and source.format != "parquet":
        for path, where, row in read_rows(
            source.files, source.format, source.config, source.key, encoding_errors
        ):
            yield f"{source.key}: {path} {where}", row
        return
    for where, row in src.dataset_rows(source, streaming=False, cache_dir=cache_dir):
        yield f"{source.key}: {source.label} {where}", row


def _table_rows(
    source: src.Source,
    cfg: FinetuneConfig,
    encoding_errors: str,
    cache_dir: Path,
    columns: list[str],
    refused: tuple[str, ...],
    refusal: str,
) -> Iterator[tuple[str, dict]]:
    """(where, row) of a source the task reads as a table: a format in `refused` is an error (`refusal`
    says what the task reads instead), and the first row must have the task's `columns`."""
    if source.format in refused:
        raise ConfigError(f"{source.key}.format", refusal, value=source.format)
    first = True
    for where, row in _rows(source, encoding_errors, cache_dir):
        if first:
            _check_columns(row, cfg, where, columns)
            first = False
        yield where, row


def _check_columns(row: dict, cfg: FinetuneConfig, where: str, needed: list[str]) -> None:
    names = {
        cfg.text_field: "text_field",
        cfg.label_field: "label_field",
        cfg.tokens_field: "tokens_field",
        cfg.tags_field: "tags_field",
    }
    for column in needed:
        if column not in row:
            raise ConfigError(
                f"finetune.{names[column]}",
                f"no such column in {where.rsplit(' ', 2)[0]}; columns: {', '.join(map(str, row)) or '(none)'}",
                value=column,
            )


def _classification_example(row: dict, cfg: FinetuneConfig, where: str) -> Example:
    text = row.get(cfg.text_field)
    if not isinstance(text, str) or not text.strip():
        what = "blank" if isinstance(text, str) else "no" if text is None else f"a {type(text).__name__} as"
        raise LmtoolError(f"{where} has {what} text in column '{cfg.text_field}' (finetune.text_field)")
    pair = None
    if cfg.text_pair_field is not None:
        pair = row.get(cfg.text_pair_field)
        if not isinstance(pair, str) or not pair.strip():
            what = "a blank" if isinstance(pair, str) else "no"
            raise LmtoolError(
                f"{where} has {what} second text in column '{cfg.text_pair_field}' (finetune.text_pair_field)"
            )
    label = row.get(cfg.label_field)
    if label is None or label == "" or (isinstance(label, str) and not label.strip()):
        raise LmtoolError(f"{where} has an empty label in column '{cfg.label_field}' (finetune.label_field)")
    return Example(where, label=label, text=text, pair=pair)


def _sentences(
    source: src.Source, cfg: FinetuneConfig, encoding_errors: str, cache_dir: Path
) -> Iterator[Example]:
    if source.format in ("conll", "text"):  # a .txt file with tags is CoNLL too: plain text has no tags
        for path, where, tokens, tags in read_conll(
            source.files, source.config, cfg.conll, source.key, encoding_errors
        ):
            yield Example(f"{source.key}: {path} {where}", tokens=tokens, tags=tags)
        return
    refusal = (
        "token_classification reads CoNLL files (.conll .bio .iob) or JSON lines with token and tag lists"
    )
    columns = [cfg.tokens_field, cfg.tags_field]
    for where, row in _table_rows(source, cfg, encoding_errors, cache_dir, columns, ("csv", "tsv"), refusal):
        tokens, tags = row.get(cfg.tokens_field), row.get(cfg.tags_field)
        if not _string_list(tokens) or not isinstance(tags, list):
            raise LmtoolError(
                f"{where}: '{cfg.tokens_field}' must be a list of strings and '{cfg.tags_field}' a list of tags"
            )
        if len(tokens) != len(tags):
            raise LmtoolError(f"{where} has {len(tokens)} tokens but {len(tags)} tags")
        blank = next((i for i, token in enumerate(tokens) if not token.strip()), None)
        if blank is not None:  # a tokenizer gives it no sub-token, so its tag could not be trained
            raise LmtoolError(f"{where} has a blank token at position {blank} in '{cfg.tokens_field}'")
        if tokens:
            yield Example(where, tokens=list(tokens), tags=[_tag(t, where) for t in tags])


def _string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _tag(value: object, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise LmtoolError(f"{where} has an empty or non-text tag ({value!r})")
