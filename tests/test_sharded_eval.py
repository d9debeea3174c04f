"""Validation sharded across ranks: 2 gloo ranks give the eval records of 1 process (counts exactly,
losses to 1e-6), each rank runs the forwards of half the batches (the same number on both), and every
task's evaluator merges per-batch states into what one evaluator over all batches computes."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from lmtool.config import load_config
from lmtool.recipes.pretrain import run_pretrain
from tests.conftest import ROOT, run_torchrun
from tests.engine_fixtures import make_processed_dir, read_metrics, tiny_config
from tests.eval_fixtures import run_inproc
from tests.finetune_fixtures import finetune_config, gazetteer_rows, save_tiny_bert, write_jsonl
from tests.test_qa import MAX_LENGTH, STRIDE, _squad, tiny_squad

pytestmark = pytest.mark.usefixtures("one_thread")


def test_round_robin_slots_deal_every_batch_once_and_pad_to_the_same_number_of_forwards():
    from lmtool.train.data_order import eval_batch_count
    from lmtool.train.sharded_eval import eval_slots

    for batches in range(12):
        for world in (1, 2, 3, 4):
            per_rank = [eval_slots(batches, rank, world) for rank in range(world)]
            assert {len(slots) for slots in per_rank} == {-(-batches // world)}  # as many forwards on each
            kept = sorted(i for slots in per_rank for i, keep in slots if keep)
            assert kept == list(range(batches))  # each batch scored once
            for rank, slots in enumerate(per_rank):
                assert [i for i, keep in slots if keep] == list(range(rank, batches, world))  # round-robin
                assert all(i == batches - 1 for i, keep in slots if not keep)  # a repeat of the last batch
    assert eval_slots(5, 1, 2) == [(1, True), (3, True), (4, False)]
    assert eval_batch_count(9, 2, None) == 5 and eval_batch_count(9, 2, 3) == 3


def _torchrun(command: str, config: Path, counts: Path) -> list[list]:
    """`command CONFIG` on 2 gloo ranks; per rank, the input_ids of each validation batch it scored."""
    counts.mkdir()
    script = ROOT / "tests" / "counted_eval_run.py"
    proc = run_torchrun(str(script), command, str(config), str(counts))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 2 x cpu" in proc.stderr
    return [json.loads((counts / f"rank-{rank}.json").read_text()) for rank in range(2)]


def _assert_same_evals(one: dict, two: dict) -> None:
    """The same eval steps and keys; integers (counts) equal, floats (losses, scores) to 1e-6 relative; the
    evaluation's wall time (eval_s) is not a result."""
    assert sorted(one) == sorted(two) and one
    for step, record in one.items():
        assert sorted(record) == sorted(two[step]), step
        for key, value in record.items():
            if key == "eval_s":
                continue
            if isinstance(value, float):
                assert two[step][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (step, key)
            else:
                assert two[step][key] == value, (step, key)


def _forwards_per_eval(ranks: list[list], evals: int) -> None:
    """Both ranks scored as many batches, each about half of an evaluation's (rank 0 alone would score all)."""
    assert len(ranks[0]) == len(ranks[1]) and len(ranks[0]) % evals == 0
    per_eval = [r[: len(r) // evals] for r in ranks]
    batches = len({json.dumps(b) for b in per_eval[0] + per_eval[1]})
    assert len(per_eval[0]) == -(-batches // 2) < batches


@pytest.mark.slow
def test_two_rank_pretrain_evals_equal_one_process_and_each_rank_runs_half_the_forwards(tmp_path):
    import datasets

    data = make_processed_dir(tmp_path / "processed")
    settings = {
        "batch_size": 2,
        "global_batch_size": 4,
        "max_steps": 6,
        "eval_every": 3,
        "eval_batches": 5,
    }
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir(), ddp.mkdir()
    run_pretrain(load_config(tiny_config(single, data, **settings)))
    ranks = _torchrun("pretrain", tiny_config(ddp, data, **settings), tmp_path / "counts")

    one, two = read_metrics(single / "run", "eval"), read_metrics(ddp / "run", "eval")
    assert sorted(one) == [3, 6]
    _assert_same_evals(one, two)
    validation = datasets.load_from_disk(str(data / "validation"))["input_ids"]
    batches = [[list(map(int, row)) for row in validation[i : i + 2]] for i in range(0, 10, 2)]
    assert len(validation) > 10  # train.eval_batches (5) caps the split; an odd count of batches:
    evens, odds = batches[0::2], [*batches[1::2], batches[4]]  # rank 1 repeats the last one
    assert ranks == [evens * 2, odds * 2]  # two evaluations, each rank half the forwards


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("bert"))


def _shared_processed(path: Path, processed: Path) -> Path:
    """The config at `path` with data.processed_dir = `processed`: both runs use one preprocessing."""
    raw = yaml.safe_load(path.read_text())
    raw["data"]["processed_dir"] = str(processed)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _finetune_both(tmp_path: Path, make_config) -> tuple[dict, dict, list[list[int]]]:
    """Preprocess once, fine-tune in this process and on 2 ranks: both eval records, the ranks' forwards."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir(), ddp.mkdir()
    one_config, two_config = make_config(single), make_config(ddp)
    for command in ("preprocess", "finetune"):
        result = run_inproc(command, str(one_config))
        assert result.returncode == 0, result.stderr
    ranks = _torchrun("finetune", two_config, tmp_path / "counts")
    return read_metrics(single / "run", "eval"), read_metrics(ddp / "run", "eval"), ranks


@pytest.mark.slow
def test_two_rank_ner_evals_equal_one_process(tmp_path, bert):
    """Sentences cut into several windows: each word is scored once, by its owning window, on any rank."""
    train = write_jsonl(tmp_path / "train.jsonl", gazetteer_rows(48, seed=0))
    val = write_jsonl(tmp_path / "val.jsonl", gazetteer_rows(21, seed=1))

    def config(base: Path) -> Path:
        ner = {"task": "token_classification", "max_length": 10, "stride": 4, "eval_strategy": "steps"}
        path = finetune_config(base, bert, ner, train, val, lr=1e-3, batch_size=4, global_batch_size=8,
                               max_steps=4, eval_every=2, eval_batches=None)  # fmt: skip
        return _shared_processed(path, tmp_path / "processed")

    one, two, ranks = _finetune_both(tmp_path, config)
    assert sorted(one) == [2, 4] and one[4]["tokens"] > 0 and "f1" in one[4]
    _assert_same_evals(one, two)
    _forwards_per_eval(ranks, 2)


@pytest.mark.slow
def test_two_rank_qa_evals_equal_one_process(tmp_path, bert):
    """Questions whose windows fall on different ranks: rank 0 gathers every window before answering."""
    rng = random.Random(0)
    train = _squad(tmp_path / "train.json", [tiny_squad.make_question(rng, i) for i in range(24)])
    val = _squad(tmp_path / "validation.json", [tiny_squad.make_question(rng, 24 + i) for i in range(15)])

    def config(base: Path) -> Path:
        qa = {"task": "qa", "max_length": MAX_LENGTH, "qa": {"doc_stride": STRIDE}, "eval_strategy": "steps"}
        path = finetune_config(base, bert, qa, train, val, lr=1e-3, batch_size=4, global_batch_size=8,
                               max_steps=4, eval_every=2, eval_batches=None)  # fmt: skip
        return _shared_processed(path, tmp_path / "processed")

    one, two, ranks = _finetune_both(tmp_path, config)
    assert sorted(one) == [2, 4] and one[4]["windows"] > 15  # questions spread over several windows
    _assert_same_evals(one, two)
    _forwards_per_eval(ranks, 2)


class _Head(torch.nn.Module):
    """Logits from an embedding: per token, or their mean per sequence."""

    def __init__(self, outputs: int, token_level: bool):
        super().__init__()
        self.embed = torch.nn.Embedding(50, outputs)
        self.token_level = token_level

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        logits = self.embed(input_ids)
        return SimpleNamespace(logits=logits if self.token_level else logits.mean(dim=1))


def _label(problem: str, i: int):
    if problem == "single_label":
        return i % 3
    if problem == "multi_label":
        return [float(i % 2), 1.0, float(i % 3 == 0)]
    return i / 7


def test_every_evaluator_merges_per_batch_states_into_the_one_pass_result():
    """Classification (single/multi-label, regression) and NER: states of single batches merged in batch
    order give exactly the metrics of one evaluator that saw every batch."""
    from lmtool.tasks.classification import SequenceClassificationTask
    from lmtool.tasks.token_classification import TokenClassificationTask

    torch.manual_seed(0)
    tokenizer = SimpleNamespace(pad_token_id=0)
    cases = []
    for problem, outputs in (("single_label", 3), ("multi_label", 3), ("regression", 1)):
        task = SequenceClassificationTask(tokenizer, outputs, problem, None, None)
        rows = [{"input_ids": [1 + (i * 7 + j) % 49 for j in range(3 + i % 4)], "labels": _label(problem, i)}
                for i in range(11)]  # fmt: skip
        cases.append((task, rows, _Head(outputs, token_level=False)))
    ner = TokenClassificationTask(tokenizer, ["O", "B-PER", "I-PER"], "IOB2", None)
    rows = []
    for i in range(11):  # two windows per sentence of 5 words, both holding word 2; the first owns it
        for first in (0, 2):
            words = list(range(first, first + 3))
            labels = [(w + i) % 3 if first == 0 or w > 2 else -100 for w in words]
            ids = [1 + (i * 5 + w) % 49 for w in words]
            rows.append({"input_ids": ids, "labels": labels, "word_ids": words, "example_id": i})
    cases.append((ner, rows, _Head(3, token_level=True)))

    for task, rows, model in cases:
        batches = [task.collate(rows[i : i + 3]) for i in range(0, len(rows), 3)]
        whole, states = task.evaluator(), []
        for batch in batches:
            whole.update(model, batch)
            part = task.evaluator()
            part.update(model, batch)
            states.append(part.state())
        merged = task.evaluator()
        merged.merge(states)
        assert merged.compute() == whole.compute(), task.name


def test_an_evaluation_error_on_another_rank_is_raised_on_rank_0_naming_that_rank(monkeypatch):
    """What each rank sends must unpickle on rank 0 (a ConfigError does not: it is sent as its message)."""
    import pickle

    from lmtool.config import ConfigError
    from lmtool.errors import LmtoolError
    from lmtool.runtime import Precision
    from lmtool.train import sharded_eval
    from lmtool.train.distributed import DistEnv

    class Task:
        collate = staticmethod(lambda rows: {"input_ids": torch.tensor([r["input_ids"] for r in rows])})

        def evaluator(self):
            raise ConfigError("finetune.qa", "cannot evaluate", has_value=False)

    sent = []

    def gather(obj, env):  # rank 1 sends; rank 0 receives what it sent
        sent.append(pickle.loads(pickle.dumps(obj)))
        return None if env.rank else [(None, []), sent[0]]

    monkeypatch.setattr(sharded_eval, "_gather_on_main", gather)
    model, cpu, fp32 = torch.nn.Linear(1, 1), torch.device("cpu"), Precision("fp32", "cpu")
    data = _Columns({"input_ids": [[1, 2]] * 4})
    with pytest.raises(ConfigError, match="finetune.qa: cannot evaluate"):
        sharded_eval.sharded_metrics(model, Task(), data, 2, None, DistEnv(1, 2), cpu, fp32.autocast)
    no_batches = _Columns({"input_ids": []})  # rank 0 scores nothing itself: the error is rank 1's
    with pytest.raises(LmtoolError, match=r"^finetune.qa: cannot evaluate \(rank 1\)$"):
        sharded_eval.sharded_metrics(model, Task(), no_batches, 2, None, DistEnv(0, 2), cpu, fp32.autocast)


class _Columns:
    """A dataset of columns, indexed by a list of rows as datasets.Dataset is."""

    def __init__(self, columns: dict):
        self.columns = columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, indices):
        return {k: [v[i] for i in indices] for k, v in self.columns.items()}
