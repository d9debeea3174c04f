"""`lmtool evaluate` on a question-answering model: SQuAD exact match and F1 on a processed QA split or a
raw SQuAD-format file, with the windows, post-processing and metrics that `lmtool finetune` validates with
(the model's saved `finetune.qa` settings), so the numbers are the ones its training log shows."""

from __future__ import annotations

import tempfile
from pathlib import Path

from lmtool.config import Config, FinetuneConfig, SourceConfig
from lmtool.data.manifest import has_manifest, manifest_of
from lmtool.errors import LmtoolError
from lmtool.evaluation.data import checked_max_length
from lmtool.tasks.decoding.answers import qa_settings
from lmtool.tasks.predictor import Predictor
from lmtool.tasks.qa import QAReference, QuestionAnsweringTask

KEY = "evaluate.data"


def qa_data(config: Config, pred: Predictor):
    """(windows, label of the data, the QA task holding the questions' reference) for `evaluate.data`."""
    from lmtool.data.processed import check_tokenizer
    from lmtool.evaluation.data import labeled_source, load_split

    cfg = config.evaluate
    ft = _settings(config, pred)
    name, path = labeled_source(cfg, config.data.processed_dir)
    if has_manifest(path):
        manifest = manifest_of(path)
        if manifest.get("kind") != "finetune" or manifest.get("task") != pred.task:
            raise LmtoolError(
                f"{path} holds no question-answering data: evaluate {cfg.model} on a SQuAD file"
            )
        check_tokenizer(path, manifest, pred.tokenizer, cfg.model)
        windows, reference, label = (
            load_split(path, cfg),
            QAReference.load(path, cfg.split),
            f"{path}:{cfg.split}",
        )
    else:
        (windows, reference), label = _raw(str(path), ft, pred, cfg.max_samples), name
    return windows, label, QuestionAnsweringTask(pred.tokenizer, ft.qa, None, reference)


def _settings(config: Config, pred: Predictor) -> FinetuneConfig:
    """The config's qa section when it has one (its field names read a raw file), else the model's saved
    settings; --max-length, else the section's, else the model's limit; the doc stride fits the window."""
    ft = config.finetune if config.finetune is not None and config.finetune.task == pred.task else None
    ft = ft or FinetuneConfig(task=pred.task, max_length=pred.default_max_length(), qa=qa_settings(pred))
    max_length = checked_max_length(config.evaluate, pred.positions()) or ft.max_length
    stride = min(ft.qa.doc_stride, max_length // 4)
    return ft.model_copy(
        update={"max_length": max_length, "qa": ft.qa.model_copy(update={"doc_stride": stride})}
    )


def _raw(path: str, ft: FinetuneConfig, pred: Predictor, max_samples: int | None):
    """A SQuAD-format (or question/context/answers JSON lines) file, read and windowed as preprocess does."""
    import datasets

    from lmtool.data import sources as src
    from lmtool.data.qa_data import Tally, encode_questions, read_questions

    source = src.resolve(SourceConfig(path=path), KEY)
    with tempfile.TemporaryDirectory(prefix="lmtool-eval-") as cache:
        questions = list(read_questions(source, ft, "replace", Path(cache), Tally()))
    questions = questions[:max_samples] if max_samples is not None else questions
    columns, _ = encode_questions(pred.tokenizer, questions, ft, keep_offsets=True)
    reference = QAReference(columns["example_id"], columns["offset_mapping"], [q.context for q in questions],
                            [[text for text, _ in q.answers] for q in questions])  # fmt: skip
    return datasets.Dataset.from_dict(columns), reference
