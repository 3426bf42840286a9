"""Scoring model answers: output parsing and the metrics of each task kind.

Owns how a free-text answer becomes a prediction (:func:`parse_rating`, :func:`parse_label`,
:func:`parse_answer`) and the metrics (:func:`score`), chosen by the task kind:

- ``rating``:         MAE and RMSE (plus accuracy) over the numeric ratings;
- ``classification``: accuracy and macro F1 (scikit-learn) over the label set;
- ``generation``:     ROUGE-1 and ROUGE-L F-measure (``rouge-score``, as LaMP reports them).

Parsing is lenient but never guesses: a rating is the first number in the answer that is one
of the task's labels (``"I'd say 4/5"`` -> ``4``; a spelled-out ``"four"`` counts too); a label
is the answer itself when it equals a label (case and surrounding punctuation ignored), else
the label that occurs first in the answer. An answer with no rating or label is *unparsable*:
it is counted and reported, and scored as wrong (accuracy, F1) or as the worst possible rating
(the label farthest from the gold one, for MAE / RMSE). An empty generation scores ROUGE 0 and
is counted the same way. Also owns :func:`best_constant`, the most common training answer,
the floor any personalized method has to beat on rating and classification tasks.
Does not own generating the answers (harness.py) or the task records (datasets/).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from p2p_local.errors import ConfigError, EvaluationError

KINDS = ("rating", "classification", "generation")
METRICS: dict[str, tuple[str, ...]] = {
    "rating": ("mae", "rmse", "accuracy"),
    "classification": ("accuracy", "f1"),
    "generation": ("rouge1", "rougeL"),
}
# True where a larger value is better (the table marks the best method per metric).
HIGHER_IS_BETTER = {"mae": False, "rmse": False, "accuracy": True, "f1": True,
                    "rouge1": True, "rougeL": True}
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)?")
_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
          "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_WORD = re.compile(r"\b(" + "|".join(_WORDS) + r")\b", re.IGNORECASE)
_STRIP = " \t\r\n\"'`.,;:!?()[]{}<>*_"


# --- parsing --------------------------------------------------------------------------------


def _rating_values(labels: Sequence[str]) -> dict[float, str]:
    values: dict[float, str] = {}
    for label in labels:
        try:
            values[float(label)] = label
        except ValueError as exc:
            raise ConfigError(f"rating label {label!r} is not a number") from exc
    if not values:
        raise ConfigError("a rating task needs its labels (e.g. '1'..'5') to parse answers")
    return values


def parse_rating(text: str, labels: Sequence[str] = ("1", "2", "3", "4", "5")) -> str | None:
    """The first number in ``text`` that is one of ``labels`` (as the label), else None.

    Digits are read before number words; ``"4.0"`` counts as ``4`` but ``"3.5"`` as no rating
    (it is no label). ``"4/5"`` and ``"Rating: 4 stars"`` give ``"4"``.
    """
    values = _rating_values(labels)
    for match in _NUMBER.finditer(text):
        try:
            value = float(match.group().replace(",", "."))
        except ValueError:
            continue
        if value in values:
            return values[value]
    for match in _WORD.finditer(text):
        value = float(_WORDS[match.group(1).lower()])
        if value in values:
            return values[value]
    return None


def parse_label(text: str, labels: Sequence[str]) -> str | None:
    """The label ``text`` names: equal to it (ignoring case and punctuation around it), else
    the label found earliest in ``text`` (the longer one when two start at the same place)."""
    if not labels:
        raise ConfigError("a classification task needs its label set to parse answers")
    answer = text.strip().strip(_STRIP).casefold()
    for label in labels:
        if answer == label.strip(_STRIP).casefold():
            return label
    lowered = text.casefold()
    best: tuple[int, int, str] | None = None
    for label in labels:
        needle = label.casefold().strip()
        if not needle:
            continue
        pattern = re.escape(needle)
        if needle[0].isalnum():
            pattern = r"(?<!\w)" + pattern
        if needle[-1].isalnum():
            pattern += r"(?!\w)"
        hit = re.search(pattern, lowered)
        if hit is not None:
            key = (hit.start(), -len(needle), label)
            if best is None or key < best:
                best = key
    return best[2] if best is not None else None


def parse_answer(text: str, kind: str, labels: Sequence[str] = ()) -> str | None:
    """The prediction in ``text`` for a task of ``kind`` (None when unparsable).

    Generation answers are stripped; an empty one is None."""
    if kind == "rating":
        return parse_rating(text, labels or ("1", "2", "3", "4", "5"))
    if kind == "classification":
        return parse_label(text, labels)
    if kind == "generation":
        out = text.strip()
        return out or None
    raise ConfigError(f"task kind must be one of {', '.join(KINDS)}, got {kind!r}")


# --- metrics --------------------------------------------------------------------------------


def mae(predictions: Sequence[float], golds: Sequence[float]) -> float:
    """Mean absolute error."""
    _same_length(predictions, golds)
    return sum(abs(p - g) for p, g in zip(predictions, golds, strict=True)) / len(golds)


def rmse(predictions: Sequence[float], golds: Sequence[float]) -> float:
    """Root mean squared error."""
    _same_length(predictions, golds)
    return math.sqrt(
        sum((p - g) ** 2 for p, g in zip(predictions, golds, strict=True)) / len(golds)
    )


def accuracy(predictions: Sequence[str | None], golds: Sequence[str]) -> float:
    """Share of exact matches (None never matches)."""
    _same_length(predictions, golds)
    return sum(p == g for p, g in zip(predictions, golds, strict=True)) / len(golds)


def macro_f1(predictions: Sequence[str | None], golds: Sequence[str],
             labels: Sequence[str] = ()) -> float:
    """Macro-averaged F1 (scikit-learn) over the labels that occur in ``golds`` or in the
    parsed ``predictions`` (``labels`` only fixes their order); unparsable answers (None) count
    as wrong and belong to no label."""
    from sklearn.metrics import f1_score

    _same_length(predictions, golds)
    present = set(golds) | {p for p in predictions if p is not None}
    order = [lab for lab in labels if lab in present] + sorted(present - set(labels))
    missing = "\0unparsable"
    preds = [p if p is not None else missing for p in predictions]
    return float(f1_score(list(golds), preds, labels=order, average="macro", zero_division=0))


def rouge(predictions: Sequence[str | None], golds: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1 and ROUGE-L F-measure (``rouge-score``, no stemming, as LaMP reports
    them); None or empty predictions score 0."""
    from rouge_score import rouge_scorer

    _same_length(predictions, golds)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    r1 = rl = 0.0
    for p, g in zip(predictions, golds, strict=True):
        if not p:
            continue
        s = scorer.score(g, p)  # rouge-score takes (target, prediction)
        r1 += s["rouge1"].fmeasure
        rl += s["rougeL"].fmeasure
    return {"rouge1": r1 / len(golds), "rougeL": rl / len(golds)}


