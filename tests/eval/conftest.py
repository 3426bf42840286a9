"""Tiny LaMP-format fixtures for the evaluation tests: two users with one or two queries each.

``lamp_rating_files``: a LaMP-3-style review-rating task (questions + outputs JSON);
``lamp_generation_files``: a LaMP-5-style title-generation task. Both are written once per
session into a temporary folder and read back through ``p2p_local.datasets.lamp``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

RATE = ("What is the score of the following review on a scale of 1 to 5? just answer with 1, "
        "2, 3, 4, or 5 without further explanation. review: ")
U1 = [{"id": "u1-1", "text": "Great toaster, works perfectly every morning.", "score": "5"},
      {"id": "u1-2", "text": "Lovely mug, I use it daily.", "score": "5"},
      {"id": "u1-3", "text": "The lid cracked after a month.", "score": "3"}]
U2 = [{"id": "u2-1", "text": "Terrible kettle, stopped working.", "score": "1"},
      {"id": "u2-2", "text": "Cheap plastic toaster, not worth it.", "score": "2"}]
RATING_QUESTIONS = [
    {"id": "u1-q1", "user_id": "u1", "input": RATE + "The kettle boils fast and looks great.",
     "profile": U1},
    {"id": "u1-q2", "user_id": "u1", "input": RATE + "Solid toaster, a bit loud.",
     "profile": U1},
    {"id": "u2-q1", "user_id": "u2", "input": RATE + "The mug broke on the first day.",
     "profile": U2},
]
RATING_OUTPUTS = {"task": "LaMP_3", "golds": [{"id": "u1-q1", "output": "5"},
                                              {"id": "u1-q2", "output": "4"},
                                              {"id": "u2-q1", "output": "1"}]}

TITLE = "Generate a title for the following abstract of a paper: "
GEN_QUESTIONS = [
    {"id": "g1", "user_id": "a1", "input": TITLE + "We train small graph networks on molecules.",
     "profile": [{"id": "a1-1", "title": "Graph nets for chemistry",
                  "abstract": "We study graph networks for molecules."}]},
    {"id": "g2", "user_id": "a2", "input": TITLE + "We measure how people read long papers.",
     "profile": [{"id": "a2-1", "title": "Reading habits of scientists",
                  "abstract": "A survey of how scientists read."}]},
]
GEN_OUTPUTS = {"task": "LaMP_5", "golds": [{"id": "g1", "output": "Small graph nets"},
                                           {"id": "g2", "output": "How people read papers"}]}


def _write(folder: Path, questions: list, outputs: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dev_questions.json").write_text(json.dumps(questions))
    (folder / "dev_outputs.json").write_text(json.dumps(outputs))
    return folder / "dev_questions.json"


@pytest.fixture(scope="session")
def lamp_rating_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LaMP-3-style questions file (its outputs file lies beside it)."""
    return _write(tmp_path_factory.mktemp("lamp3"), RATING_QUESTIONS, RATING_OUTPUTS)


@pytest.fixture(scope="session")
def lamp_generation_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LaMP-5-style questions file (its outputs file lies beside it)."""
    return _write(tmp_path_factory.mktemp("lamp5"), GEN_QUESTIONS, GEN_OUTPUTS)
