"""History statistics: ratings, labels, rendering, and histories without either."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2p_local.profile.statistics import compute_statistics
from p2p_local.store.records import HistoryItem

DATA = Path(__file__).parent / "data"


def _items(name: str) -> list[HistoryItem]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [HistoryItem.from_dict(json.loads(line)) for line in lines if line.strip()]


def test_ratings_and_labels_of_the_review_fixture() -> None:
    stats = compute_statistics(_items("reviews.jsonl"))
    assert stats is not None
    assert (stats.items, stats.rated, stats.labelled) == (12, 12, 12)
    assert stats.mean_rating == pytest.approx(39 / 12)
    assert stats.rating_distribution == {"1": 2, "2": 2, "3": 1, "4": 5, "5": 2}
    assert stats.top_labels[0] == ("kitchen", 5)
    assert [label for label, _ in stats.top_labels] == [
        "kitchen", "outdoors", "electronics", "sports"
    ]
    text = stats.render()
    assert "12 of 12 items rated, mean rating 3.25" in text
    assert "4: 42%" in text and "kitchen (5)" in text


def test_plain_text_history_has_no_statistics() -> None:
    assert compute_statistics(_items("notes.jsonl")) is None
    assert compute_statistics([]) is None


def test_partly_rated_history_and_label_ties_are_stable() -> None:
    items = [
        HistoryItem(text="a", score=2),
        HistoryItem(text="b", label="zeta"),
        HistoryItem(text="c", label="alpha"),
        HistoryItem(text="d"),
    ]
    stats = compute_statistics(items)
    assert stats is not None
    assert (stats.items, stats.rated, stats.mean_rating) == (4, 1, 2.0)
    assert stats.top_labels == [("alpha", 1), ("zeta", 1)]
    assert stats.to_dict()["top_labels"] == [
        {"label": "alpha", "count": 1}, {"label": "zeta", "count": 1}
    ]
    assert stats.render().startswith("1 of 4 items rated")


def test_continuous_scores_are_binned() -> None:
    items = [HistoryItem(text=f"t{i}", score=i / 10) for i in range(50)]
    stats = compute_statistics(items)
    assert stats is not None
    assert len(stats.rating_distribution) == 5
    assert sum(stats.rating_distribution.values()) == 50
