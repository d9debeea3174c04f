"""The fine-tune tasks by name: the one place callers turn `finetune.task` into a task. A new task is a
module under lmtool/tasks/ with a `SPEC` (lmtool/tasks/spec.py) plus one line in the config's
TASK_MODULES (lmtool/config/finetune.py: names only, so the schema lists the choices and imports no task)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from importlib import import_module
from pathlib import Path

from lmtool.config.finetune import TASK_MODULES
from lmtool.errors import ConfigError
from lmtool.tasks.spec import TaskSpec

KEY = "finetune.task"
# in TASK_MODULES' order: a saved model whose architecture matches several heads is read as the first
FINETUNE_TASKS: dict[str, TaskSpec] = {
    name: import_module(module).SPEC for name, module in TASK_MODULES.items()
}


def finetune_spec(name: str) -> TaskSpec:
    """The task called `name`; exit 2 naming finetune.task (with a did-you-mean) for an unknown one."""
    spec = FINETUNE_TASKS.get(name)
    if spec is None:
        close = difflib.get_close_matches(str(name), list(FINETUNE_TASKS), n=1)
        raise ConfigError(
            KEY,
            f"unknown task; one of {', '.join(FINETUNE_TASKS)}",
            value=name,
            hint=f"did you mean '{close[0]}'?" if close else None,
        )
    return spec


def spec_for_architectures(architectures: Iterable[str]) -> TaskSpec | None:
    """The task whose head a saved model has (its config.json `architectures`), else None."""
    names = list(architectures)
    for spec in FINETUNE_TASKS.values():
        if spec.head is not None and any(name.endswith(spec.head.suffix) for name in names):
            return spec
    return None


def head_suffixes() -> tuple[str, ...]:
    """The architecture suffixes of the task heads (`ForSequenceClassification`, ...)."""
    return tuple(spec.head.suffix for spec in FINETUNE_TASKS.values() if spec.head is not None)


def preprocess(config, overwrite: bool = False) -> Path:
    """`lmtool preprocess`: lmtool.data.preprocess with the config's task building labeled data."""
    from lmtool.data.preprocess import run_preprocess

    build = finetune_spec(config.finetune.task).build_data if config.finetune is not None else None
    return run_preprocess(config, overwrite, build_labeled=build)
