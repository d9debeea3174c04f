"""`lmtool evaluate` on a fine-tuned classifier or tagger (QA models: evaluation/qa_eval.py): the task's own
metrics, as validation gives them.

The task, labels and problem come from the model's config.json (as for `lmtool predict`); the data is a
processed fine-tuning split (its label ids are re-mapped from the manifest's label list to the model's)
or a raw labeled file, read and encoded with the config's `finetune:` settings (else the defaults) and
the model's own labels. Scoring runs the task's evaluator, so the numbers are the ones `lmtool
finetune` logs for the same weights and data.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmtool import console
from lmtool.config import Config, ConfigError, EvaluateConfig, FinetuneConfig
from lmtool.data.collate import IGNORE
from lmtool.data.manifest import has_manifest, manifest_of
from lmtool.errors import LmtoolError
from lmtool.evaluation.data import checked_max_length, labeled_source
from lmtool.prediction.model import load_predictor
from lmtool.tasks.predictor import Predictor
from lmtool.tasks.registry import finetune_spec, spec_for_architectures

KEY = "evaluate.data"


def finetuned_task(model: str) -> str | None:
    """The task of `model` when it is a local fine-tuned model (with id2label where its task names labels)."""
    try:
        saved = json.loads((Path(model).expanduser() / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict):
        return None
    archs = [arch for arch in saved.get("architectures") or [] if isinstance(arch, str)]
    spec = spec_for_architectures(archs)
    if spec is None or (spec.has_labels and not saved.get("id2label")):
        return None
    return spec.name


def evaluate_finetuned(config: Config) -> dict:
    """The task's metrics for `evaluate.model` on `evaluate.data` (default: data.processed_dir)."""
    from lmtool.runtime import resolve_precision

    cfg = config.evaluate
    pred = load_predictor(str(Path(cfg.model).expanduser()), cfg.device)
    spec = finetune_spec(pred.task)
    if spec.questions:
        from lmtool.evaluation.qa_eval import qa_data

        dataset, label, task = qa_data(config, pred)
    else:
        dataset, label, task = _labeled_data(config, pred)
    if len(dataset) == 0:
        raise LmtoolError(f"{label}: no examples to evaluate")
    precision = resolve_precision(cfg.precision, pred.device, key="evaluate.precision")
    evaluator = task.evaluator()
    rows = sorted(dataset, key=lambda row: len(row["input_ids"]))  # less padding; the metrics ignore order
    with console.progress("evaluating", total=-(-len(rows) // cfg.batch_size)) as bar:
        for start in range(0, len(rows), cfg.batch_size):
            batch = task.collate(rows[start : start + cfg.batch_size])
            with precision.autocast():
                evaluator.update(pred.model, {k: v.to(pred.device) for k, v in batch.items()})
            bar.advance(1)
    result = {"model": cfg.model, "data": label, "task": pred.task}
    if spec.has_problem:
        result["problem"] = pred.problem
    return {**result, **evaluator.compute(), "samples": len(rows)}


def _labeled_data(config: Config, pred: Predictor):
    """(rows, label of the data, the task) for a classifier or a tagger."""
    from lmtool.tasks import make_finetune_task

    cfg = config.evaluate
    ft = _finetune_settings(config, pred)
    name, path = labeled_source(cfg, config.data.processed_dir)
    if has_manifest(path):
        dataset, label = _processed(path, cfg, pred)
    else:
        dataset, label = _raw(str(path), ft, pred, cfg.max_samples), name
    manifest = {"labels": pred.labels, "problem": pred.problem}
    task = make_finetune_task(
        manifest, pred.tokenizer, ft.model_copy(update={"class_weights": None}), pred.device
    )
    return dataset, label, task


def _finetune_settings(config: Config, pred: Predictor) -> FinetuneConfig:
    """The config's finetune section (it must be for the model's task), else the defaults; the problem is
    the model's; --max-length, else the section's max_length, else the model's limit."""
    ft = config.finetune
    if ft is not None and ft.task != pred.task:
        raise ConfigError(
            "finetune.task",
            f"does not fit the model {config.evaluate.model}, a {pred.task} model",
            value=ft.task,
        )
    ft = ft or FinetuneConfig(task=pred.task, max_length=pred.default_max_length())
    update: dict = {"problem": pred.problem, "labels": None}
    length = checked_max_length(config.evaluate, pred.positions())
    if length is not None:
        update["max_length"] = length
        body = length - pred.tokenizer.num_special_tokens_to_add(pair=False)
        default = FinetuneConfig.model_fields["stride"].default
        if finetune_spec(ft.task).word_level and ft.stride == default and ft.stride >= body:
            # the default overlap does not fit a window this short: half a window, as predict takes
            update["stride"] = max(body // 2, 0)
            console.info(f"--max-length {length}: windows overlap by {update['stride']} tokens")
    return ft.model_copy(update=update)


def _processed(path: Path, cfg: EvaluateConfig, pred: Predictor):
    """One split of a processed fine-tuning dir, its label ids turned into the model's."""
    from lmtool.data.processed import check_tokenizer
    from lmtool.evaluation.data import load_split

    manifest = manifest_of(path)
    if manifest.get("kind") != "finetune":
        raise LmtoolError(f"{path} holds language-model data: evaluate {cfg.model} on labeled data")
    if manifest.get("task") != pred.task:
        raise LmtoolError(f"{path} holds {manifest.get('task')} data but {cfg.model} is a {pred.task} model")
    check_tokenizer(path, manifest, pred.tokenizer, cfg.model)
    dataset = load_split(path, cfg)
    if pred.problem == "regression":
        return dataset, f"{path}:{cfg.split}"
    data_labels = list(manifest.get("labels") or [])
    counts = manifest.get("counts", {}).get(cfg.split, {}).get("labels") or {}
    present = [n for n in data_labels if not counts or counts.get(n)]  # labels the split holds, if counted
    _check_known(present, pred, f"{path}:{cfg.split}")
    if data_labels == pred.labels:
        return dataset, f"{path}:{cfg.split}"
    ids = {i: pred.labels.index(n) if n in pred.labels else IGNORE for i, n in enumerate(data_labels)}
    column = dataset["labels"]
    if finetune_spec(pred.task).word_level:
        mapped = [[ids[t] if t != IGNORE else IGNORE for t in row] for row in column]
    elif pred.problem == "multi_label":
        mapped = [_multi_hot(row, data_labels, pred.labels) for row in column]
    else:
        mapped = [ids[t] for t in column]
    dataset = dataset.remove_columns("labels").add_column(
        "labels", mapped, feature=dataset.features["labels"]
    )
    return dataset, f"{path}:{cfg.split}"


def _multi_hot(row: list[float], data_labels: list[str], model_labels: list[str]) -> list[float]:
    out = [0.0] * len(model_labels)
    for i, on in enumerate(row):
        if on:
            out[model_labels.index(data_labels[i])] = 1.0
    return out


def _raw(path: str, ft: FinetuneConfig, pred: Predictor, max_samples: int | None):
    """A raw labeled file read and encoded as preprocessing would, with the model's label ids."""
    import tempfile

    from lmtool.config import SourceConfig
    from lmtool.data import sources as src
    from lmtool.data.labeled import label_names
    from lmtool.data.labeled_build import encode_examples
    from lmtool.data.labeled_rows import read_examples

    word_level = finetune_spec(pred.task).word_level
    source = src.resolve(SourceConfig(path=path), KEY)
    with tempfile.TemporaryDirectory(prefix="lmtool-eval-") as cache:
        examples = list(read_examples(source, ft, "replace", Path(cache), word_level))
    examples = examples[:max_samples] if max_samples is not None else examples
    if pred.problem != "regression":
        for example in examples:
            _check_known(label_names(example, ft), pred, example.where)
    tokenizer = pred.tokenizer
    if word_level and getattr(tokenizer, "add_prefix_space", None) is False:
        from transformers import AutoTokenizer  # byte-level BPE: a word tokenizes as inside running text

        tokenizer = AutoTokenizer.from_pretrained(pred.model.name_or_path, add_prefix_space=True)
    dataset, _ = encode_examples(tokenizer, examples, ft, pred.labels, word_level)
    return dataset


def _check_known(names: list[str], pred: Predictor, where: str) -> None:
    for name in names:
        if name not in pred.labels:
            shown = ", ".join(pred.labels[:20]) + (", ..." if len(pred.labels) > 20 else "")
            raise LmtoolError(f"{where}: label '{name}' is not one the model knows (its labels: {shown})")
