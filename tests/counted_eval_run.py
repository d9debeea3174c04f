"""torchrun entry point for tests: `lmtool pretrain|finetune CONFIG`, recording the input_ids of every
validation batch this rank's evaluators scored, in order, in COUNTS_DIR/rank-N.json.

Usage: torchrun --nproc_per_node N tests/counted_eval_run.py pretrain|finetune CONFIG COUNTS_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lmtool.tasks  # noqa: E402
from lmtool.config import load_config  # noqa: E402
from lmtool.recipes.finetune import run_finetune  # noqa: E402
from lmtool.recipes.pretrain import run_pretrain  # noqa: E402


def main(command: str, config: str, counts_dir: str) -> None:
    seen: list[list[list[int]]] = []

    def counting(make):
        def make_task(*args, **kwargs):
            task = make(*args, **kwargs)
            real_evaluator = task.evaluator

            def evaluator():
                made = real_evaluator()
                real_update = made.update

                def update(model, batch):
                    seen.append(batch["input_ids"].tolist())
                    real_update(model, batch)

                made.update = update
                return made

            task.evaluator = evaluator
            return task

        return make_task

    lmtool.tasks.make_task = counting(lmtool.tasks.make_task)
    lmtool.tasks.make_finetune_task = counting(lmtool.tasks.make_finetune_task)
    try:
        (run_pretrain if command == "pretrain" else run_finetune)(load_config(config))
    finally:
        path = Path(counts_dir) / f"rank-{os.environ.get('RANK', '0')}.json"
        path.write_text(json.dumps(seen), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:])
