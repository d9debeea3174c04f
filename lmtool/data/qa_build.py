"""`lmtool preprocess` for `finetune.task: qa`: questions → train/, validation/, test/ windows,
`validation_examples/` and `test_examples/` (id, question, context, gold answer texts) for the
evaluator, tokenizer/ and manifest.json, in preprocess.py's work directory like other labeled data."""

from __future__ import annotations

from pathlib import Path

from lmtool import console
from lmtool.config import Config
from lmtool.data.documents import HoldOut
from lmtool.data.labeled_build import load_finetune_tokenizer, test_sources, write_manifest
from lmtool.data.qa_data import Question, Tally, encode_questions, read_questions
from lmtool.errors import LmtoolError


def build_qa(config: Config, train_sources, val_sources, out: Path, scratch: Path, key: str) -> None:
    """Read, check, tokenize and save every split of the QA data into `out`."""
    cfg, data = config.finetune, config.data
    tests = test_sources(config)
    tokenizer = load_finetune_tokenizer(config, needs_fast=True)
    cache = scratch / "hf-cache"
    splits: dict[str, list[Question]] = {"train": [], "validation": []}
    tallies = {"train": Tally(), "validation": Tally(), "test": Tally()}
    hold_out = HoldOut(data.seed, data.validation_fraction if not val_sources else 0.0)
    for source in train_sources:
        for question in read_questions(source, cfg, data.encoding_errors, cache, tallies["train"]):
            # by context: questions on one paragraph stay on one side
            splits[
                "validation" if hold_out(question.context.encode("utf-8", "surrogatepass")) else "train"
            ].append(question)
    for name, sources in (("validation", val_sources), ("test", tests)):
        for source in sources:
            splits.setdefault(name, []).extend(
                read_questions(source, cfg, data.encoding_errors, cache, tallies[name])
            )
    if not splits["train"]:
        raise LmtoolError(
            "no training questions in data.sources (after holding out data.validation_fraction)"
        )
    counts: dict[str, dict] = {}
    for split, questions in splits.items():
        counts[split] = _save_split(tokenizer, questions, config, out, split)
        tally = tallies[split]
        counts[split] |= {"bad_answers": tally.bad_answers, "dropped_questions": tally.dropped_questions}
        if tally.bad_answers:
            console.warning(
                f"{split}: skipped {tally.bad_answers} answer(s) whose answer_start does not point at their text "
                f"({tally.dropped_questions} question(s) left without an answer dropped), e.g. {tally.seen[0]}"
            )
    sources = (train_sources, val_sources)
    write_manifest(out, config, key, tokenizer, counts, sources, num_labels=2, qa=cfg.qa.model_dump())
    shown = ", ".join(f"{counts[s]['examples']} {s} ({counts[s]['windows']} windows)" for s in counts)
    console.info(
        f"preprocessed {shown} questions (max_length {cfg.max_length}, doc_stride {cfg.qa.doc_stride})"
    )


def _save_split(tokenizer, questions: list[Question], config: Config, out: Path, split: str) -> dict:
    import datasets

    evaluated = split != "train"
    columns, numbers = encode_questions(tokenizer, questions, config.finetune, keep_offsets=evaluated)
    features = datasets.Features({name: _feature(name) for name in columns})
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(out / split))
    if evaluated:
        examples = {
            "id": [q.id for q in questions],
            "question": [q.question for q in questions],
            "context": [q.context for q in questions],
            "answers": [[text for text, _ in q.answers] for q in questions],
        }
        datasets.Dataset.from_dict(examples).save_to_disk(str(out / f"{split}_examples"))
    unanswerable = sum(1 for q in questions if not q.answers)
    return {"examples": len(questions), "unanswerable": unanswerable, **numbers}


def _feature(name: str):
    import datasets

    if name == "offset_mapping":
        return datasets.List(datasets.List(datasets.Value("int32")))
    if name in ("input_ids", "token_type_ids"):
        return datasets.List(datasets.Value("int32" if name == "input_ids" else "int8"))
    return datasets.Value("int64")
