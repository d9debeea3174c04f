"""SQuAD exact match / F1 agree with values worked out by hand from the official v1.1 and v2.0 scripts."""

from __future__ import annotations

import pytest

from lmtool.tasks.metrics.squad import f1_v1, f1_v2, normalize_answer, squad_v1, squad_v2


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("The  Quick, brown fox!", "quick brown fox"),
        ("An apple a day", "apple day"),
        ("theater anthem", "theater anthem"),  # articles only as whole words
        ("U.S. a", "us"),  # punctuation goes before articles are looked for
        ("a-the-an", "athean"),
        ("  tabs\tand\nnewlines ", "tabs and newlines"),
        ("“café” — bar", "“café” — bar"),  # only ASCII punctuation is removed
        ("THE", ""),
    ],
)
def test_normalize_answer_lowercases_drops_punctuation_articles_and_extra_whitespace(text, normal):
    assert normalize_answer(text) == normal


def test_f1_is_over_the_bag_of_normalized_tokens():
    assert f1_v1("the cat sat", "a cat sat on the mat") == pytest.approx(2 / 3)  # P 1, R 1/2
    assert f1_v1("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)  # counts clip: 2 common of 3
    assert f1_v1("dog", "cat") == 0.0
    assert f1_v1("", "") == 0.0  # v1.1: no common token, F1 0 even for two empty answers
    assert f1_v2("", "") == 1.0  # v2.0: both empty agree
    assert f1_v2("", "cat") == 0.0 and f1_v2("cat", "") == 0.0


def test_v1_takes_the_best_gold_answer_per_question_and_reports_percentages():
    metrics = squad_v1(
        ["Denver Broncos", "the Panthers", "1990s"],
        [["Denver Broncos", "Broncos"], ["Carolina Panthers"], ["2016"]],
    )
    # EM: 1, 0, 0. F1: 1, 2*(1/1*1/2)/(1+1/2) = 2/3, 0.
    assert metrics["exact_match"] == pytest.approx(100 / 3)
    assert metrics["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert metrics["total"] == 3


def test_v2_scores_no_answer_questions_against_the_empty_string_with_a_has_ans_no_ans_breakdown():
    metrics = squad_v2(
        ["", "north", "", "the"],
        [[], [], ["south pole"], ["the", "a"]],
    )
    # q1 no-answer & abstains: 1/1. q2 no-answer but answers: 0/0. q3 answerable, abstains: 0/0.
    # q4 golds normalise to nothing -> gold "" ; prediction "the" normalises to "" -> EM 1; F1 of
    # token lists [] (pred "the" has no tokens) vs [] -> 1; q4 counts as HasAns (its raw answers exist).
    assert metrics["exact_match"] == pytest.approx(50.0)
    assert metrics["f1"] == pytest.approx(50.0)
    assert metrics["total"] == 4
    assert (metrics["HasAns_exact"], metrics["HasAns_f1"], metrics["HasAns_total"]) == (50.0, 50.0, 2)
    assert (metrics["NoAns_exact"], metrics["NoAns_f1"], metrics["NoAns_total"]) == (50.0, 50.0, 2)
