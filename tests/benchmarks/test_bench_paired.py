"""bench_paired.py / bench_quality.py: reading a quality run's per-query scores back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bench_paired import add_per_query, cached_answers, run_answers
from bench_quality import work_dir

from p2p_local.eval.paired import query_scores

WriteRun = Callable[..., dict[str, Any]]
USERS = ["u2", "u1"]  # the file's users, not sorted: per_query keeps this order
BASE = [("q1", "u1", "the cat sat", "the cat sat"), ("q2", "u1", "a dog", "the cat"),
        ("q3", "u2", None, "hello world"), ("q4", "u2", "hello", "hello world"),
        ("q5", "u3", "the cat sat", "the cat sat")]  # u3: not one of the file's users
P2P = [("q1", "u1", "a cat", "the cat sat"), ("q2", "u1", "the cat", "the cat"),
       ("q3", "u2", "hello world", "hello world"), ("q4", "u2", "bye", "hello world"),
       ("q6", "u2", "hello", "hello")]  # q6: only p2p answered it


def test_work_dir_gives_validation_users_their_own_folder(cache: Path) -> None:
    assert work_dir("office", "random") == cache / "eval" / "office-random"
    assert work_dir("office", "ood", "test") == cache / "eval" / "office-ood"
    assert work_dir("office", "random", "val") == cache / "eval" / "office-random-val"


def test_cached_answers_are_the_files_users_with_their_scores(write_run: WriteRun) -> None:
    results = write_run({"base": BASE}, USERS)
    answers = cached_answers(results, "base")
    assert sorted(answers) == ["q1", "q2", "q3", "q4"]
    for q, u, p, g in BASE[:4]:
        assert answers[q]["user_id"] == u and answers[q]["prediction"] == p
        assert answers[q]["gold"] == g
        assert answers[q]["score"] == pytest.approx(query_scores("generation", [p], [g])[0])
    assert [answers[q]["score"] for q in ("q1", "q2", "q3")] == [1.0, 0.0, 0.0]
    assert answers["q4"]["score"] == pytest.approx(2 / 3)  # P 1, R 1/2


@pytest.mark.parametrize("change", [{"rouge1": 0.01}, {"n": 1}])
def test_cached_answers_refuse_a_figure_the_cache_does_not_reproduce(
        write_run: WriteRun, change: dict[str, float]) -> None:
    results = write_run({"base": BASE}, USERS)
    for key, delta in change.items():
        results["results"]["base"][key] += delta
    with pytest.raises(SystemExit, match="do not reproduce"):
        cached_answers(results, "base")


def test_cached_answers_of_validation_users_come_from_the_val_folder(
        write_run: WriteRun) -> None:
    results = write_run({"base": BASE}, USERS, held_out="val")
    assert sorted(cached_answers(results, "base")) == ["q1", "q2", "q3", "q4"]
    results["meta"]["settings"]["held_out"] = "test"  # no answers in office-random/
    with pytest.raises(SystemExit, match="office-random/predictions"):
        cached_answers(results, "base")


def test_run_answers_prefers_the_files_own_scores(write_run: WriteRun) -> None:
    results = write_run({"base": BASE, "p2p": P2P}, USERS)
    results["per_query"] = {"metric": "rouge1", "user_ids": ["u2", "u1"],
                            "query_ids": ["q3", "q1"], "scores": {"base": [0.25, 0.5]}}
    assert run_answers(results, "base") == {
        "q3": {"query_id": "q3", "user_id": "u2", "score": 0.25},
        "q1": {"query_id": "q1", "user_id": "u1", "score": 0.5}}
    assert run_answers(results, "p2p") == cached_answers(results, "p2p")  # none in the file


def test_add_per_query_matches_the_figures(write_run: WriteRun, cache: Path) -> None:
    results = write_run({"base": BASE, "p2p": P2P}, USERS)
    added = add_per_query(results)
    assert "per_query" not in results
    per_query = added["per_query"]
    assert per_query["metric"] == "rouge1"
    assert per_query["query_ids"] == ["q3", "q4", "q1", "q2"]  # shared, file's user order
    assert per_query["user_ids"] == ["u2", "u2", "u1", "u1"]
    for method in ("base", "p2p"):
        cached = cached_answers(results, method)
        assert per_query["scores"][method] == [cached[q]["score"] for q in per_query["query_ids"]]
    assert per_query["scores"]["p2p"] == pytest.approx([1.0, 0.0, 0.4, 1.0])  # q1: P 1/2, R 1/3
    # base answered exactly these queries: its scores average to its figure
    base = per_query["scores"]["base"]
    assert sum(base) / len(base) == pytest.approx(results["results"]["base"]["rouge1"])
    for path in (cache / "eval").rglob("*.jsonl"):
        path.unlink()  # the file alone now carries the scores
    assert [a["score"] for a in run_answers(added, "p2p").values()] == per_query["scores"]["p2p"]
