"""Which users train, validate and test.

Owns :class:`SplitSettings`, :class:`Split` and the two ways to split users:

- :func:`random_split`: users held out at random (seeded), in-distribution;
- :func:`ood_split`: out-of-distribution users, as in the P2P paper's appendix: k-means over
  the users' profile embeddings, then whole clusters that are small and far from the others go
  to test until the test fraction is reached, so no test user's cluster has a training user.
  Validation users are drawn at random from the remaining (training-side) clusters.

Both are deterministic: the same user ids (in any order), embeddings and settings give the same
split. Embeddings are an input (``[n_users, dim]``, e.g. from ``p2p_local.embedding``); nothing
here computes them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from p2p_local.errors import ConfigError, DatasetError

SPLIT_KINDS = ("random", "ood")


@dataclass(frozen=True)
class SplitSettings:
    """Fractions of users held out, the seed and (OOD) the number of k-means clusters.

    Fields:
        val_fraction:  share of users in validation (random, from the training side).
        test_fraction: share of users in test; OOD reaches it with whole clusters, so the
                       actual share can differ by up to a quarter of the target.
        seed:          seeds the shuffles and k-means.
        n_clusters:    OOD only; None = round(sqrt(n_users)), at least 2.
    """

    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    n_clusters: int | None = None

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                f"val_fraction + test_fraction must be < 1 to leave training users, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        if not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if self.n_clusters is not None and (
            not isinstance(self.n_clusters, int) or self.n_clusters < 2
        ):
            raise ConfigError(
                f"n_clusters must be None or an integer >= 2, got {self.n_clusters!r}"
            )


@dataclass(frozen=True)
class Split:
    """A partition of users. ``clusters`` maps every user to its k-means cluster (OOD only)."""

    kind: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    seed: int
    clusters: dict[str, int] = field(default_factory=dict)
    test_clusters: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in SPLIT_KINDS:
            raise ConfigError(f"Split.kind must be random or ood, got {self.kind!r}")
        parts = (set(self.train), set(self.val), set(self.test))
        if sum(map(len, parts)) != len(set().union(*parts)):
            raise DatasetError("a split's train, val and test users must be disjoint")

    def part_of(self, user_id: str) -> str:
        """``"train"``, ``"val"`` or ``"test"``."""
        for name in ("train", "val", "test"):
            if user_id in getattr(self, name):
                return name
        raise DatasetError(f"user {user_id!r} is in no part of this split")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (cluster keys stay user ids)."""
        return {
            "kind": self.kind,
            "seed": self.seed,
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
            "clusters": dict(self.clusters),
            "test_clusters": list(self.test_clusters),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Split:
        return cls(
            kind=data["kind"],
            train=tuple(data["train"]),
            val=tuple(data["val"]),
            test=tuple(data["test"]),
            seed=int(data["seed"]),
            clusters={str(k): int(v) for k, v in data.get("clusters", {}).items()},
            test_clusters=tuple(int(c) for c in data.get("test_clusters", ())),
        )


def read_split(path: str | Path) -> Split:
    """A split saved as ``Split.to_dict()`` JSON (e.g. a training data folder's ``splits/``)."""
    try:
        return Split.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"cannot read split file {path}: {exc}") from exc


def _unique_sorted(user_ids: Sequence[str]) -> list[str]:
    ids = [str(u) for u in user_ids]
    if len(set(ids)) != len(ids):
        raise DatasetError("user ids must be unique to split them")
    if len(ids) < 2:
        raise DatasetError(f"need at least 2 users to split, got {len(ids)}")
    return sorted(ids)


def _count(fraction: float, n: int) -> int:
    return int(round(fraction * n)) if fraction > 0 else 0


def random_split(user_ids: Sequence[str], settings: SplitSettings | None = None) -> Split:
    """Hold out users at random: ``test_fraction`` to test, ``val_fraction`` to validation."""
    s = settings or SplitSettings()
    ids = _unique_sorted(user_ids)
    n = len(ids)
    n_test, n_val = _count(s.test_fraction, n), _count(s.val_fraction, n)
    if n_test + n_val >= n:
        raise DatasetError(f"{n} users are too few for these fractions: none would train")
    order = np.random.default_rng(s.seed).permutation(n)
    shuffled = [ids[i] for i in order]
    return Split(
        kind="random",
        test=tuple(sorted(shuffled[:n_test])),
        val=tuple(sorted(shuffled[n_test : n_test + n_val])),
        train=tuple(sorted(shuffled[n_test + n_val :])),
        seed=s.seed,
    )


