"""Metrics against hand-computed values and against the libraries they wrap; output parsing."""

from __future__ import annotations

import math

import pytest

from p2p_local.errors import ConfigError, EvaluationError
from p2p_local.eval.metrics import (
    accuracy,
    best_constant,
    macro_f1,
    mae,
    parse_answer,
    parse_label,
    parse_rating,
    rmse,
    rouge,
    score,
)

RATINGS = ("1", "2", "3", "4", "5")


def test_mae_rmse_hand_computed() -> None:
    # errors 1, 0, 2, 3 -> MAE 6/4, RMSE sqrt((1+0+4+9)/4)
    assert mae([2, 3, 5, 1], [3, 3, 3, 4]) == pytest.approx(1.5)
    assert rmse([2, 3, 5, 1], [3, 3, 3, 4]) == pytest.approx(math.sqrt(14 / 4))
    assert mae([4.0], [4.0]) == 0.0


def test_accuracy_and_macro_f1_hand_computed() -> None:
    golds = ["a", "a", "b", "b", "c"]
    preds = ["a", "b", "b", "b", None]
    assert accuracy(preds, golds) == pytest.approx(3 / 5)
    # a: P=1, R=1/2 -> F1 2/3; b: P=2/3, R=1 -> F1 4/5; c: P=0 (never predicted), R=0 -> 0
    assert macro_f1(preds, golds, ("a", "b", "c")) == pytest.approx((2 / 3 + 4 / 5 + 0) / 3)


def test_macro_f1_matches_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    golds = ["x", "y", "z", "x", "y", "z", "x"]
    preds = ["x", "z", "z", "y", "y", "x", "x"]
    assert macro_f1(preds, golds) == pytest.approx(f1_score(golds, preds, average="macro"))


def test_rouge_matches_rouge_score_directly() -> None:
    from rouge_score import rouge_scorer

    golds = ["the cat sat on the mat", "to be or not to be", "a quick brown fox"]
    preds = ["the cat sat", "not to be, that is it", "slow dogs"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    want = [scorer.score(g, p) for g, p in zip(golds, preds, strict=True)]
    got = rouge(preds, golds)
    assert got["rouge1"] == pytest.approx(sum(w["rouge1"].fmeasure for w in want) / 3)
    assert got["rougeL"] == pytest.approx(sum(w["rougeL"].fmeasure for w in want) / 3)
    # hand check of one pair: 3 shared unigrams, P = 3/3, R = 3/6 -> F = 2/3
    assert rouge(["the cat sat"], ["the cat sat on the mat"])["rouge1"] == pytest.approx(2 / 3)


def test_rouge_scores_missing_answers_zero() -> None:
    assert rouge([None, ""], ["some text", "more text"]) == {"rouge1": 0.0, "rougeL": 0.0}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("4", "4"),
        ("I'd say 4/5.", "4"),
        ("Rating: 5 stars", "5"),
        ("The score is 10, no wait, 3", "3"),  # 10 is no rating: the first valid one counts
        ("4.0", "4"),
        ("3.5", None),  # no label
        ("four", "4"),
        ("2 or maybe four", "2"),  # digits before words
        ("no idea", None),
        ("", None),
        ("0", None),
    ],
)
def test_parse_rating(text: str, want: str | None) -> None:
    assert parse_rating(text, RATINGS) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("sci-fi", "sci-fi"),
        ("  Comedy. ", "comedy"),
        ("I think the tag is comedy, maybe drama", "comedy"),
        ("drama", "drama"),
        ("dramatic stuff", None),  # whole words only
        ("[2]", "[2]"),
        ("Reference [1] fits better", "[1]"),
        ("nothing", None),
    ],
)
def test_parse_label(text: str, want: str | None) -> None:
    assert parse_label(text, ("sci-fi", "comedy", "drama", "[1]", "[2]")) == want


def test_parse_answer_generation_strips_and_flags_empty() -> None:
    assert parse_answer("  Hello there.\n", "generation") == "Hello there."
    assert parse_answer("   ", "generation") is None
    with pytest.raises(ConfigError):
        parse_answer("x", "ranking")


def test_score_rating_counts_unparsable_as_worst() -> None:
    # gold 5, unparsable -> worst is 1 (error 4); gold 2, pred 3 (error 1); gold 1, pred 1
    s = score("rating", [None, "3", "1"], ["5", "2", "1"], RATINGS)
    assert s.unparsable == 1 and s.n == 3
    assert s.metrics["mae"] == pytest.approx(5 / 3)
    assert s.metrics["rmse"] == pytest.approx(math.sqrt((16 + 1 + 0) / 3))
    assert s.metrics["accuracy"] == pytest.approx(1 / 3)
    # gold 3: both 1 and 5 are 2 away -> error 2
    assert score("rating", [None], ["3"], RATINGS).metrics["mae"] == pytest.approx(2.0)


def test_score_per_kind_and_errors() -> None:
    assert set(score("classification", ["a"], ["a"], ("a", "b")).metrics) == {"accuracy", "f1"}
    assert set(score("generation", ["x y"], ["x z"]).metrics) == {"rouge1", "rougeL"}
    with pytest.raises(EvaluationError):
        score("rating", ["1"], ["1", "2"], RATINGS)
    with pytest.raises(EvaluationError):
        score("rating", [], [], RATINGS)


def test_best_constant_is_the_most_common_training_answer() -> None:
    c = best_constant("rating", ["4", "4", "5", "3", "4", "5"], ["4", "5", "1"], RATINGS)
    assert c is not None and c.answer == "4" and c.counts == {"3": 1, "4": 3, "5": 2}
    assert c.scores.metrics["mae"] == pytest.approx((0 + 1 + 3) / 3)
    # ties go to the earlier label; generation has no constant answer
    assert best_constant("rating", ["2", "5"], ["2"], RATINGS).answer == "2"  # type: ignore[union-attr]
    assert best_constant("generation", ["x"], ["y"]) is None
