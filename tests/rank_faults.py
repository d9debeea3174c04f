"""Test-only launcher: make one rank fail at a given training step, then run lmtool's CLI.

    python -m tests.rank_faults FAULT RANK STEP LMTOOL-ARGS...

FAULT: `raise` (a RuntimeError: a bug), `usage` (an LmtoolError on that rank only), `kill` (SIGKILL
itself: a rank that dies without a word), `hang` (sleep forever: a rank stuck outside any collective),
`none` (no fault: lmtool as it is).
The fault strikes when rank RANK (or `all`: every rank alike) starts step STEP; torchrun runs it with `-m tests.rank_faults`.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from lmtool.errors import LmtoolError
from lmtool.train.engine import Trainer


def _strike(fault: str, step: int) -> None:
    print(f"fault {fault} at {time.time():.3f}", file=sys.stderr, flush=True)
    if fault == "raise":
        raise RuntimeError(f"injected fault at step {step}")
    if fault == "usage":
        raise LmtoolError(f"injected usage error at step {step}")
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "hang":
        while True:
            time.sleep(60)
    raise ValueError(f"unknown fault {fault!r}")


def main() -> None:
    fault, rank, step, *args = sys.argv[1:]
    original = Trainer._accumulate

    def faulty(self, *a, **k):
        here = rank == "all" or self.env.rank == int(rank)
        if fault != "none" and here and self.state.step + 1 == int(step):
            _strike(fault, int(step))
        return original(self, *a, **k)

    Trainer._accumulate = faulty
    from lmtool.cli import main as cli_main

    cli_main(args)


if __name__ == "__main__":
    main()
