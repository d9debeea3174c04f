"""Data sources → batches of raw document texts.

Local text/json/csv/tsv files are decoded and parsed by data/readers.py (encodings, byte-order
marks, 1-based line numbers in every message); hub datasets and parquet files go through the
`datasets` builders; the built-in `stdlib-docs` corpus is generated in-process. Every failure
names the source key and, where known, the file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lmtool.config import SourceConfig
from lmtool.data.decode import unreadable
from lmtool.data.files import files_under, glob_files
from lmtool.data.readers import read_documents
from lmtool.diskfull import is_disk_full
from lmtool.errors import ConfigError, LmtoolError, first_line
from lmtool.hub import require_hub

FORMATS = {
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".conll": "conll",
    ".bio": "conll",
    ".iob": "conll",
}
# Source files smaller than this are fingerprinted by content, larger ones by size + mtime.
HASH_CONTENT_BELOW = 16 << 20
BATCH = 1000


@dataclass
class Source:
    """A source with its files resolved: `key` is its dotted config key (for messages)."""

    key: str
    config: SourceConfig
    files: list[Path] = field(default_factory=list)
    format: str | None = None

    @property
    def label(self) -> str:
        cfg = self.config
        if cfg.builtin:
            return cfg.builtin
        if cfg.hf:
            return f"{cfg.hf}{'/' + cfg.name if cfg.name else ''}:{cfg.split}"
        return cfg.path or ""


def resolve(config: SourceConfig, key: str) -> Source:
    """Expand a path, directory or glob into files and pick their format; exit 2 if nothing matches."""
    source = Source(key, config)
    if config.path is None:
        return source
    path = os.path.expanduser(config.path)
    if any(ch in path for ch in "*?["):
        files = [Path(p) for p in glob_files(path, key)]
        if not files:
            raise ConfigError(f"{key}.path", "glob matches no files", value=config.path)
    elif os.path.isdir(path):
        files = [Path(p) for p in files_under(path, key) if _suffix(Path(p)) in FORMATS]
        if not files:
            known = " ".join(sorted(FORMATS))
            raise ConfigError(
                f"{key}.path", f"directory holds no data files ({known}, optionally .gz)", value=config.path
            )
    elif os.path.isfile(path):
        files = [Path(path)]
    else:
        raise ConfigError(f"{key}.path", "file or directory not found", value=config.path)
    source.files = files
    source.format = _format(source)
    return source


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _format(source: Source) -> str:
    if source.config.format != "auto":
        return source.config.format
    formats = {FORMATS.get(_suffix(f)) for f in source.files}
    if None in formats:
        odd = next(f for f in source.files if _suffix(f) not in FORMATS)
        raise ConfigError(
            f"{source.key}.format",
            f"cannot tell the format of {odd} from its extension; set it",
            value="auto",
        )
    if len(formats) > 1:
        raise ConfigError(
            f"{source.key}.path",
            f"mixes formats ({', '.join(sorted(formats))}); list them as separate sources",
            value=source.config.path,
        )
    return formats.pop()


def local_bytes(sources: list[Source]) -> int:
    """Bytes on disk of all local source files (compressed size for .gz)."""
    return sum(f.stat().st_size for s in sources for f in s.files)


def fingerprint(source: Source) -> dict:
    """What identifies the source's content for the cache key: its config plus per-file size, mtime and
    (for files under 16 MB) a content hash; the stdlib corpus is identified by the Python build.
    Every file is opened here, so one that cannot be read stops preprocess before any work."""
    info: dict = {"config": source.config.model_dump(mode="json")}
    if source.config.builtin == "stdlib-docs":
        from lmtool.data.stdlib_docs import fingerprint as stdlib_fingerprint

        info["stdlib"] = stdlib_fingerprint()
    for path in source.files:
        try:
            with open(path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                entry = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
                if stat.st_size < HASH_CONTENT_BELOW:
                    entry["sha256"] = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as exc:
            raise unreadable(source.key, path, exc) from None
        if stat.st_size == 0:  # most likely a mistake (a failed export or copy): say so early
            raise LmtoolError(f"{source.key}: {path} is empty")
        info.setdefault("files", []).append(entry)
    return info


def iter_texts(
    source: Source, *, streaming: bool, encoding_errors: str, cache_dir: Path, missing: object = None
) -> Iterator[list]:
    """Batches of document texts (None for a null value, `missing` for a row without the text field)
    in a deterministic order."""
    if source.config.builtin == "stdlib-docs":
        from lmtool.data.stdlib_docs import iter_docstrings

        yield from _batched(iter_docstrings())
        return
    if source.format == "conll":
        raise ConfigError(
            f"{source.key}.format",
            "CoNLL files hold tagged tokens, not documents: they are for finetune token_classification",
            value=source.config.format,
        )
    if source.config.path is not None and source.format != "parquet":
        yield from _batched(
            read_documents(source.files, source.format, source.config, source.key, encoding_errors, missing)
        )
        return
    dataset = _load(source, streaming=streaming, cache_dir=cache_dir)
    field_name = source.config.text_field
    try:
        batches = dataset.select_columns([field_name]).iter(batch_size=BATCH)
        for batch in batches:
            yield batch[field_name]
    except LmtoolError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure while reading is a problem with this input
        raise _read_error(source, exc) from None


def _batched(texts: Iterator) -> Iterator[list]:
    batch: list = []
    for text in texts:
        batch.append(text)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _load(source: Source, *, streaming: bool, cache_dir: Path, text_column: bool = True):
    """A hub dataset or local parquet files through `datasets` (text formats: data/readers.py);
    `text_column`: check that the source's text_field is a column (labeled data checks its own)."""
    import datasets

    cfg = source.config
    try:
        if cfg.hf is not None:
            require_hub(cfg.hf, f"{source.key}.hf", repo_type="dataset")
            dataset = datasets.load_dataset(cfg.hf, cfg.name, split=cfg.split, streaming=streaming)
        else:
            files = [str(f) for f in source.files]
            dataset = datasets.load_dataset(
                "parquet", data_files=files, split="train", streaming=streaming, cache_dir=str(cache_dir)
            )
    except LmtoolError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for unreadable input
        if cfg.hf is not None:
            raise LmtoolError(
                f"{source.key}.hf: cannot load hub dataset '{source.label}': {_cause_line(exc)}"
            ) from None
        raise _read_error(source, exc) from None
    columns = _columns(dataset)
    if text_column and cfg.text_field not in columns:
        raise ConfigError(
            f"{source.key}.text_field",
            f"no such column in {source.label}; columns: {', '.join(columns) or '(none)'}",
            value=cfg.text_field,
        )
    return dataset


