"""The fine-tune task registry: a new task is one module (here a module-like class) plus one registry line,
and no module outside the registry compares a task name to a literal."""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import pytest

import lmtool
from lmtool.errors import ConfigError
from lmtool.tasks.registry import FINETUNE_TASKS, finetune_spec
from tests.finetune_fixtures import finetune_config, save_tiny_bert

ROWS = 32  # reviews per split: enough for two steps and a validation pass


class ReviewLength:
    """A toy task: a regression head that predicts a movie review's length (tens of words) from its text,
    built from the sentiment data with the classification task's reader and encoder."""

    @staticmethod
    def build_data(config, train_sources, val_sources, out: Path, scratch: Path, key: str) -> None:
        import datasets

        from lmtool.data.labeled import encode_classification
        from lmtool.data.labeled_build import load_finetune_tokenizer, write_manifest
        from lmtool.data.labeled_rows import read_examples

        tokenizer = load_finetune_tokenizer(config)
        counts = {}
        for split, sources in (("train", train_sources), ("validation", val_sources)):
            examples = [
                e for s in sources for e in read_examples(s, config.finetune, "strict", scratch, False)
            ]
            for example in examples:
                example.label = len(example.text.split()) / 10
            columns, truncated = encode_classification(tokenizer, examples, config.finetune, [])
            datasets.Dataset.from_dict(columns).save_to_disk(str(out / split))
            counts[split] = {"examples": len(examples), "truncated": truncated}
        sources = (train_sources, val_sources)
        write_manifest(out, config, key, tokenizer, counts, sources, problem="regression", num_labels=1)

    @staticmethod
    def make_task(manifest, tokenizer, cfg, multiple, processed):
        from lmtool.tasks.classification import SequenceClassificationTask

        return SequenceClassificationTask(tokenizer, 1, "regression", None, multiple)

    @classmethod
    def spec(cls):
        from transformers import AutoModelForSequenceClassification

        from lmtool.finetune.heads import Head
        from lmtool.tasks.spec import TaskSpec

        return TaskSpec(
            name="review_length",
            head=Head("review_length", AutoModelForSequenceClassification, "ForSequenceClassification"),
            build_data=cls.build_data,
            make_task=cls.make_task,
            outputs=lambda problem, labels: 1,
            head_settings=lambda problem: {"problem_type": "regression"},
        )


def _reviews(source: Path, out: Path, skip: int) -> Path:
    with source.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[skip : skip + ROWS]
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["label", "text"])
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_a_new_task_is_one_module_plus_one_registry_line(tmp_path, monkeypatch, shared_data, one_thread):
    from lmtool.config import load_config
    from lmtool.recipes.finetune import run_finetune

    # what a TASK_MODULES line in the config does, for a module defined here
    monkeypatch.setitem(FINETUNE_TASKS, "review_length", ReviewLength.spec())
    reviews = shared_data / "sentiment" / "train.csv"
    train, validation = _reviews(reviews, tmp_path / "t.csv", 0), _reviews(reviews, tmp_path / "v.csv", ROWS)
    settings = {"task": "classification", "problem": "regression", "max_length": 32}
    path = finetune_config(tmp_path, save_tiny_bert(tmp_path / "bert"), settings, train, validation,
                           max_steps=2, batch_size=16, epochs=None)  # fmt: skip
    config = load_config(path)
    # the schema's choices are fixed when lmtool.config is imported: a task added in a test is set after
    config = config.model_copy(
        update={"finetune": config.finetune.model_copy(update={"task": "review_length"})}
    )

    final = run_finetune(config)

    manifest = json.loads((tmp_path / "processed" / "manifest.json").read_text())
    assert manifest["task"] == "review_length" and manifest["counts"]["train"]["examples"] == ROWS
    saved = json.loads((final / "config.json").read_text())
    assert len(saved["id2label"]) == 1 and saved["problem_type"] == "regression"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["type"] == "eval"]
    assert evals and evals[-1]["examples"] == ROWS and "pearson" in evals[-1]


def test_an_unknown_task_name_exits_2_naming_finetune_task_with_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"finetune\.task: unknown task.*did you mean 'classification'"):
        finetune_spec("clasification")


def test_each_registered_task_is_its_modules_spec_under_its_name():
    """The config's one line per task (name -> module) gives the registry that task's SPEC."""
    from lmtool.config.finetune import TASK_MODULES

    assert list(FINETUNE_TASKS) == list(TASK_MODULES)
    assert all(spec.name == name for name, spec in FINETUNE_TASKS.items())


TASK_NAMES = set(FINETUNE_TASKS)


def _task_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in TASK_NAMES
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_task_literal(item) for item in node.elts)
    return False


def test_no_module_outside_the_registry_compares_a_task_name_to_a_literal():
    """`task == "qa"`, `x.task in ("qa", "sft")`, `{"qa": ...}[task]`: every such branch is a spec attribute.
    lmtool/config is left out: the schema lists the tasks (finetune.task's choices, best_metric's defaults)
    and may import nothing of lmtool's, the registry included."""
    root = Path(lmtool.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative == "tasks/registry.py" or relative.startswith("config/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare) and any(map(_task_literal, [node.left, *node.comparators])):
                found.append(f"{relative}:{node.lineno}")
            if isinstance(node, ast.Dict) and sum(_task_literal(key) for key in node.keys if key) > 1:
                found.append(f"{relative}:{node.lineno} (a dict keyed by task names)")
    assert not found, f"task names compared outside lmtool/tasks/registry.py: {found}"
