"""The requeue marker: `<run>/REQUEUE`, written when a run saved and stopped on a signal or before a time
limit, so that a job script can requeue even where the launcher loses exit code 3 (torchrun without
`--signals-to-handle`, a wrapper shell). It is removed when a run starts, so a stale one never requeues."""

from __future__ import annotations

import json
import time
from pathlib import Path

MARKER = "REQUEUE"


def write_marker(run_dir: Path, reason: str, step: int) -> Path:
    """Record why and at which step the run stopped (one JSON line)."""
    path = Path(run_dir) / MARKER
    record = {"reason": reason, "step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    return path


def clear_marker(run_dir: Path) -> None:
    (Path(run_dir) / MARKER).unlink(missing_ok=True)
