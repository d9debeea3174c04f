"""`lmtool pretrain`: processed data + model + task, trained by the launcher's engine."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from lmtool.config import Config
from lmtool.data.processed import Processed, open_for_pretraining
from lmtool.recipes.launch import Launched, Recipe, Setup, launch
from lmtool.validate import validate


def run_pretrain(config: Config, *, overwrite: bool = False) -> Path:
    """Train as the config says and return the final model directory."""
    return launch(config, PRETRAIN, overwrite)


def _check_data(config: Config, data: Processed) -> None:
    from lmtool.pairing import check_pairing

    check_pairing(config, data.tokenizer, f"the tokenizer in {data.path / 'tokenizer'}")


def _build(run: Launched) -> Setup:
    from lmtool.models import build_model
    from lmtool.tasks import make_task

    config, data = run.config, run.data
    model = build_model(config, data.tokenizer)
    task = make_task(config.data.objective, data.tokenizer, seed=config.run.seed, mlm=config.train.mlm)
    return Setup(config, model, task, data.train, data.validation, done="model and tokenizer")


PRETRAIN = Recipe(
    open_data=open_for_pretraining,
    build=_build,
    checks=partial(validate, command="pretrain"),
    check_data=_check_data,
)
