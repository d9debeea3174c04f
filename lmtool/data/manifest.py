"""manifest.json of a processed data directory, written and read in one place (what `lmtool preprocess` recorded:
kind, task, objective, block size, labels, tokenizer fingerprint, content key, counts)."""

from __future__ import annotations

import json
from pathlib import Path

from lmtool.errors import LmtoolError

MANIFEST = "manifest.json"


def has_manifest(path: Path) -> bool:
    """A directory with a manifest.json: processed data, as opposed to a raw text file or folder."""
    return path.is_dir() and (path / MANIFEST).is_file()


def read_manifest(path: Path) -> dict | None:
    """The manifest of processed directory `path`; None when it has none or it cannot be read as one."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def manifest_of(path: Path) -> dict:
    """The manifest of a directory `has_manifest` found; exit 2 when it cannot be read."""
    manifest = read_manifest(path)
    if manifest is None:
        raise LmtoolError(
            f"{path / MANIFEST} cannot be read: run `lmtool preprocess --overwrite` to make it again"
        )
    return manifest


def write_manifest_file(path: Path, manifest: dict) -> None:
    """Write the manifest into processed directory `path` (still preprocess's work directory: the whole
    directory appears at once when the build is done)."""
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
