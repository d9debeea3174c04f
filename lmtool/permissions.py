"""File modes as the user's umask gives them. Some writers make private files (safetensors writes
model.safetensors 0600 through a temporary file, tempfile.mkdtemp makes 0700 directories), which would
keep colleagues on a shared cluster from reading a model or a processed corpus."""

from __future__ import annotations

import os
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # once, at import: os.umask can only be read by setting it


def apply_umask(path: Path) -> None:
    """Give `path` and everything under it the modes a plain open() / mkdir() would have given them."""
    path = Path(path)
    for item in (path, *path.rglob("*")) if path.is_dir() else (path,):
        if not item.is_symlink():
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~UMASK)
