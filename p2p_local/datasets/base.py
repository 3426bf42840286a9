"""The task-record format every corpus is converted to.

Owns :class:`TaskSpec`, :class:`Query`, :class:`UserRecord`, :class:`TaskDataset` and the
converter settings :class:`ConvertSettings`, plus small helpers the converters share (ids, query
counts, validation). Does not own fetching (``fetch.py``) or any one corpus (its own module).

Conventions (the LaMP ones, so LaMP files and these corpora travel the same path):

- ``Query.input`` is the complete prompt for one query (instruction included); ``Query.output``
  is what the user really wrote or chose.
- A user's ``history`` holds only items that are not queries: ``Query.meta["item_id"]`` names the
  held-out item and never equals the ``id`` of a history item of the same user.
- History is ordered oldest first where the corpus has an order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from p2p_local.errors import ConfigError, DatasetError
from p2p_local.store.records import HistoryItem

TASK_KINDS = ("rating", "classification", "generation")
_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class TaskSpec:
    """What a task asks. ``labels`` lists the allowed outputs of rating/classification tasks."""

    name: str
    description: str
    kind: str
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"TaskSpec.name must be a non-empty string, got {self.name!r}")
        if self.kind not in TASK_KINDS:
            raise ConfigError(
                f"TaskSpec.kind must be one of {', '.join(TASK_KINDS)}, got {self.kind!r}"
            )
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))


@dataclass(frozen=True)
class Query:
    """One held-out query: the prompt, the user's true output (None when unknown), extras."""

    id: str
    input: str
    output: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UserRecord:
    """One user of one task: their history items and their held-out queries."""

    user_id: str
    task: str
    history: list[HistoryItem]
    queries: list[Query]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskDataset:
    """All users of one task. ``sources`` names the packages it came from (``name==version``)."""

    spec: TaskSpec
    users: list[UserRecord]
    sources: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.users)

    def user_ids(self) -> list[str]:
        return [u.user_id for u in self.users]

    def user(self, user_id: str) -> UserRecord:
        for u in self.users:
            if u.user_id == user_id:
                return u
        raise DatasetError(f"no user {user_id!r} in task {self.spec.name!r}")

    def num_queries(self) -> int:
        return sum(len(u.queries) for u in self.users)

    def subset(self, user_ids: Iterable[str]) -> TaskDataset:
        """The same task restricted to ``user_ids`` (kept in this dataset's order)."""
        wanted = set(user_ids)
        unknown = wanted - set(self.user_ids())
        if unknown:
            raise DatasetError(
                f"{len(unknown)} user id(s) not in task {self.spec.name!r}, "
                f"e.g. {sorted(unknown)[0]!r}: build splits from this dataset's user_ids()"
            )
        return replace(self, users=[u for u in self.users if u.user_id in wanted])


@dataclass(frozen=True)
class ConvertSettings:
    """How a converter turns a corpus into users and queries.

    Fields:
        max_queries:  at most this many held-out queries per user; a user keeps at least half of
                      their items as history, so short histories get fewer queries.
        min_items:    keep users with at least this many items; None = the corpus's documented
                      threshold (MovieLens 20 ratings, plays/The Office 20 speeches, fortunes 5).
        max_history:  keep only the most recent (or, unordered, first) N history items; None = all.
        max_users:    keep a seeded random sample of at most N users; None = all.
        seed:         seeds every random choice (user sample, fortunes' query choice).
    """

    max_queries: int = 3
    min_items: int | None = None
    max_history: int | None = None
    max_users: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.max_queries, int) or self.max_queries < 1:
            raise ConfigError(f"max_queries must be an integer >= 1, got {self.max_queries!r}")
        for name in ("min_items", "max_history", "max_users"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be None or an integer >= 1, got {value!r}")
        if not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")

    def threshold(self, default: int) -> int:
        return self.min_items if self.min_items is not None else default


def query_count(n_items: int, n_eligible: int, max_queries: int) -> int:
    """Queries for a user with ``n_items`` items, ``n_eligible`` of which can be queries."""
    return max(0, min(max_queries, n_eligible, n_items // 2))


def trim_history(items: list[HistoryItem], max_history: int | None) -> list[HistoryItem]:
    """Keep the last ``max_history`` items (the most recent, as history is oldest first)."""
    if max_history is None or len(items) <= max_history:
        return items
    return items[-max_history:]


def safe_id(*parts: str) -> str:
    """An id made of ``parts`` that is also a valid p2p-local user name (<= 64 safe chars)."""
    text = ".".join(_ID_CHARS.sub("_", p.strip()).strip("._-") or "x" for p in parts)
    return text[:64].rstrip("._-")


def unique_ids(names: Sequence[str], prefix: str) -> dict[str, str]:
    """Map each name to ``safe_id(prefix, name)``, adding ``-2``, ``-3`` on collisions."""
    out: dict[str, str] = {}
    seen: set[str] = set()
    for name in names:
        base = safe_id(prefix, name)
        candidate, k = base, 1
        while candidate in seen:
            k += 1
            suffix = f"-{k}"
            candidate = base[: 64 - len(suffix)] + suffix
        seen.add(candidate)
        out[name] = candidate
    return out


def pair_text(input_text: str, output_text: str) -> str:
    """The ``text`` of an input/output history item: both sides, prompt first."""
    return f"{input_text.strip()}\n\n{output_text.strip()}"


def sample_users(users: list[UserRecord], settings: ConvertSettings) -> list[UserRecord]:
    """Apply ``max_users``: a seeded sample, kept in the original order."""
    if settings.max_users is None or len(users) <= settings.max_users:
        return users
    import numpy as np

    rng = np.random.default_rng(settings.seed)
    keep = set(rng.choice(len(users), size=settings.max_users, replace=False).tolist())
    return [u for i, u in enumerate(users) if i in keep]


def validate_dataset(dataset: TaskDataset) -> None:
    """Raise :class:`DatasetError` unless ``dataset`` follows the record conventions above."""
    spec = dataset.spec
    seen_users: set[str] = set()
    seen_queries: set[str] = set()
    for user in dataset.users:
        if not user.user_id or user.user_id in seen_users:
            raise DatasetError(f"task {spec.name!r}: empty or repeated user id {user.user_id!r}")
        seen_users.add(user.user_id)
        if user.task != spec.name:
            raise DatasetError(
                f"user {user.user_id!r} has task {user.task!r}, dataset task is {spec.name!r}"
            )
        history_ids = {h.id for h in user.history if h.id is not None}
        for q in user.queries:
            if not q.id or q.id in seen_queries:
                raise DatasetError(f"task {spec.name!r}: empty or repeated query id {q.id!r}")
            seen_queries.add(q.id)
            if not q.input.strip():
                raise DatasetError(f"query {q.id!r} has an empty input")
            if q.output is not None and not q.output.strip():
                raise DatasetError(f"query {q.id!r} has an empty output")
            if spec.labels and q.output is not None and q.output not in spec.labels:
                raise DatasetError(
                    f"query {q.id!r} output {q.output!r} is not one of the labels of {spec.name!r}"
                )
            if q.meta.get("item_id") is not None and q.meta["item_id"] in history_ids:
                raise DatasetError(
                    f"query {q.id!r} item {q.meta['item_id']!r} is also in the user's history"
                )
