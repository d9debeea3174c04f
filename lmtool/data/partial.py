"""The temporary `.<name>.partial-XXXXXXXX` directories preprocess builds in, beside `processed_dir`.

A run removes its own on the way out, but a killed one (SIGKILL, power loss) cannot; the next run
removes them, under the processed directory's lock, so never a live run's. A full disk while
building them is the output's problem, not the source being read at the time: `disk_full` lets
the error name the output.
"""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

from lmtool import console

_FULL = (errno.ENOSPC, errno.EDQUOT)


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


def disk_full(exc: BaseException) -> OSError | None:
    """The out-of-space (or quota) OSError behind `exc`, following its causes and contexts."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL:
            return current
        current = current.__cause__ or current.__context__
    return None
