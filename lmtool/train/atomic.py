"""Writing run outputs so that a kill or a full disk never leaves less than there was before.

Directories are written under a temporary name, fsynced and renamed into place; a directory that
already exists is first renamed aside (`.old-NAME`) and deleted only once the new one is in place,
so at every moment one complete copy exists under a name lmtool knows. Files are rewritten through
a temporary file and `os.replace`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from lmtool.diskfull import is_disk_full
from lmtool.errors import LmtoolError
from lmtool.permissions import apply_umask


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def old_name(final: Path) -> Path:
    """Where `replace_dir` keeps the previous copy of `final` while the new one is renamed in."""
    return final.with_name(f".old-{final.name}")


def replace_dir(tmp: Path, final: Path) -> None:
    """Put the complete directory `tmp` at `final`; the previous `final` is deleted only after the swap."""
    old = old_name(final)
    shutil.rmtree(old, ignore_errors=True)  # left by a kill between the two renames of an earlier swap
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def write_dir(tmp: Path, final: Path, write: Callable[[Path], None], what: str, fresh: bool = True) -> None:
    """Run `write(tmp)`, fsync everything in it and swap it in at `final`. With `fresh` false, `tmp` exists
    already and holds what other processes wrote into it (the shards of a sharded checkpoint).

    On failure the temporary directory is removed at once (a full disk would otherwise stay full), the
    previous `final` is untouched, and a full disk is an LmtoolError naming `what` and the directory.
    """
    if fresh:
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True, exist_ok=not fresh)
        write(tmp)
        apply_umask(tmp)
        fsync_tree(tmp.iterdir())
        fsync(tmp)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise LmtoolError(
                f"no space left on device while saving {what} to {final.parent} (the partial copy was removed, "
                "earlier ones are kept): free some space (or raise the file-size limit, `ulimit -f`) and rerun"
            ) from exc
        raise
    replace_dir(tmp, final)


def fsync_tree(paths: Iterable[Path]) -> None:
    for path in paths:
        if path.is_dir():
            fsync_tree(path.iterdir())
        fsync(path)


def rewrite_lines(path: Path, lines: Iterable[str]) -> None:
    """Replace the text file `path` by `lines` through a temporary file: a kill leaves the old or the new file."""
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            for line in lines:
                out.write(f"{line}\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
