"""Time limits as SLURM and people write them: `--time-limit 4h`, `90m`, `1:30:00`, `2-00:00:00`."""

from __future__ import annotations

import os
import re
import time

from lmtool.errors import LmtoolError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SUFFIXED = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_SLURM = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_duration(text: str) -> float:
    """Seconds in `text`: a number with s/m/h/d, or SLURM's [D-]HH:MM:SS, MM:SS, minutes, D-HH forms."""
    value = text.strip().lower()
    suffixed = _SUFFIXED.match(value)
    if suffixed:
        return float(suffixed.group(1)) * _UNITS[suffixed.group(2)]
    slurm = _SLURM.match(value)
    if not slurm:
        raise LmtoolError(f"--time-limit: cannot read {text!r} (e.g. 90m, 4h, 1:30:00, 2-00:00:00)")
    days, first, second, third = (int(g) if g else None for g in slurm.groups())
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        return days * 86400 + first * 3600 + (second or 0) * 60 + (third or 0)
    if third is not None:
        return first * 3600 + second * 60 + third
    if second is not None:
        return first * 60 + second
    return first * 60.0  # SLURM reads a bare number as minutes


def time_limit(option: str | None) -> tuple[float | None, str | None]:
    """(seconds the job may run, where that came from): the option, else SLURM_JOB_END_TIME from now."""
    if option is not None:
        return parse_duration(option), "--time-limit"
    end = os.environ.get("SLURM_JOB_END_TIME")
    if end and end.isdigit():
        return max(int(end) - time.time(), 0.0), "SLURM_JOB_END_TIME"
    return None, None
