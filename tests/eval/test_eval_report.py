"""The Markdown tables and the JSON round trip of a report (no models)."""

from __future__ import annotations

import pytest

from p2p_local.errors import EvaluationError
from p2p_local.eval.harness import EvalReport, MethodResult
from p2p_local.eval.metrics import best_constant, score
from p2p_local.eval.report import combined_table, markdown_table

RATINGS = ("1", "2", "3", "4", "5")


def _rating_report() -> EvalReport:
    golds = ["4", "5", "2"]
    results = {
        "base": MethodResult("base", score("rating", ["1", "1", None], golds, RATINGS),
                             0.25, 0.0, 2, "fp-base", query_scores=(3.0, 4.0, 3.0)),
        "p2p": MethodResult("p2p", score("rating", ["4", "4", "2"], golds, RATINGS),
                            0.5, 0.8, 2, "fp-p2p", query_scores=(0.0, 1.0, 0.0)),
    }
    constant = best_constant("rating", ["4", "4", "3"], golds, RATINGS)
    return EvalReport("movielens", "rating", "random", 2, 3, results, constant,
                      {"model": "m@1", "backend": "llamacpp", "hardware": "x"},
                      queries=(("u1", "u1-q1"), ("u1", "u1-q2"), ("u2", "u2-q1")))


def _generation_report() -> EvalReport:
    golds = ["the cat sat", "a dog"]
    results = {"base": MethodResult("base", score("generation", ["cat", None], golds),
                                    1.5, 0.0, 2, "fp")}
    return EvalReport("fortunes", "generation", "random", 2, 2, results, None, {})


def test_markdown_table_marks_the_best_and_lists_the_constant() -> None:
    table = markdown_table(_rating_report())
    assert "### movielens (rating), random split: 2 held-out users, 3 queries" in table
    assert "| method | MAE ↓ | RMSE ↓ | Acc ↑ | unparsable | s / query | setup s / user |" in table
    p2p = next(line for line in table.splitlines() if line.startswith("| p2p |"))
    base = next(line for line in table.splitlines() if line.startswith("| base |"))
    assert "**0.3333**" in p2p and "**" not in base.split("|")[2]  # lower MAE is bold
    assert "1/3" in base and "0.250" in base  # unparsable count and s / query
    assert '| best constant ("4") |' in table


def test_report_json_round_trip() -> None:
    report = _rating_report()
    data = report.to_dict()
    assert data["per_query"] == {
        "metric": "mae", "user_ids": ["u1", "u1", "u2"], "query_ids": ["u1-q1", "u1-q2", "u2-q1"],
        "scores": {"base": [3.0, 4.0, 3.0], "p2p": [0.0, 1.0, 0.0]}}
    again = EvalReport.from_dict(data)
    assert again.summary() == report.summary()
    assert again.results["p2p"].fingerprint == "fp-p2p"
    assert again.queries == report.queries
    assert again.results["base"].query_scores == (3.0, 4.0, 3.0)
    # a file written before per-query scores existed still reads, without them
    del data["per_query"]
    older = EvalReport.from_dict(data)
    assert older.queries == () and older.results["p2p"].query_scores == ()
    assert "per_query" not in older.to_dict()
    with pytest.raises(EvaluationError):
        EvalReport.from_dict({"format": "other"})


def test_combined_table_has_a_column_group_per_task() -> None:
    table = combined_table([_rating_report(), _generation_report()])
    head = table.splitlines()[0]
    assert "movielens MAE ↓" in head and "fortunes ROUGE-1 ↑" in head
    p2p = next(line for line in table.splitlines() if line.startswith("| p2p |"))
    assert p2p.count(" - ") == 2  # p2p has no fortunes results: two empty ROUGE cells
    assert "movielens: 2 users / 3 queries" in table


def test_table_adds_per_user_differences_from_the_per_query_scores() -> None:
    # p2p errs 0, 1 | 0 and base 3, 4 | 3 on users u1 | u2: each user's MAE is 3 lower
    table = markdown_table(_rating_report())
    assert "Per user, p2p minus each method (MAE of each user's queries; negative favours p2p" in (
        table)
    base = next(line for line in table.splitlines() if line.startswith("| base | -"))
    assert base == "| base | -3.000 | **[-3.000, -3.000]** | 2 / 0 / 0 |"
    # without per-query scores (an older results file) the section is left out
    data = _rating_report().to_dict()
    del data["per_query"]
    assert "Per user" not in markdown_table(EvalReport.from_dict(data))
