"""torchrun entry point for the kill test: `lmtool pretrain CONFIG`, where rank RANK, when it writes its
shards of the checkpoint of step STEP, first writes its pid to PIDFILE and sleeps (to be killed there).

Usage: torchrun --nproc_per_node N tests/fsdp_slow_save.py CONFIG RANK STEP PIDFILE
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch.distributed.checkpoint as dcp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmtool.config import load_config  # noqa: E402
from lmtool.recipes.pretrain import run_pretrain  # noqa: E402


def main(config: str, rank: str, step: str, pidfile: str) -> None:
    real_save = dcp.save

    def save(state, *, checkpoint_id, **kwargs):
        if os.environ["RANK"] == rank and f"step-{int(step):08d}" in str(checkpoint_id):
            Path(pidfile).write_text(str(os.getpid()))
            time.sleep(600)
        return real_save(state, checkpoint_id=checkpoint_id, **kwargs)

    dcp.save = save
    run_pretrain(load_config(config))


if __name__ == "__main__":
    main(*sys.argv[1:])