@dataclass(frozen=True)
class ClusterInfo:
    """One k-means cluster: its size and its centroid's distance to the nearest other one."""

    cluster: int
    size: int
    isolation: float

    def score(self, mean_size: float) -> float:
        """Higher = smaller and more isolated = earlier into test."""
        return self.isolation / math.sqrt(self.size / mean_size)


def cluster_users(embeddings: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means labels (scikit-learn, ``n_init=10``) of each row of ``embeddings``."""
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)
    return model.fit_predict(embeddings).astype(int)


def rank_clusters(embeddings: np.ndarray, labels: np.ndarray) -> list[ClusterInfo]:
    """Clusters ordered for the test set: by :meth:`ClusterInfo.score`, best first."""
    ids = sorted(set(labels.tolist()))
    centroids = np.stack([embeddings[labels == c].mean(axis=0) for c in ids])
    dist = np.linalg.norm(centroids[:, None, :] - centroids[None, :, :], axis=-1)
    np.fill_diagonal(dist, np.inf)
    infos = [
        ClusterInfo(c, int((labels == c).sum()), float(dist[i].min())) for i, c in enumerate(ids)
    ]
    mean_size = len(labels) / len(ids)
    return sorted(infos, key=lambda ci: (-ci.score(mean_size), ci.size, ci.cluster))


def ood_split(
    user_ids: Sequence[str],
    embeddings: np.ndarray,
    settings: SplitSettings | None = None,
) -> Split:
    """Out-of-distribution split over profile embeddings (row i belongs to ``user_ids[i]``).

    Clusters are taken whole, in :func:`rank_clusters` order, while they fit into the test target
    (``round(test_fraction * n)``, with a quarter of it, at least one user, as slack) until the
    target is reached; if no cluster fits, the smallest one is the test set. Validation users are
    a seeded random sample of the other users.
    """
    s = settings or SplitSettings()
    ids_in = [str(u) for u in user_ids]
    ids = _unique_sorted(ids_in)
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(ids):
        raise DatasetError(
            f"embeddings must have shape [n_users, dim] = [{len(ids)}, dim], got {list(x.shape)}"
        )
    if not np.isfinite(x).all():
        raise DatasetError("embeddings contain NaN or infinite values")
    row = {u: i for i, u in enumerate(ids_in)}
    x = x[[row[u] for u in ids]]  # rows in sorted-id order: input order does not matter
    n = len(ids)
    k = s.n_clusters if s.n_clusters is not None else max(2, round(math.sqrt(n)))
    if k > n:
        raise ConfigError(f"n_clusters={k} is more than the {n} users")
    labels = cluster_users(x, k, s.seed)

    target = _count(s.test_fraction, n)
    slack = max(1, target // 4)
    test_clusters: list[int] = []
    size = 0
    ranked = rank_clusters(x, labels) if target else []
    for info in ranked:
        if size >= target:
            break
        if size + info.size <= target + slack and n - size - info.size > 0:
            test_clusters.append(info.cluster)
            size += info.size
    if target and not test_clusters:
        smallest = min(ranked, key=lambda ci: (ci.size, -ci.score(n / k), ci.cluster))
        test_clusters.append(smallest.cluster)

    cluster_of = dict(zip(ids, labels.tolist(), strict=True))
    in_test = set(test_clusters)
    test = [u for u in ids if cluster_of[u] in in_test]
    rest = [u for u in ids if cluster_of[u] not in in_test]
    n_val = _count(s.val_fraction, n)
    if n_val >= len(rest):
        raise DatasetError(f"{n} users are too few for these fractions: none would train")
    order = np.random.default_rng(s.seed).permutation(len(rest))
    val = sorted(rest[i] for i in order[:n_val])
    train = sorted(rest[i] for i in order[n_val:])
    return Split(
        kind="ood",
        train=tuple(train),
        val=tuple(val),
        test=tuple(sorted(test)),
        seed=s.seed,
        clusters={u: int(c) for u, c in cluster_of.items()},
        test_clusters=tuple(sorted(test_clusters)),
    )
