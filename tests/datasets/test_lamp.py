"""LaMP / LongLaMP files: read, write, and the round trips both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2p_local.datasets.base import TaskDataset
from p2p_local.datasets.lamp import read_lamp, write_lamp
from p2p_local.errors import DatasetError

# Shapes of the public files: LaMP-3 (text + score), LaMP-2 (description + tag), LaMP-5
# (title + abstract), LaMP-4 (text + title + date), and a LongLaMP-style grouped file.
QUESTIONS_3 = [
    {"id": "3100", "input": "What is the score of the following review on a scale of 1 to 5? "
     "just answer with 1, 2, 3, 4, or 5 without further explanation. review: Great kettle.",
     "profile": [{"id": "31000", "text": "Broke after a week.", "score": "1"},
                 {"id": "31001", "text": "Does the job.", "score": "4"}]},
    {"id": "3101", "input": "What is the score of the following review? review: Meh.",
     "profile": [{"id": "31010", "text": "Lovely colours.", "score": "5"}]},
]
OUTPUTS_3 = {"task": "LaMP_3", "golds": [{"id": "3100", "output": "5"},
                                         {"id": "3101", "output": "3"}]}
QUESTIONS_2 = [
    {"id": "200", "input": "Which tag does this movie relate to among the following tags? ...",
     "profile": [{"id": "2000", "description": "A hacker learns reality is simulated.",
                  "tag": "sci-fi"},
                 {"id": "2001", "category": "comedy", "description": "Two friends, one car."}]},
]
QUESTIONS_LONG = [
    {"id": "a1", "user_id": "u7", "input": "Generate an abstract for the title: Graph nets",
     "profile": [{"id": "p1", "title": "Old paper", "abstract": "We study graphs.",
                  "date": "2019"}]},
    {"id": "a2", "user_id": "u7", "input": "Generate an abstract for the title: More graphs",
     "profile": [{"id": "p1", "title": "Old paper", "abstract": "We study graphs.",
                  "date": "2019"},
                 {"id": "p2", "reviewText": "Solid.", "overall": 4.0, "summary": "ok"}]},
]
OUTPUTS_LONG = {"task": "LongLaMP_abstract_generation",
                "golds": [{"id": "a1", "output": "We propose graph nets."},
                          {"id": "a2", "output": "More on graphs."}]}


def _roundtrip_files(tmp_path: Path, questions: list, outputs: dict | None, task: str | None):
    ds = read_lamp(questions, outputs, task=task)
    files = write_lamp(ds, tmp_path / "q.json", tmp_path / "o.json")
    return ds, json.loads(files.questions.read_text()), json.loads(files.outputs.read_text())


def test_lamp3_read_and_exact_roundtrip(tmp_path: Path) -> None:
    ds, q, o = _roundtrip_files(tmp_path, QUESTIONS_3, OUTPUTS_3, None)
    assert ds.spec.name == "LaMP_3" and ds.spec.kind == "rating"
    assert ds.user_ids() == ["3100", "3101"]  # no user_id: each question is a user
    user = ds.user("3100")
    assert [(h.text, h.score, h.kind, h.id) for h in user.history] == [
        ("Broke after a week.", 1.0, "rating", "31000"),
        ("Does the job.", 4.0, "rating", "31001"),
    ]
    assert user.queries[0].output == "5"
    assert q == QUESTIONS_3 and o == OUTPUTS_3


def test_lamp2_labels_and_roundtrip(tmp_path: Path) -> None:
    outputs = {"task": "LaMP_2", "golds": [{"id": "200", "output": "sci-fi"}]}
    ds, q, o = _roundtrip_files(tmp_path, QUESTIONS_2, outputs, None)
    assert ds.spec.kind == "classification" and ds.spec.labels == ("sci-fi",)
    labels = [(h.label, h.kind, h.text) for h in ds.users[0].history]
    assert labels == [("sci-fi", "tag", "A hacker learns reality is simulated."),
                      ("comedy", "tag", "Two friends, one car.")]
    assert q == QUESTIONS_2 and o == outputs


def test_longlamp_users_group_and_roundtrip(tmp_path: Path) -> None:
    ds, q, o = _roundtrip_files(tmp_path, QUESTIONS_LONG, OUTPUTS_LONG, None)
    assert ds.spec.kind == "generation" and ds.user_ids() == ["u7"]
    user = ds.user("u7")
    assert [h.id for h in user.history] == ["p1", "p2"]  # p1 merged across questions
    assert user.history[0].text == "Old paper\nWe study graphs." and user.history[0].time == "2019"
    assert user.history[1].text == "Solid.\nok"  # LongLaMP field names: any string field
    assert [qq.meta["profile"] for qq in user.queries] == [[0], [0, 1]]
    assert q == QUESTIONS_LONG and o == OUTPUTS_LONG


def test_questions_without_outputs() -> None:
    ds = read_lamp(QUESTIONS_3, task="LaMP_3")
    assert all(q.output is None for u in ds.users for q in u.queries)


def _records(ds: TaskDataset) -> list:
    return [
        (u.user_id,
         [(h.id, h.text, h.score, h.label, h.time, h.input, h.output) for h in u.history],
         [(q.id, q.input, q.output) for q in u.queries])
        for u in ds.users
    ]


@pytest.mark.parametrize("fixture", ["movielens_ds", "shakespeare_ds", "fortunes_ds"])
def test_corpus_roundtrip_through_lamp_files(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    full: TaskDataset = request.getfixturevalue(fixture)
    ds = full.subset(full.user_ids()[:25])
    files = write_lamp(ds, tmp_path / "questions.json", tmp_path / "outputs.json")
    back = read_lamp(files.questions, files.outputs)
    assert back.spec.name == ds.spec.name
    assert _records(back) == _records(ds)
    again = write_lamp(back, tmp_path / "q2.json", tmp_path / "o2.json")
    assert json.loads(again.questions.read_text()) == json.loads(files.questions.read_text())


def test_mismatched_files_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="match no question"):
        read_lamp(QUESTIONS_3, {"task": "LaMP_3", "golds": [{"id": "999", "output": "1"}]})
    with pytest.raises(DatasetError, match="name the task"):
        read_lamp(QUESTIONS_3)
    with pytest.raises(DatasetError, match="appears twice"):
        read_lamp(QUESTIONS_3 + QUESTIONS_3[:1], task="LaMP_3")
    with pytest.raises(DatasetError, match="not one of the labels"):
        read_lamp(QUESTIONS_3, {"task": "LaMP_3", "golds": [{"id": "3100", "output": "7"}]})
    with pytest.raises(DatasetError, match="does not exist"):
        read_lamp(tmp_path / "missing.json", task="x")