def _same_length(predictions: Sequence[Any], golds: Sequence[Any]) -> None:
    if len(predictions) != len(golds):
        raise EvaluationError(
            f"{len(predictions)} predictions for {len(golds)} gold answers: score them in pairs"
        )
    if not golds:
        raise EvaluationError("nothing to score: no queries with a gold answer")


@dataclass(frozen=True)
class Scores:
    """The metrics of one method on one task.

    metrics:    metric name -> value (the names in :data:`METRICS` for the task kind).
    n:          queries scored.
    unparsable: answers with no usable prediction (scored as wrong / worst).
    """

    metrics: dict[str, float]
    n: int
    unparsable: int
    kind: str = "generation"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics, "n": self.n, "unparsable": self.unparsable, **self.extra}


def score(
    kind: str,
    predictions: Sequence[str | None],
    golds: Sequence[str],
    labels: Sequence[str] = (),
) -> Scores:
    """The metrics of ``kind`` for parsed ``predictions`` (None = unparsable) against ``golds``.

    Rating: an unparsable answer counts as the label farthest from the gold rating.
    """
    if kind not in KINDS:
        raise ConfigError(f"task kind must be one of {', '.join(KINDS)}, got {kind!r}")
    _same_length(predictions, golds)
    bad = sum(1 for p in predictions if p is None)
    if kind == "rating":
        values = _rating_values(labels or ("1", "2", "3", "4", "5"))
        gold_v = [_as_rating(g) for g in golds]
        pred_v = []
        for p, g in zip(predictions, gold_v, strict=True):
            if p is None:  # worst case: the rating farthest from the gold one
                pred_v.append(max(values, key=lambda v: (abs(v - g), v)))
            else:
                pred_v.append(_as_rating(p))
        metrics = {
            "mae": mae(pred_v, gold_v),
            "rmse": rmse(pred_v, gold_v),
            "accuracy": accuracy([None if p is None else _canon(p) for p in predictions],
                                 [_canon(g) for g in golds]),
        }
    elif kind == "classification":
        metrics = {"accuracy": accuracy(predictions, golds),
                   "f1": macro_f1(predictions, golds, labels)}
    else:
        metrics = rouge(predictions, golds)
    return Scores(metrics=metrics, n=len(golds), unparsable=bad, kind=kind)


def _as_rating(value: str) -> float:
    try:
        return float(value)
    except ValueError as exc:
        raise EvaluationError(f"gold or parsed rating {value!r} is not a number") from exc


def _canon(value: str) -> str:
    return f"{float(value):g}"


@dataclass(frozen=True)
class Constant:
    """The best constant answer: the most common training answer and its scores
    (``query_scores``: each query's main-metric score, when the harness recorded them)."""

    answer: str
    counts: dict[str, int]
    scores: Scores
    query_scores: tuple[float, ...] = ()


def best_constant(
    kind: str,
    train_answers: Sequence[str],
    golds: Sequence[str],
    labels: Sequence[str] = (),
) -> Constant | None:
    """Always answering the most common of ``train_answers`` (ties: the smaller label), scored
    on ``golds``; None for generation tasks or without training answers."""
    if kind == "generation":
        return None
    parsed = [parse_answer(a, kind, labels) for a in train_answers]
    counts = Counter(p for p in parsed if p is not None)
    if not counts:
        return None
    order = {lab: i for i, lab in enumerate(labels)}
    answer = min(counts, key=lambda a: (-counts[a], order.get(a, len(order)), a))
    result = score(kind, [answer] * len(golds), golds, labels)
    return Constant(answer, dict(sorted(counts.items())), result)
