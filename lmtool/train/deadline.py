"""Stopping before a job's time limit: `train.stop_before` reads when the job ends (SLURM_JOB_END_TIME,
else `squeue`, or `train.deadline`) and the run saves and exits 3 while the next step plus a checkpoint
still fit before that time minus the margin (the save time is the last save's, the step time the average)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from datetime import datetime

from lmtool.config import ConfigError
from lmtool.console import warning


def job_end_time(explicit: datetime | None) -> float | None:
    """The deadline as a Unix time: train.deadline (a naive time is local), else SLURM_JOB_END_TIME, else
    squeue's end time."""
    if explicit is not None:
        return explicit.timestamp()
    raw = os.environ.get("SLURM_JOB_END_TIME")
    if raw and raw.isdigit():
        return float(raw)
    job = os.environ.get("SLURM_JOB_ID")
    if job and shutil.which("squeue"):
        try:
            out = subprocess.run(
                ["squeue", "-h", "-j", job, "-o", "%e"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.strip()
            return datetime.fromisoformat(out).timestamp()  # squeue prints local time
        except (OSError, subprocess.SubprocessError, ValueError):
            warning(f"train.stop_before: cannot read the end time of job {job} from squeue")
    return None


class Deadline:
    """Decides, after each step, whether one more step and a checkpoint would still end before the deadline."""

    def __init__(self, end: float | None, margin_s: float):
        self.end = end
        self.margin = margin_s
        self.last_save_s = 0.0
        self._steps, self._step_time = 0, 0.0
        self._last = time.time()

    @classmethod
    def from_config(cls, stop_before: float | None, explicit: datetime | None) -> Deadline:
        if stop_before is None:
            return cls(None, 0.0)
        end = job_end_time(explicit)
        if end is None:
            warning(
                "train.stop_before: no job end time (SLURM_JOB_END_TIME, squeue or train.deadline); ignored"
            )
        elif end - stop_before <= time.time():  # else every requeued job would stop after one step
            raise ConfigError(
                "train.stop_before",
                f"leaves no time to train: the job ends at {datetime.fromtimestamp(end).isoformat(timespec='seconds')}",
                value=stop_before,
            )
        return cls(end, stop_before)

    def step_done(self) -> None:
        now = time.time()
        self._steps += 1
        self._step_time += now - self._last
        self._last = now

    def saved(self, seconds: float) -> None:
        self.last_save_s = seconds
        self._last = time.time()  # a save is not a step

    def near(self) -> bool:
        if self.end is None:
            return False
        step = self._step_time / self._steps if self._steps else 0.0
        return time.time() + step + self.last_save_s > self.end - self.margin
