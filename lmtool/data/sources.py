"""Data sources → batches of raw document texts.

Local files and hub datasets go through the same `datasets` builders (text/json/csv/parquet),
so a hub name and a folder of files behave alike; the built-in `stdlib-docs` corpus is
generated in-process. Every failure names the source key and, where known, the file.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

from lmtool.config import SourceConfig
from lmtool.data.partial import disk_full
from lmtool.errors import ConfigError, LmtoolError

FORMATS = {
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
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
        files = sorted(Path(p) for p in glob(path, recursive=True) if os.path.isfile(p))
        if not files:
            raise ConfigError(f"{key}.path", "glob matches no files", value=config.path)
    elif os.path.isdir(path):
        files = sorted(p for p in Path(path).rglob("*") if p.is_file() and _suffix(p) in FORMATS)
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
    (for files under 16 MB) a content hash; the stdlib corpus is identified by the Python build."""
    info: dict = {"config": source.config.model_dump(mode="json")}
    if source.config.builtin == "stdlib-docs":
        from lmtool.data.stdlib_docs import fingerprint as stdlib_fingerprint

        info["stdlib"] = stdlib_fingerprint()
    for path in source.files:
        stat = path.stat()
        entry = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        if stat.st_size < HASH_CONTENT_BELOW:
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        info.setdefault("files", []).append(entry)
    return info


def iter_texts(source: Source, *, streaming: bool, encoding_errors: str, cache_dir: Path) -> Iterator[list]:
    """Batches of document texts (None for a missing value) in a deterministic order."""
    if source.config.builtin == "stdlib-docs":
        from lmtool.data.stdlib_docs import iter_docstrings

        yield from _batched(iter_docstrings())
        return
    dataset = _load(source, streaming=streaming, encoding_errors=encoding_errors, cache_dir=cache_dir)
    field_name = source.config.text_field
    try:
        batches = dataset.select_columns([field_name]).iter(batch_size=BATCH)
        for batch in batches:
            yield batch[field_name]
    except LmtoolError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure while reading is a problem with this input
        raise _read_error(source, exc, encoding_errors) from None


def _batched(texts: Iterator[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _load(source: Source, *, streaming: bool, encoding_errors: str, cache_dir: Path):
    import datasets

    cfg = source.config
    try:
        if cfg.hf is not None:
            dataset = datasets.load_dataset(cfg.hf, cfg.name, split=cfg.split, streaming=streaming)
        else:
            builder, kwargs = _builder_args(source, encoding_errors)
            files = [str(f) for f in source.files]
            dataset = datasets.load_dataset(
                builder,
                data_files=files,
                split="train",
                streaming=streaming,
                cache_dir=str(cache_dir),
                **kwargs,
            )
    except LmtoolError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for unreadable input
        if cfg.hf is not None:
            raise LmtoolError(
                f"{source.key}.hf: cannot load hub dataset '{source.label}': {_first_line(exc)}"
            ) from None
        raise _read_error(source, exc, encoding_errors) from None
    columns = _columns(dataset)
    if cfg.text_field not in columns:
        raise ConfigError(
            f"{source.key}.text_field",
            f"no such column in {source.label}; columns: {', '.join(columns) or '(none)'}",
            value=cfg.text_field,
        )
    return dataset


def _builder_args(source: Source, encoding_errors: str) -> tuple[str, dict]:
    # Decode leniently unless asked to fail: replaced bytes become U+FFFD, which the cleaner counts
    # (and drops under `skip`).
    errors = "strict" if encoding_errors == "fail" else "replace"
    fmt = source.format
    if fmt == "text":
        sample_by = {"line": "line", "paragraph": "paragraph", "file": "document"}[source.config.doc_split]
        return "text", {
            "sample_by": sample_by,
            "keep_linebreaks": sample_by != "line",
            "encoding_errors": errors,
        }
    if fmt == "json":
        # The json builder hands "utf-8" files to Arrow undecoded (strict); naming the codec "utf8"
        # routes them through Python's decoder, which honours encoding_errors.
        return "json", {"encoding": "utf8" if errors == "replace" else "utf-8", "encoding_errors": errors}
    if fmt in ("csv", "tsv"):
        kwargs = {"encoding_errors": errors, "keep_default_na": False}
        return "csv", {**kwargs, "sep": "\t"} if fmt == "tsv" else kwargs
    return "parquet", {}


def _columns(dataset) -> list[str]:
    names = dataset.column_names
    if names is None:  # a streamed json source may not know its columns before the first row
        first = next(iter(dataset.take(1)), {})
        names = list(first)
    return list(names)


def _read_error(source: Source, exc: Exception, encoding_errors: str) -> Exception:
    if disk_full(exc):  # writing the Arrow cache failed: not this source's fault; preprocess names the output
        return exc
    cause = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        if isinstance(cause, UnicodeDecodeError):
            break
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, UnicodeDecodeError):
        bad = _first_undecodable(source.files)
        where = f"{bad[0]} (byte {bad[1]})" if bad else source.label
        if encoding_errors == "fail":
            return LmtoolError(
                f"{source.key}: {where} is not valid UTF-8 (data.encoding_errors is fail; use replace or skip to go on)"
            )
        return LmtoolError(
            f"{source.key}: {where} is not valid UTF-8 and this compressed format is decoded strictly; decompress it so data.encoding_errors applies"
        )
    return LmtoolError(f"{source.key}: cannot read {source.label}: {_first_line(exc)}")


def _first_undecodable(files: list[Path]) -> tuple[Path, int] | None:
    """The first file (and byte offset) that is not valid UTF-8, scanning in 1 MB chunks."""
    for path in files:
        opener = gzip.open if path.suffix.lower() == ".gz" else open
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        with opener(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as err:
                    return path, offset + err.start
                offset += len(chunk)
    return None


def _first_line(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
