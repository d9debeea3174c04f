"""Each rank's log file, `<run dir>/logs/rank-N.log`: on a multi-node job only rank 0 prints to the job's
output, so what the other ranks said (warnings, errors, a bug's traceback) would otherwise be lost."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from lmtool import __version__, console
from lmtool.errors import LmtoolError
from lmtool.train.distributed import DistEnv

LOGS = "logs"


def open_rank_log(run_dir: Path, env: DistEnv) -> Path:
    """Append to this rank's log in `run_dir` (which lmtool made: called once it is open), starting with
    a header line, and copy the console to it until `console.close_log`. Never follows a symlink."""
    logs = Path(run_dir) / LOGS
    path = logs / f"rank-{env.rank}.log"
    try:
        if logs.is_symlink():
            raise OSError(f"{logs} is a symlink")
        logs.mkdir(exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise LmtoolError(
            f"run.output_dir: cannot write the rank log {path}: {exc.strerror or exc}"
        ) from None
    stream = os.fdopen(fd, "a", encoding="utf-8")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
    stream.write(
        f"==== {stamp} lmtool {__version__} on {socket.gethostname()} pid {os.getpid()} "
        f"rank {env.rank} of {env.world_size}\n"
    )
    stream.flush()
    console.open_log(stream)
    return path
