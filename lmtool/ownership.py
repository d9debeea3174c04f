"""What lmtool may delete: only directories it made, never one that holds an input of the run.

`--overwrite` replaces a run directory or a processed data directory. A config can point those
anywhere (`run.output_dir: .`, `data.processed_dir: data` beside `data/corpus.txt`), so before
deleting, lmtool checks that it made the directory (a run's `.lmtool-run` marker, or a processed
directory's manifest), that it is not the working directory, the home directory or one of their
parents, and that no configured input (source, tokenizer, init checkpoint, processed data) lies in it.
"""

from __future__ import annotations

import json
import os
from itertools import takewhile
from pathlib import Path

from lmtool import __version__
from lmtool.errors import LmtoolError

RUN_MARKER = ".lmtool-run"
_WILDCARDS = "*?["
# What lmtool writes at the top of a run directory (train/rundir.py, metrics.py, checkpoint.py, final.py,
# ranklog.py, requeue.py; .tmp-/.old- are atomic.py's names while a file or directory is replaced).
# `--overwrite` deletes a run directory only when it holds nothing else: anything else is a user's.
RUN_ENTRIES = frozenset(
    {
        RUN_MARKER,
        "config.yaml",
        "metrics.jsonl",
        ".tmp-metrics.jsonl",
        "checkpoints",
        "final",
        ".tmp-final",
        ".old-final",
        "logs",
        "tensorboard",
        "REQUEUE",
        "FINISHED",
    }
)


def mark_run_dir(run_dir: Path) -> None:
    """Record that lmtool made `run_dir` (kept across resumes)."""
    marker = Path(run_dir) / RUN_MARKER
    if not marker.exists():
        marker.write_text(
            f"made by lmtool {__version__} pretrain; `--overwrite` may delete this directory\n",
            encoding="utf-8",
        )


def is_run_dir(path: Path) -> bool:
    """A run directory lmtool made: the marker, or (run directories from before the marker existed) the
    resolved config together with metrics or checkpoints."""
    path = Path(path)
    if (path / RUN_MARKER).is_file():
        return True
    return (path / "config.yaml").is_file() and (
        (path / "metrics.jsonl").is_file() or (path / "checkpoints").is_dir()
    )


def is_processed_dir(path: Path) -> bool:
    """A processed data directory lmtool preprocess made: its manifest carries the content key."""
    try:
        manifest = json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "key" in manifest


def check_only_run_files(run_dir: Path, key: str = "run.output_dir") -> None:
    """Exit 2, naming them, when the lmtool run directory `run_dir` holds entries lmtool does not make (a
    user's notes or plots put beside the run): `--overwrite` would delete them with it."""
    foreign = sorted(p.name for p in Path(run_dir).iterdir() if p.name not in RUN_ENTRIES)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise LmtoolError(
            f"{key}: {run_dir} holds {shown}, which lmtool did not make; --overwrite deletes only a run "
            "directory holding nothing but lmtool's files - move them out (or choose another run.output_dir)"
        )


def is_empty_dir(path: Path) -> bool:
    return Path(path).is_dir() and not any(Path(path).iterdir())


def check_removable(directory: Path, key: str, inputs: dict[str, str | None]) -> None:
    """Exit 2 if deleting `directory` (the value of config `key`) could delete what lmtool did not make:
    the working or home directory or a parent of them, or a directory holding one of `inputs`
    (config key → path as configured; globs, hub names and unset keys allowed)."""
    target = Path(directory).expanduser().resolve()
    for protected in (Path.cwd(), Path.home()):
        if target == protected.resolve() or target in protected.resolve().parents:
            raise LmtoolError(
                f"{key}: {directory} is the working or home directory or one of their parents; refusing to delete it"
            )
    for input_key, value in inputs.items():
        path = _fixed_part(value) if value else None
        if path is None or not path.exists():  # unset, or a hub name: nothing on disk to lose
            continue
        path = path.resolve()
        if path == target or target in path.parents:
            raise LmtoolError(
                f"{key}: {directory} holds {input_key} ({value}); refusing to delete it - "
                f"point {key} elsewhere"
            )


def _fixed_part(path: str) -> Path:
    """The part of a path before its first wildcard (a glob's directory)."""
    parts = Path(os.path.expanduser(path)).parts
    fixed = list(takewhile(lambda part: not any(ch in part for ch in _WILDCARDS), parts))
    return Path(*fixed) if fixed else Path(".")
