"""History statistics: ratings, labels, rendering, and histories without either."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2p_local.profile.statistics import compute_statistics, rating_habit, rating_scale
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
    assert "; their most common rating is 2 on a 1 to 5 scale. 1 of 4 items rated" in stats.render()


def test_continuous_scores_are_binned() -> None:
    items = [HistoryItem(text=f"t{i}", score=i / 10) for i in range(50)]
    stats = compute_statistics(items)
    assert stats is not None
    assert len(stats.rating_distribution) == 5
    assert sum(stats.rating_distribution.values()) == 50


def test_rating_habit_in_words_leads_the_section() -> None:
    generous = compute_statistics([HistoryItem(text=f"g{i}", score=s)
                                   for i, s in enumerate([5, 5, 4, 5, 4])])
    harsh = compute_statistics([HistoryItem(text=f"h{i}", score=s)
                                for i, s in enumerate([1, 2, 1, 3, 2])])
    assert generous is not None and harsh is not None
    assert generous.scale == harsh.scale == (1.0, 5.0)
    assert generous.render().startswith(
        "This user is a very generous rater who likes almost everything they rate; "
        "their most common rating is 5 on a 1 to 5 scale."
    )
    assert harsh.render().startswith("This user is a harsh rater")
    assert "most common rating is 1 on a 1 to 5 scale" in harsh.render()


@pytest.mark.parametrize(
    ("scores", "scale"),
    [([1, 3, 5], (1.0, 5.0)), ([2, 9], (1.0, 10.0)), ([0.2, 0.9], (0.0, 1.0)),
     ([0, 4], (0.0, 5.0)), ([35, 80], (0.0, 100.0)), ([-3, 7], (-3.0, 7.0))],
)
def test_rating_scale_is_the_smallest_common_scale_that_fits(
    scores: list[float], scale: tuple[float, float]
) -> None:
    assert rating_scale(scores) == scale


def test_rating_habit_by_position_on_the_scale() -> None:
    assert rating_habit(4.5, (1.0, 5.0)).startswith("a very generous")
    assert rating_habit(3.9, (1.0, 5.0)).startswith("a generous")
    assert rating_habit(3.5, (1.0, 5.0)) == "a moderate rater"
    assert rating_habit(3.1, (1.0, 5.0)) == "a critical rater"
    assert rating_habit(2.0, (1.0, 5.0)).startswith("a harsh")
    assert rating_habit(8.0, (1.0, 10.0)).startswith("a generous")
    assert rating_habit(7.0, (7.0, 7.0)) == "a critical rater"  # a one-point scale: the middle
