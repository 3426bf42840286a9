"""Paired per-user comparison (p2p_local.eval.paired) on hand-computed answers."""

from __future__ import annotations

import pytest

from p2p_local.errors import EvaluationError
from p2p_local.eval.paired import paired_by_user, paired_over_runs, query_scores


def _answers(rows: list[tuple[str, str, str | None, str]]) -> dict[str, dict[str, object]]:
    return {q: {"query_id": q, "user_id": u, "prediction": p, "gold": g} for q, u, p, g in rows}


def test_rating_difference_is_per_user_mae_and_lower_is_better() -> None:
    # user x: A errs 0 and 2 (MAE 1), B errs 1 and 1 (MAE 1): equal
    # user y: A errs 0 (MAE 0), B errs 2 (MAE 2): A better by 2
    # user z: A errs 1 (MAE 1), B errs 0 (MAE 0): A worse by 1
    a = _answers([("q1", "x", "4", "4"), ("q2", "x", "1", "3"), ("q3", "y", "5", "5"),
                  ("q4", "z", "3", "4")])
    b = _answers([("q1", "x", "3", "4"), ("q2", "x", "4", "3"), ("q3", "y", "3", "5"),
                  ("q4", "z", "4", "4"), ("q9", "z", "4", "4")])  # q9: only B answered it
    result = paired_by_user("rating", a, b, resamples=2000, seed=1)
    assert result.metric == "mae" and not result.higher_is_better
    assert (result.users, result.queries) == (3, 4)
    assert result.mean_difference == pytest.approx((0.0 - 2.0 + 1.0) / 3)
    assert (result.users_a_better, result.users_a_worse, result.users_equal) == (1, 1, 1)
    low, high = result.ci95
    assert -2.0 <= low <= result.mean_difference <= high <= 1.0


def test_unparsable_rating_scores_as_the_farthest_label() -> None:
    a = _answers([("q1", "x", None, "5"), ("q2", "y", "5", "5")])
    b = _answers([("q1", "x", "5", "5"), ("q2", "y", "5", "5")])
    result = paired_by_user("rating", a, b, resamples=100)
    assert result.mean_difference == pytest.approx(4.0 / 2)  # x: MAE 4 (answer "1") vs 0


def test_generation_uses_rouge1_and_higher_is_better() -> None:
    a = _answers([("q1", "x", "the cat sat", "the cat sat"), ("q2", "y", "a dog", "the cat")])
    b = _answers([("q1", "x", "a dog", "the cat sat"), ("q2", "y", "the cat", "the cat")])
    result = paired_by_user("generation", a, b, resamples=100)
    assert result.metric == "rouge1" and result.higher_is_better
    assert result.mean_difference == pytest.approx((1.0 - 1.0) / 2)
    assert (result.users_a_better, result.users_a_worse) == (1, 1)


def test_identical_methods_have_a_zero_interval() -> None:
    a = _answers([("q1", "x", "4", "4"), ("q2", "y", "2", "5")])
    result = paired_by_user("rating", a, dict(a), resamples=100)
    assert result.ci95 == (0.0, 0.0) and result.users_equal == 2


def test_needs_two_shared_users_and_a_known_kind() -> None:
    a = _answers([("q1", "x", "4", "4")])
    with pytest.raises(EvaluationError, match="fewer than 2 users"):
        paired_by_user("rating", a, a)
    with pytest.raises(EvaluationError, match="task kind"):
        paired_by_user("ranking", a, a)


def test_runs_average_each_users_score_before_the_difference() -> None:
    # two runs of A against one of B; user x: A's MAE 0 and 2 (mean 1), B's 1 -> 0;
    # user y: A's 0 and 1 (mean 0.5), B's 2 -> A better by 1.5
    a1 = _answers([("q1", "x", "4", "4"), ("q2", "y", "5", "5")])
    a2 = _answers([("q1", "x", "2", "4"), ("q2", "y", "4", "5")])
    b = _answers([("q1", "x", "3", "4"), ("q2", "y", "3", "5")])
    result = paired_over_runs("rating", [a1, a2], [b], resamples=500, seed=3)
    assert result.mean_difference == pytest.approx((0.0 - 1.5) / 2)
    assert (result.users_a_better, result.users_equal) == (1, 1)


def test_runs_count_only_queries_every_run_answered() -> None:
    a1 = _answers([("q1", "x", "4", "4"), ("q2", "y", "5", "5"), ("q3", "y", "1", "5")])
    a2 = _answers([("q1", "x", "4", "4"), ("q2", "y", "5", "5")])  # q3 missing here
    b = _answers([("q1", "x", "3", "4"), ("q2", "y", "5", "5"), ("q3", "y", "5", "5")])
    result = paired_over_runs("rating", [a1, a2], [b], resamples=100)
    assert result.queries == 2
    assert result.mean_difference == pytest.approx((-1.0 + 0.0) / 2)
    assert paired_by_user("rating", a1, b, resamples=100).queries == 3


def test_one_run_a_side_is_the_plain_paired_comparison() -> None:
    a = _answers([("q1", "x", "the cat sat", "the cat sat"), ("q2", "y", "a dog", "the cat")])
    b = _answers([("q1", "x", "a dog", "the cat sat"), ("q2", "y", "the cat", "the cat")])
    assert paired_over_runs("generation", [a], [b], resamples=200, seed=5) == paired_by_user(
        "generation", a, b, resamples=200, seed=5)
    with pytest.raises(EvaluationError, match="at least one run"):
        paired_over_runs("generation", [], [b])


def test_query_scores_are_each_answers_main_metric() -> None:
    # rating (parsed answers): the absolute error; unparsable counts as the farthest label
    assert query_scores("rating", ["4", None, "2"], ["5", "2", "2"]) == [1.0, 3.0, 0.0]
    # generation: ROUGE-1 F of the pair alone (2 of 3 words shared each way: P = R = F = 2/3)
    r1 = query_scores("generation", ["the cat ran", None], ["the cat sat", "a dog"])
    assert r1 == pytest.approx([2 / 3, 0.0])
    assert query_scores("classification", ["pos", None], ["pos", "neg"]) == [1.0, 0.0]
    with pytest.raises(EvaluationError, match="task kind"):
        query_scores("ranking", ["a"], ["a"])


def test_scores_alone_give_the_same_comparison_as_the_answers() -> None:
    rows_a = [("q1", "x", "4", "4"), ("q2", "x", "1", "3"), ("q3", "y", "5", "5"),
              ("q4", "z", None, "4")]
    rows_b = [("q1", "x", "3", "4"), ("q2", "x", "4", "3"), ("q3", "y", "3", "5"),
              ("q4", "z", "4", "4")]

    def as_scores(rows: list[tuple[str, str, str | None, str]]) -> dict[str, dict[str, object]]:
        values = query_scores("rating", [p for _, _, p, _ in rows], [g for *_, g in rows])
        return {q: {"query_id": q, "user_id": u, "score": v}
                for (q, u, _, _), v in zip(rows, values, strict=True)}

    from_answers = paired_by_user("rating", _answers(rows_a), _answers(rows_b), resamples=500)
    from_scores = paired_by_user("rating", as_scores(rows_a), as_scores(rows_b), resamples=500)
    assert from_scores == from_answers
    assert from_scores.mean_difference == pytest.approx((0.0 - 2.0 + 3.0) / 3)
