"""bench_replies.py: the length, variety and ROUGE-1 parts of a method's answers."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from bench_replies import main, reply_shape
from rouge_score import rouge_scorer

WriteRun = Callable[..., dict[str, Any]]
ANSWERS: list[Mapping[str, Any]] = [
    {"prediction": "the cat sat on the mat", "gold": "the cat sat"},
    {"prediction": "the cat sat on the mat", "gold": "a dog ran"},
    {"prediction": None, "gold": "the dog barked loudly"},
    {"prediction": "", "gold": "hello there"},
    {"prediction": "hello", "gold": "hello world"},
    {"prediction": "cats and dogs", "gold": "dogs"},
]


def test_reply_shape_by_hand_and_by_rouge_score() -> None:
    shape = reply_shape(ANSWERS)
    assert shape["n"] == 6
    assert shape["words_per_answer"] == pytest.approx((6 + 6 + 0 + 0 + 1 + 3) / 6)
    assert shape["words_per_gold"] == pytest.approx((3 + 3 + 4 + 2 + 2 + 1) / 6)
    assert shape["distinct_answers"] == 4  # None and "" are the same empty answer
    assert shape["top3_share"] == pytest.approx((2 + 2 + 1) / 6)
    scorer = rouge_scorer.RougeScorer(["rouge1"])
    parts = [scorer.score(a["gold"], a["prediction"])["rouge1"] for a in ANSWERS
             if a["prediction"]]  # the empty ones count 0
    assert shape["rouge1_precision"] == pytest.approx(sum(s.precision for s in parts) / 6)
    assert shape["rouge1_recall"] == pytest.approx(sum(s.recall for s in parts) / 6)
    assert shape["rouge1"] == pytest.approx(sum(s.fmeasure for s in parts) / 6)
    assert (shape["rouge1_precision"], shape["rouge1_recall"]) == pytest.approx((11 / 36, 5 / 12))


def test_main_writes_each_methods_shape(write_run: WriteRun, tmp_path: Path) -> None:
    rows = [(f"q{i}", "u1" if i < 4 else "u2", a["prediction"], a["gold"])
            for i, a in enumerate(ANSWERS)]
    results = write_run({"base": rows, "p2p": [r[:2] + ("hello", r[3]) for r in rows]},
                        ["u1"])  # the file's figures cover u1's four queries
    path = tmp_path / "quality_office_random.json"
    path.write_text(json.dumps(results))
    out = tmp_path / "new" / "replies.json"
    assert main([str(path), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["command"] == f"python benchmarks/bench_replies.py {path} --out {out}"
    assert set(report["methods"]) == {f"{path}:base", f"{path}:p2p"}
    assert report["methods"][f"{path}:base"] == pytest.approx(reply_shape(ANSWERS[:4]))
    p2p = report["methods"][f"{path}:p2p"]
    assert (p2p["n"], p2p["distinct_answers"], p2p["top3_share"]) == (4, 1, 1.0)
    assert p2p["rouge1"] == pytest.approx(results["results"]["p2p"]["rouge1"])
    assert main([str(path), "--methods", "p2p", "--out", str(out)]) == 0
    assert list(json.loads(out.read_text())["methods"]) == [f"{path}:p2p"]


def test_main_refuses_a_task_that_is_not_generation(write_run: WriteRun, tmp_path: Path) -> None:
    path = tmp_path / "quality_movielens_random.json"
    path.write_text(json.dumps(write_run({"base": [("q1", "u1", "4", "5")]}, ["u1"],
                                         task="movielens", kind="rating")))
    with pytest.raises(SystemExit, match="not a generation task"):
        main([str(path), "--out", str(tmp_path / "replies.json")])
