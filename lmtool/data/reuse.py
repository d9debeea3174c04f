"""Processed data that is already there: a directory whose manifest has this config's content key is up to
date, and the default processed_dir of a renamed run links to the sibling that holds the same data (changing
run.name does not tokenize the corpus again)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from lmtool import console
from lmtool.config import Config
from lmtool.data.documents import SPLITS
from lmtool.data.interrupts import stop_raises
from lmtool.data.manifest import read_manifest
from lmtool.runlock import DirLock


def up_to_date(out: Path, key: str) -> bool:
    manifest = read_manifest(out)
    if manifest is None:
        return False
    return manifest.get("key") == key and all((out / split).is_dir() for split in SPLITS)


def link_same_data(config: Config, out: Path, key: str) -> bool:
    """The default processed_dir (data/processed/<run.name>) that does not exist yet, when a sibling holds
    data with the same content key (the same run under another run.name): made a link to it rather than
    tokenized again. An explicit processed_dir is always built where it says."""
    if out.exists() or out.is_symlink() or config.data.processed_dir != f"data/processed/{config.run.name}":
        return False
    with contextlib.suppress(OSError):
        for sibling in sorted(out.parent.iterdir()):
            if sibling.is_dir() and not sibling.is_symlink() and up_to_date(sibling, key):
                with stop_raises(), DirLock(out, "data.processed_dir"):
                    if not out.exists() and not out.is_symlink():
                        out.symlink_to(sibling.name)  # relative: the two move together
                console.info(f"{sibling} holds the same data (same sources and settings): {out} links to it")
                return True
    return False
