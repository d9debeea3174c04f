"""Fine-tuning metrics against hand-computed values: conlleval's entity scoring, classification and
regression metrics."""

from __future__ import annotations

import pytest

from lmtool.tasks.metrics.classification import (
    average_ranks,
    multi_label_metrics,
    regression_metrics,
    single_label_metrics,
)
from lmtool.tasks.metrics.ner import chunks, infer_scheme, ner_metrics, scheme_problem

approx = pytest.approx


def test_perfect_prediction_scores_one():
    tags = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    m = ner_metrics(tags, tags)
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (1.0, 1.0, 1.0, 1.0)
    assert m["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1, "predicted": 1}


def test_partial_span_is_a_miss_but_its_words_count_for_accuracy():
    m = ner_metrics([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)
    assert m["accuracy"] == approx(2 / 3)


def test_type_mismatch_is_a_miss_counted_under_each_type():
    m = ner_metrics([["B-PER", "I-PER", "O", "B-LOC"]], [["B-ORG", "I-ORG", "O", "B-LOC"]])
    assert (m["precision"], m["recall"]) == (0.5, 0.5)
    assert m["per_type"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0}
    assert m["per_type"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 1}
    assert m["per_type"]["LOC"]["f1"] == 1.0


def test_i_without_b_starts_a_chunk():
    assert chunks(["O", "I-PER", "I-PER", "I-LOC"]) == [("PER", 1, 3), ("LOC", 3, 4)]
    # so a prediction that forgot the B- still matches the gold entity
    m = ner_metrics([["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]])
    assert (m["precision"], m["recall"], m["f1"]) == (1.0, 1.0, 1.0)
    assert m["accuracy"] == approx(2 / 3)


def test_iob1_b_separates_adjacent_chunks_of_one_type():
    gold = [["I-PER", "B-PER", "O", "I-LOC"]]  # PER[0], PER[1], LOC[3]
    predicted = [["I-PER", "I-PER", "O", "I-LOC"]]  # PER[0:2], LOC[3]
    m = ner_metrics(gold, predicted)
    assert (m["precision"], m["recall"]) == (0.5, approx(1 / 3))
    assert m["f1"] == approx(0.4)
    assert m["per_type"]["PER"]["support"] == 2 and m["per_type"]["PER"]["predicted"] == 1


def test_bioes_single_and_end_tags():
    assert chunks(["S-PER", "S-PER", "B-LOC", "E-LOC", "I-LOC"]) == [
        ("PER", 0, 1),
        ("PER", 1, 2),
        ("LOC", 2, 4),
        ("LOC", 4, 5),
    ]
    m = ner_metrics([["S-PER", "B-LOC", "E-LOC", "S-LOC"]], [["S-PER", "B-LOC", "I-LOC", "E-LOC"]])
    assert (m["precision"], m["recall"]) == (0.5, approx(1 / 3))
    assert m["accuracy"] == 0.5


def test_empty_predictions_give_zero_not_an_error():
    m = ner_metrics([["B-PER", "O"], ["B-LOC"]], [["O", "O"], ["O"]])
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)
    assert m["accuracy"] == approx(1 / 3)
    assert m["per_type"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0}
    nothing = ner_metrics([["O"]], [["O"]])
    assert (nothing["precision"], nothing["recall"], nothing["f1"], nothing["per_type"]) == (
        0.0,
        0.0,
        0.0,
        {},
    )


def test_sentence_end_closes_chunks_and_hyphenated_types_stay_whole():
    assert chunks(["B-geo-loc", "I-geo-loc"]) == [("geo-loc", 0, 2)]
    # the same entity split over two sentences is two entities
    m = ner_metrics([["B-PER"], ["I-PER"]], [["B-PER"], ["I-PER"]])
    assert m["per_type"]["PER"]["support"] == 2 and m["f1"] == 1.0


def test_per_type_counts_over_several_sentences():
    gold = [["B-PER", "O", "B-LOC"], ["B-PER", "I-PER"], ["B-LOC"]]
    predicted = [["B-PER", "O", "O"], ["B-PER", "I-PER"], ["B-PER"]]
    m = ner_metrics(gold, predicted)
    assert m["per_type"]["PER"] == {
        "precision": approx(2 / 3), "recall": 1.0, "f1": approx(0.8), "support": 2, "predicted": 3
    }  # fmt: skip
    assert m["per_type"]["LOC"]["recall"] == 0.0 and m["per_type"]["LOC"]["support"] == 2
    assert (m["precision"], m["recall"]) == (approx(2 / 3), 0.5)


def test_tag_schemes():
    assert infer_scheme(["O", "B-PER", "I-PER"]) == "IOB2"
    assert infer_scheme(["O", "B-PER", "E-PER", "S-PER"]) == "BIOES"
    assert scheme_problem(["O", "B-PER", "S-PER"], "auto") is None
    assert "S-PER" in scheme_problem(["O", "B-PER", "S-PER"], "IOB2")
    assert "PER" in scheme_problem(["O", "PER"], "auto")


def test_single_label_metrics():
    m = single_label_metrics([0, 0, 1, 2], [0, 1, 1, 1], ["a", "b", "c", "d"])
    assert m["accuracy"] == 0.5
    assert m["confusion_matrix"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": approx(2 / 3), "support": 2}
    assert m["per_class"]["b"] == {"precision": approx(1 / 3), "recall": 1.0, "f1": 0.5, "support": 1}
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # d occurs nowhere: left out of the macro average
    assert m["f1_macro"] == approx((2 / 3 + 0.5 + 0.0) / 3)


def test_multi_label_metrics():
    m = multi_label_metrics([[1, 0], [1, 1], [0, 0]], [[1, 1], [1, 0], [0, 0]], ["x", "y"])
    assert m["f1_micro"] == approx(2 / 3)
    assert m["f1_macro"] == 0.5
    assert m["exact_match"] == approx(1 / 3)
    assert m["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_regression_metrics_and_tied_ranks():
    m = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert m == {"mse": 0.5, "pearson": approx(0.8), "spearman": approx(0.8)}
    assert average_ranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    tied = regression_metrics([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    assert tied["spearman"] == approx(4.5 / (4.5 * 5) ** 0.5)
    assert regression_metrics([1.0, 1.0], [0.0, 2.0])["pearson"] == 0.0
