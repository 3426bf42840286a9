"""History statistics: counts, ratings and labels, as data and as a profile section.

Owns :func:`compute_statistics` (items with a ``score`` or a ``label``) and its rendering as the
``## User History Statistics`` section. Statistics cost nothing to compute and help a lot on rating
and tagging tasks; a history with neither scores nor labels has no statistics (``None``).

The section opens with the user's rating habit in words ("a generous rater ..."): a sentence
embedder barely tells "mean rating 3.1" from "mean rating 4.3", but it does tell a harsh rater
from a generous one, and that is what lets the hypernetwork shift a user's ratings.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from p2p_local.store.records import HistoryItem

TOP_LABELS = 5  # labels shown in the section
MAX_EXACT_VALUES = 10  # more distinct scores than this are binned
# Rating habits by where the mean falls on the scale (0 = lowest, 1 = highest), highest first.
HABITS = (
    (0.8, "a very generous rater who likes almost everything they rate"),
    (0.7, "a generous rater who likes most of what they rate"),
    (0.6, "a moderate rater"),
    (0.5, "a critical rater"),
    (0.0, "a harsh rater who dislikes most of what they rate"),
)


def rating_scale(scores: Sequence[float]) -> tuple[float, float]:
    """The scale the scores are on: 1-5 or 1-10 stars, 0-1, 0-100, else their own range."""
    low, high = min(scores), max(scores)
    for lo, hi in ((1.0, 5.0), (1.0, 10.0), (0.0, 1.0), (0.0, 5.0), (0.0, 10.0), (0.0, 100.0)):
        if lo <= low and high <= hi:
            return lo, hi
    return low, high


def rating_habit(mean: float, scale: tuple[float, float]) -> str:
    """The habit of a rater whose mean score is ``mean`` on ``scale``, in words."""
    lo, hi = scale
    position = (mean - lo) / (hi - lo) if hi > lo else 0.5
    return next(words for bound, words in HABITS if position >= bound)


@dataclass(frozen=True)
class HistoryStatistics:
    """What the labelled and scored items say.

    items:        all items in the history.
    rated:        items with a score.
    mean_rating:  mean score of the rated items (None when none is rated).
    rating_distribution: score (or score range) -> count, in ascending order of score.
    scale:        (lowest, highest) score of the scale the ratings are on (see rating_scale).
    labelled:     items with a label.
    top_labels:   the most frequent labels with their counts, most frequent first.
    """

    items: int
    rated: int
    mean_rating: float | None
    rating_distribution: dict[str, int]
    labelled: int
    top_labels: list[tuple[str, int]]
    scale: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "items": self.items,
            "rated": self.rated,
            "mean_rating": self.mean_rating,
            "rating_distribution": dict(self.rating_distribution),
            "labelled": self.labelled,
            "top_labels": [{"label": label, "count": n} for label, n in self.top_labels],
            "scale": list(self.scale) if self.scale else None,
        }

    def render(self) -> str:
        """The section body: a few plain sentences (without the ``##`` heading)."""
        parts: list[str] = []
        if self.rated and self.mean_rating is not None:
            if self.scale is not None:
                mode = max(self.rating_distribution.items(), key=lambda kv: kv[1])[0]
                lo, hi = (_format_value(v) for v in self.scale)
                parts.append(
                    f"This user is {rating_habit(self.mean_rating, self.scale)}; "
                    f"their most common rating is {mode} on a {lo} to {hi} scale."
                )
            dist = ", ".join(
                f"{value}: {round(100 * n / self.rated)}%"
                for value, n in self.rating_distribution.items()
            )
            parts.append(
                f"{self.rated} of {self.items} items rated, mean rating {self.mean_rating:.2f} "
                f"({dist})."
            )
        if self.labelled:
            labels = ", ".join(f"{label} ({n})" for label, n in self.top_labels)
            parts.append(
                f"{self.labelled} of {self.items} items labelled; most frequent: {labels}."
            )
        return " ".join(parts)


def _format_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _distribution(scores: list[float]) -> dict[str, int]:
    distinct = sorted(set(scores))
    if len(distinct) <= MAX_EXACT_VALUES:
        counts = Counter(scores)
        return {_format_value(v): counts[v] for v in distinct}
    # Continuous scores: five equal-width bins over the observed range.
    low, high = distinct[0], distinct[-1]
    width = (high - low) / 5
    bins = [0] * 5
    for s in scores:
        bins[min(4, math.floor((s - low) / width))] += 1
    return {
        f"{low + i * width:.3g}-{low + (i + 1) * width:.3g}": n for i, n in enumerate(bins) if n
    }


def compute_statistics(items: Sequence[HistoryItem]) -> HistoryStatistics | None:
    """Statistics of ``items``, or ``None`` when no item carries a score or a label."""
    scores = [float(it.score) for it in items if it.score is not None]
    labels = [it.label.strip() for it in items if it.label is not None and it.label.strip()]
    if not scores and not labels:
        return None
    counts = Counter(labels)
    # Most frequent first; equal counts in alphabetical order, so the output is stable.
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_LABELS]
    return HistoryStatistics(
        items=len(items),
        rated=len(scores),
        mean_rating=(sum(scores) / len(scores)) if scores else None,
        rating_distribution=_distribution(scores) if scores else {},
        labelled=len(labels),
        top_labels=top,
        scale=rating_scale(scores) if scores else None,
    )
