"""Real public corpora as personalization tasks, plus LaMP / LongLaMP files.

Owns the task registry: :data:`TASKS` maps a task name to its spec, the packages it comes from
and its loader; :func:`load_task` fetches (once, into the cache) and converts. Every task yields
the same records (:mod:`p2p_local.datasets.base`); LaMP files are read and written by
:mod:`p2p_local.datasets.lamp`. Nothing here is imported by the personalization path.

    >>> from p2p_local.datasets import load_task
    >>> ds = load_task("movielens", max_queries=2)
    >>> len(ds), ds.users[0].queries[0].output
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2p_local.datasets import fortunes, movielens, office, shakespeare
from p2p_local.datasets.base import (
    ConvertSettings,
    Query,
    TaskDataset,
    TaskSpec,
    UserRecord,
    validate_dataset,
)
from p2p_local.datasets.fetch import PackageSource
from p2p_local.errors import ConfigError

__all__ = [
    "TASKS",
    "ConvertSettings",
    "Query",
    "TaskDataset",
    "TaskEntry",
    "TaskSpec",
    "UserRecord",
    "load_task",
    "validate_dataset",
]


@dataclass(frozen=True)
class TaskEntry:
    """A registered task: what it asks, where its data comes from, how to load it."""

    spec: TaskSpec
    sources: tuple[PackageSource, ...]
    loader: Callable[..., TaskDataset]

    @property
    def name(self) -> str:
        return self.spec.name


TASKS: dict[str, TaskEntry] = {
    m.NAME: TaskEntry(m.SPEC, m.SOURCES, m.load)
    for m in (movielens, shakespeare, office, fortunes)
}


def load_task(
    name: str,
    settings: ConvertSettings | None = None,
    *,
    root: Path | None = None,
    **overrides: Any,
) -> TaskDataset:
    """Fetch (first time only) and convert task ``name``.

    ``overrides`` set :class:`ConvertSettings` fields (``max_queries=2``, ``seed=1``, ...);
    ``root`` replaces ``cache_dir()/datasets`` as the package cache.
    """
    entry = TASKS.get(name)
    if entry is None:
        raise ConfigError(f"unknown task {name!r}: choose one of {', '.join(sorted(TASKS))}")
    if overrides:
        base = settings or ConvertSettings()
        fields = set(ConvertSettings.__dataclass_fields__)
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(unknown)}: use {', '.join(sorted(fields))}"
            )
        settings = ConvertSettings(**{**base.__dict__, **overrides})
    return entry.loader(settings, root=root)
