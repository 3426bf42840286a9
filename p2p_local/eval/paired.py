"""Paired per-user comparison of two methods' answers: is a quality difference real?

Owns :func:`paired_by_user`: both methods' answers to the same queries, scored per user with the
task's main metric (:data:`MAIN_METRIC`), the mean per-user difference and its bootstrap
interval over users; :func:`paired_over_runs` does the same for two recipes given as several
runs each (a user's score averaged over the runs). Every main metric is a mean over queries,
so an answer may also come as its score alone (:func:`query_scores`, what a results file keeps
per query). Does not own producing or caching the answers (harness.py) or the metrics
themselves (metrics.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from p2p_local.errors import EvaluationError
from p2p_local.eval.metrics import accuracy, score

# task kind -> (main metric, higher is better)
MAIN_METRIC: dict[str, tuple[str, bool]] = {
    "rating": ("mae", False), "generation": ("rouge1", True), "classification": ("accuracy", True),
}

# an answer-cache record (query_id, user_id, prediction, gold), or query_id, user_id and the
# answer's main-metric score
Answer = Mapping[str, Any]


@dataclass(frozen=True)
class PairedResult:
    """A minus B over users. ``ci95``: 2.5 and 97.5 percentiles of the bootstrap means."""

    metric: str
    higher_is_better: bool
    users: int
    queries: int
    mean_difference: float
    ci95: tuple[float, float]
    users_a_better: int
    users_a_worse: int
    users_equal: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def query_scores(kind: str, predictions: Sequence[str | None], golds: Sequence[str],
                 labels: Sequence[str] = ()) -> list[float]:
    """Each answer's main metric alone (MAE: its absolute error; ROUGE-1: its F-measure;
    accuracy: 1 or 0), scored as :func:`p2p_local.eval.metrics.score` scores it; their mean
    over any set of queries is that set's main metric."""
    if kind not in MAIN_METRIC:
        raise EvaluationError(f"task kind must be one of {', '.join(MAIN_METRIC)}, got {kind!r}")
    return [_main_metric(kind, [p], [g], labels)
            for p, g in zip(predictions, golds, strict=True)]


def scored_answers(queries: Iterable[tuple[str, str]], scores: Iterable[float]
                   ) -> dict[str, Answer]:
    """Answers given as scores alone, keyed by query id, from (user id, query id) pairs and
    their scores in the same order."""
    return {q: {"query_id": q, "user_id": u, "score": float(v)}
            for (u, q), v in zip(queries, scores, strict=True)}


def _main_metric(kind: str, predictions: Sequence[str | None], golds: Sequence[str],
                 labels: Sequence[str] = ()) -> float:
    if kind == "classification":  # macro F1 needs the label set; accuracy does not
        return accuracy(predictions, golds)
    return float(score(kind, predictions, golds, labels).metrics[MAIN_METRIC[kind][0]])


def user_score(kind: str, answers: Sequence[Answer]) -> float:
    """One user's main metric over their answers (an unparsable answer is scored as by
    :func:`p2p_local.eval.metrics.score`; answers given as scores are averaged)."""
    if all("score" in a for a in answers):
        return float(np.mean([float(a["score"]) for a in answers]))
    return _main_metric(kind, [a["prediction"] for a in answers],
                        [str(a["gold"]) for a in answers])


def paired_by_user(kind: str, a: Mapping[str, Answer], b: Mapping[str, Answer], *,
                   resamples: int = 10000, seed: int = 0) -> PairedResult:
    """Compare methods A and B (answers keyed by query id) on the queries both answered."""
    return paired_over_runs(kind, [a], [b], resamples=resamples, seed=seed)


def paired_over_runs(kind: str, a_runs: Sequence[Mapping[str, Answer]],
                     b_runs: Sequence[Mapping[str, Answer]], *, resamples: int = 10000,
                     seed: int = 0) -> PairedResult:
    """Compare A and B when each is several runs (e.g. one recipe trained with several seeds):
    a user's score is the mean of their per-run scores, on the queries every run answered."""
    if kind not in MAIN_METRIC:
        raise EvaluationError(f"task kind must be one of {', '.join(MAIN_METRIC)}, got {kind!r}")
    if not a_runs or not b_runs:
        raise EvaluationError("each side needs the answers of at least one run")
    runs = [*a_runs, *b_runs]
    shared = set(runs[0]).intersection(*runs[1:])
    by_user: dict[str, list[str]] = defaultdict(list)
    for qid in sorted(shared):
        by_user[str(runs[0][qid]["user_id"])].append(qid)
    if len(by_user) < 2:
        raise EvaluationError("fewer than 2 users answered by both methods: nothing to compare")
    users = sorted(by_user)

    def mean_score(side: Sequence[Mapping[str, Answer]], user: str) -> float:
        return float(np.mean([user_score(kind, [run[q] for q in by_user[user]]) for run in side]))

    diff = np.array([mean_score(a_runs, u) - mean_score(b_runs, u) for u in users])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    metric, higher_better = MAIN_METRIC[kind]
    ahead = diff > 0 if higher_better else diff < 0
    behind = diff < 0 if higher_better else diff > 0
    return PairedResult(
        metric=metric, higher_is_better=higher_better, users=len(users),
        queries=len(shared),
        mean_difference=float(diff.mean()), ci95=(float(low), float(high)),
        users_a_better=int(ahead.sum()), users_a_worse=int(behind.sum()),
        users_equal=int(len(users) - ahead.sum() - behind.sum()),
    )
