"""The temporary `.<name>.partial-XXXXXXXX` directories preprocess builds in, beside `processed_dir`.

A run removes its own on the way out, but a killed one (SIGKILL, power loss) cannot; the next run
removes them, under the processed directory's lock, so never a live run's.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from lmtool import console


def partial_prefix(out: Path) -> str:
    return f".{out.name}.partial-"


def remove_stale(out: Path) -> None:
    """Delete the partial directories that killed runs for `out` left behind (call with its lock held)."""
    name = re.compile(re.escape(partial_prefix(out)) + r"[A-Za-z0-9_]{8}")
    if not out.parent.is_dir():
        return
    stale = [p for p in out.parent.iterdir() if name.fullmatch(p.name) and p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    if stale:
        console.info(
            f"removed {len(stale)} partial director{'y' if len(stale) == 1 else 'ies'} left by killed runs"
        )
