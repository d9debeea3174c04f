"""`lmtool plan`: what a training config costs on a cluster (parameters, FLOPs, memory per GPU,
throughput, wall time) and what would go wrong, without training and without a GPU."""

from __future__ import annotations

import sys
from typing import TextIO

from lmtool.config import Config
from lmtool.errors import LmtoolError
from lmtool.planning.durations import time_limit
from lmtool.planning.estimate import estimate
from lmtool.planning.report import FORMATS, write_report


def run_plan(
    config: Config,
    *,
    gpu: str = "h100",
    gpus_per_node: int = 8,
    nodes: int = 1,
    mfu: float = 0.4,
    limit: str | None = None,
    output_format: str = "auto",
    stdout: TextIO | None = None,
) -> dict:
    """Estimate and write the report; returns the estimate."""
    if output_format not in FORMATS:
        raise LmtoolError(f"--format must be one of {', '.join(FORMATS)} (got {output_format!r})")
    result = estimate(config, gpu=gpu, gpus_per_node=gpus_per_node, nodes=nodes, mfu=mfu,
                      time_limit=time_limit(limit))  # fmt: skip
    write_report(result, stdout or sys.stdout, output_format)
    return result
