from __future__ import annotations

from pathlib import Path

from p2p_local.datasets import movielens
from p2p_local.datasets.base import ConvertSettings, TaskDataset, validate_dataset

RATINGS = 100_000
UNKNOWN_MOVIE_RATINGS = 9  # ratings of item 267, whose title is "unknown": dropped


def test_every_user_with_twenty_ratings(movielens_ds: TaskDataset) -> None:
    assert len(movielens_ds) == 943
    assert movielens_ds.sources == ("recbole==1.2.1",)
    validate_dataset(movielens_ds)
    # Every kept rating is either history or a query, exactly once.
    total = sum(len(u.history) + len(u.queries) for u in movielens_ds.users)
    assert total == RATINGS - UNKNOWN_MOVIE_RATINGS


def test_queries_are_held_out_most_recent_ratings(movielens_ds: TaskDataset) -> None:
    labels = {"1", "2", "3", "4", "5"}
    for user in movielens_ds.users:
        assert len(user.queries) == 3
        history_ids = {h.id for h in user.history}
        last_seen = max(h.time for h in user.history)
        for q in user.queries:
            assert q.output in labels
            assert q.input.strip() and "1 to 5" in q.input
            assert q.meta["item_id"] not in history_ids
            assert q.meta["time"] >= last_seen
        for h in user.history:
            assert h.kind == "rating" and h.score in (1.0, 2.0, 3.0, 4.0, 5.0)
            assert h.text.strip() and h.id.startswith("movie-")


def test_titles_genres_and_demographics(movielens_ds: TaskDataset) -> None:
    user = movielens_ds.user("ml-1")
    assert user.meta == {"age": 24, "gender": "M", "occupation": "technician"}
    texts = {h.text for u in movielens_ds.users for h in u.history}
    assert "Toy Story (1995) - Animation, Children's, Comedy" in texts
    assert "The Usual Suspects (1995) - Crime, Thriller" in texts
    toy = next(h for h in user.history if h.id == "movie-1")
    assert toy.label == "Animation, Children's, Comedy"


def test_settings_cap_queries_history_and_users(recbole_dir: Path) -> None:
    capped = ConvertSettings(max_queries=1, max_history=10, max_users=50, seed=3)
    a = movielens.convert(recbole_dir, capped)
    b = movielens.convert(recbole_dir, capped)
    assert len(a) == 50 and a.user_ids() == b.user_ids()
    assert all(len(u.queries) == 1 and len(u.history) == 10 for u in a.users)
    assert a.users[0].queries == b.users[0].queries
    heavy = movielens.convert(recbole_dir, ConvertSettings(min_items=200, max_users=50, seed=4))
    assert len(heavy) == 50 and heavy.user_ids() != a.user_ids()
    assert all(len(u.history) + len(u.queries) >= 200 for u in heavy.users)