def _columns(dataset) -> list[str]:
    names = dataset.column_names
    if names is None:  # a streamed source may not know its columns before the first row
        first = next(iter(dataset.take(1)), {})
        names = list(first)
    return list(names)


def _read_error(source: Source, exc: Exception) -> Exception:
    if is_disk_full(
        exc
    ):  # writing the Arrow cache failed: not this source's fault; preprocess names the output
        return exc
    return LmtoolError(f"{source.key}: cannot read {source.label}: {_cause_line(exc)}")


def _cause_line(exc: BaseException) -> str:
    """The root cause's first line and type: datasets wraps the error that says what went wrong."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else first_line(exc)


def dataset_rows(source: Source, *, streaming: bool, cache_dir: Path) -> Iterator[tuple[str, dict]]:
    """("row N", row) of a hub dataset or local parquet files, for labeled data (which checks its
    columns); class-label columns (ints with names, as GLUE's and CoNLL-2003's) give their names."""
    import datasets

    dataset = _load(source, streaming=streaming, cache_dir=cache_dir, text_column=False)
    named = {}
    for column, feature in (dataset.features or {}).items():
        inner = getattr(feature, "feature", None)
        if isinstance(feature, datasets.ClassLabel) or isinstance(inner, datasets.ClassLabel):
            named[column] = feature
    try:
        for number, row in enumerate(dataset, start=1):
            for column, feature in named.items():
                row[column] = _label_names(feature, row[column])
            yield f"row {number}", row
    except LmtoolError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure while reading is a problem with this input
        raise _read_error(source, exc) from None


def _label_names(feature, value):
    """A class-label value (or list of them) as its name; an id outside the names (GLUE's -1 for
    unlabeled test rows) stays a number, which the label checks then name."""
    if isinstance(value, list):
        return [_label_names(feature.feature, item) for item in value]
    return feature.names[value] if isinstance(value, int) and 0 <= value < len(feature.names) else value
