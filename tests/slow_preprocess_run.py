"""Entry point for tests: preprocessing that takes SECONDS longer (inside the processed directory's lock,
so that others wait; `release`: until the file CONFIG.release exists), under a collective timeout of
TIMEOUT seconds, then COMMAND.

`pretrain CONFIG SECONDS TIMEOUT`: `lmtool pretrain CONFIG` (under torchrun: on every rank) with every
process group made with that timeout (what train.distributed.timeout sets).
`processed CONFIG SECONDS TIMEOUT`: only data.processed.ensure_processed, as the launcher calls it (no process group): prints the
directory, or `error: ...` and exit 2; each build of the data appends this pid to CONFIG.builds.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch.distributed  # noqa: E402

import lmtool.data.preprocess  # noqa: E402
from lmtool.config import load_config  # noqa: E402
from lmtool.errors import LmtoolError  # noqa: E402


def main(command: str, config_path: str, seconds: str, timeout: str) -> None:
    real_build, real_init = lmtool.data.preprocess._build, torch.distributed.init_process_group

    def slow_build(*args, **kwargs):
        with open(f"{config_path}.builds", "a", encoding="utf-8") as builds:
            builds.write(f"{os.getpid()}\n")
        if seconds == "release":
            while not Path(f"{config_path}.release").exists():
                time.sleep(0.05)
        else:
            time.sleep(float(seconds))
        if Path(f"{config_path}.fail").exists():
            raise LmtoolError("data.sources.0: the corpus is broken (made up by the test)")
        return real_build(*args, **kwargs)

    def init_with_timeout(*args, **kwargs):
        return real_init(*args, **{**kwargs, "timeout": timedelta(seconds=float(timeout))})

    lmtool.data.preprocess._build = slow_build
    torch.distributed.init_process_group = init_with_timeout
    config = load_config(config_path)
    if command == "pretrain":
        from lmtool.recipes.pretrain import run_pretrain

        print(run_pretrain(config))
        return
    from lmtool.data.processed import ensure_processed
    from lmtool.tasks.registry import preprocess

    try:
        print(ensure_processed(config, preprocess))
    except LmtoolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(*sys.argv[1:])
