"""Where the ranks come from: torchrun's variables, or SLURM's under `srun` (one task per GPU).

Under srun the rendezvous is derived from SLURM: MASTER_ADDR is the job's first host (`scontrol show
hostnames` when it is on PATH, else the node list parsed here) and MASTER_PORT a port fixed by the job
id, so that every task of the job computes the same address without a wrapper script.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import MutableMapping

from lmtool.errors import LmtoolError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE")
SLURM_VARS = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_NODELIST", "SLURM_JOB_ID")
PORT_BASE, PORT_SPAN = 10000, 50000


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list such as `node[01-03,07],gpu5`."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.split()
            if out:
                return out[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return expand_nodelist(nodelist)[0]


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand `node[01-03,07],gpu5` into host names (zero padding kept), as `scontrol show hostnames` does;
    names with several bracket groups need scontrol."""
    hosts: list[str] = []
    for item in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", nodelist):
        match = re.fullmatch(r"([^\[\]]*)(?:\[([\d,-]+)\]([^\[\]]*))?", item)
        if match is None:
            raise LmtoolError(f"SLURM_JOB_NODELIST: cannot read {nodelist!r} without scontrol")
        prefix, ranges, suffix = match.groups()
        if ranges is None:
            hosts.append(prefix)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            if not low.isdigit() or not (high or low).isdigit():
                raise LmtoolError(f"SLURM_JOB_NODELIST: cannot read {nodelist!r} without scontrol")
            hosts += [f"{prefix}{n:0{len(low)}d}{suffix}" for n in range(int(low), int(high or low) + 1)]
    if not hosts:
        raise LmtoolError(f"SLURM_JOB_NODELIST: cannot read {nodelist!r}")
    return hosts


def from_slurm(env: MutableMapping[str, str]) -> None:
    """Set RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT from srun's variables (those already set are kept)."""
    missing = [name for name in SLURM_VARS if name not in env]
    if missing:
        raise LmtoolError(f"under srun with several tasks, {', '.join(missing)} missing from the environment")
    env["RANK"], env["WORLD_SIZE"] = env["SLURM_PROCID"], env["SLURM_NTASKS"]
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    env.setdefault("MASTER_ADDR", first_host(env["SLURM_JOB_NODELIST"]))
    env.setdefault("MASTER_PORT", str(PORT_BASE + int(env["SLURM_JOB_ID"]) % PORT_SPAN))


def check_torchrun(env: MutableMapping[str, str]) -> None:
    """A partial torchrun-style environment is a mistake, not a single-process run: name what is missing."""
    if not any(name in env for name in TORCHRUN_VARS):
        return
    needed = list(TORCHRUN_VARS)
    if env.get("WORLD_SIZE", "2") != "1":
        needed += ["MASTER_ADDR", "MASTER_PORT"]
    missing = [name for name in needed if name not in env]
    if missing:
        present = [name for name in needed if name in env]
        raise LmtoolError(
            f"distributed environment incomplete: {', '.join(present)} set but {', '.join(missing)} missing "
            "(launch with torchrun or srun, or unset them)"
        )


def rendezvous_timeout() -> float:
    """Seconds to wait for all ranks at start-up (LMTOOL_RENDEZVOUS_TIMEOUT, default 60)."""
    raw = os.environ.get("LMTOOL_RENDEZVOUS_TIMEOUT", "60")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise LmtoolError(f"LMTOOL_RENDEZVOUS_TIMEOUT: {raw!r} is not a positive number of seconds")
    return value
