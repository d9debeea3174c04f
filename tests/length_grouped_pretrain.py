"""torchrun entry point for tests: `lmtool pretrain CONFIG` with the engine's length-grouped order
(made-up lengths from a JSON file, megabatches of GROUP examples), as the finetune recipe calls it.

Usage: torchrun --nproc_per_node N tests/length_grouped_pretrain.py CONFIG LENGTHS.json GROUP
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmtool.config import load_config  # noqa: E402
from lmtool.recipes.pretrain import run_pretrain  # noqa: E402
from lmtool.train.engine import Trainer  # noqa: E402


def main(config: str, lengths_file: str, group: str) -> None:
    lengths = json.loads(Path(lengths_file).read_text(encoding="utf-8"))
    real_init = Trainer.__init__

    def init(self, **kwargs):
        real_init(self, **{**kwargs, "order_lengths": lengths, "length_group": int(group)})

    Trainer.__init__ = init
    run_pretrain(load_config(config))


if __name__ == "__main__":
    main(*sys.argv[1:])
