"""The evaluation's Markdown tables, laid out like the P2P paper's Tables 1-2.

Owns :func:`markdown_table` (one task: a row per method with the task's metrics, the unparsable
answers, the average per-instance inference time and the per-user preparation time; the best
value of each metric among the methods in bold; the best constant answer as a reference row;
below it, :func:`paired_lines`: P2P minus every other method per user, with bootstrap intervals)
and :func:`combined_table` (several tasks side by side, one column group per task, as the
paper's tables put LaMP tasks). Reads results only; does not run anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from p2p_local.eval.metrics import HIGHER_IS_BETTER, METRICS
from p2p_local.eval.paired import MAIN_METRIC, paired_over_runs, scored_answers

if TYPE_CHECKING:
    from p2p_local.eval.harness import EvalReport

LABELS = {"mae": "MAE", "rmse": "RMSE", "accuracy": "Acc", "f1": "F1",
          "rouge1": "ROUGE-1", "rougeL": "ROUGE-L"}
# the method the per-user comparisons start from: the first of these the report has
PAIRED_REFERENCES = ("p2p", "p2p-per-query")


def _arrow(metric: str) -> str:
    return "↑" if HIGHER_IS_BETTER[metric] else "↓"


def _best(values: dict[str, float], metric: str) -> float | None:
    if not values:
        return None
    pick = max if HIGHER_IS_BETTER[metric] else min
    return pick(values.values())


def _fmt(value: float | None, best: float | None = None) -> str:
    if value is None:
        return "-"
    text = f"{value:.4f}"
    return f"**{text}**" if best is not None and abs(value - best) < 1e-12 else text


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def markdown_table(report: EvalReport) -> str:
    """The table of one evaluation, with a heading that names the task, split and sizes."""
    metrics = METRICS[report.kind]
    settings = report.meta.get("settings", {})
    method_settings = settings.get("method", {})
    who = "validation users" if settings.get("held_out") == "val" else "held-out users"
    lines = [
        f"### {report.task} ({report.kind}), {report.split} split: "
        f"{report.n_users} {who}, {report.n_queries} queries",
        "",
        "| method | " + " | ".join(f"{LABELS[m]} {_arrow(m)}" for m in metrics)
        + " | unparsable | s / query | setup s / user |",
        "|---|" + "---:|" * (len(metrics) + 3),
    ]
    best = {m: _best({n: r.scores.metrics[m] for n, r in report.results.items()}, m)
            for m in metrics}
    for name, r in report.results.items():
        cells = [_fmt(r.scores.metrics[m], best[m]) for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {r.scores.unparsable}/{r.scores.n} | {_seconds(r.seconds_per_query)}"
                     f" | {_seconds(r.setup_seconds_per_user)} |")
    c = report.best_constant
    if c is not None:
        cells = [_fmt(c.scores.metrics[m]) for m in metrics]
        lines.append(f"| best constant (\"{c.answer}\") | " + " | ".join(cells) + " | - | - | - |")
    meta = report.meta
    penalty = method_settings.get("repeat_penalty", 1.0)
    decoding = "greedy decoding" + (f" with repeat penalty {penalty:g}" if penalty != 1.0 else "")
    notes = [
        "",
        f"Base model {meta.get('model', '?')} on {meta.get('backend', '?')}, {decoding}; "
        f"{meta.get('hardware', '')}.",
    ]
    if "checkpoint" in meta:
        scale = method_settings.get("adapter_scale", 1.0)
        scaled = f", its updates scaled by {scale:g}" if scale != 1.0 else ""
        notes.append(f"Hypernetwork checkpoint {meta['checkpoint']['id']}{scaled}.")
    if meta.get("summary_seconds_per_user") is not None:
        notes.append(f"LLM summaries (PAG, P2P profiles): "
                     f"{meta['summary_seconds_per_user']:.1f} s per user, not in the times above.")
    notes.append("s / query: average per-instance inference time (profile / retrieval / adapter "
                 "work for the query + generation); setup s / user: per-user preparation "
                 "(P2P adapter generation, OPPU training).")
    return "\n".join(lines + notes + paired_lines(report)) + "\n"


def paired_lines(report: EvalReport, *, resamples: int = 10000, seed: int = 0) -> list[str]:
    """Is a difference real? P2P (or the per-query adapter) minus every other method and the
    best constant, each user scored alone with the task's main metric: the mean difference
    over users, its 95% bootstrap interval (bold where it clears zero) and how many users come
    out ahead. Empty without per-query scores, a P2P method or two users."""
    reference = next((m for m in PAIRED_REFERENCES if m in report.results), None)
    if reference is None or len({u for u, _ in report.queries}) < 2:
        return []
    runs = {name: r.query_scores for name, r in report.results.items()}
    if report.best_constant is not None:
        runs["best constant"] = report.best_constant.query_scores
    runs = {n: v for n, v in runs.items() if len(v) == len(report.queries)}
    if reference not in runs or len(runs) < 2:
        return []

    metric, higher = MAIN_METRIC[report.kind]
    mine = scored_answers(report.queries, runs[reference])
    lines = [
        "",
        f"Per user, {reference} minus each method ({LABELS.get(metric, metric)} of each user's "
        f"queries; {'positive' if higher else 'negative'} favours {reference}; 95% bootstrap "
        "interval over users, bold where it clears zero):",
        "",
        f"| {reference} minus | difference | 95% interval | users ahead / behind / level |",
        "|---|---:|---|---|",
    ]
    for name, values in runs.items():
        if name == reference:
            continue
        r = paired_over_runs(report.kind, [mine], [scored_answers(report.queries, values)],
                             resamples=resamples, seed=seed)
        low, high = r.ci95
        interval = f"[{low:+.3f}, {high:+.3f}]"
        if low > 0 or high < 0:
            interval = f"**{interval}**"
        lines.append(f"| {name} | {r.mean_difference:+.3f} | {interval} | "
                     f"{r.users_a_better} / {r.users_a_worse} / {r.users_equal} |")
    return lines


def combined_table(reports: Sequence[EvalReport]) -> str:
    """Several tasks side by side: one column group per task, a row per method, plus the
    average per-instance time over the tasks."""
    if not reports:
        return ""
    methods: list[str] = []
    for rep in reports:
        methods += [m for m in rep.results if m not in methods]
    head = ["method"]
    for rep in reports:
        head += [f"{rep.task} {LABELS[m]} {_arrow(m)}" for m in METRICS[rep.kind]]
    head.append("s / query")
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name in methods:
        cells: list[str] = []
        times: list[float] = []
        for rep in reports:
            r = rep.results.get(name)
            for m in METRICS[rep.kind]:
                if r is None:
                    cells.append("-")
                    continue
                values = {n: x.scores.metrics[m] for n, x in rep.results.items()}
                cells.append(_fmt(r.scores.metrics[m], _best(values, m)))
            if r is not None:
                times.append(r.seconds_per_query)
        avg = _seconds(sum(times) / len(times)) if times else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {avg} |")
    splits = sorted({rep.split for rep in reports})
    sizes = ", ".join(f"{rep.task}: {rep.n_users} users / {rep.n_queries} queries"
                      for rep in reports)
    return "\n".join(lines) + f"\n\n{'/'.join(splits)} split; {sizes}.\n"


def summary_rows(report: EvalReport) -> list[dict[str, Any]]:
    """One flat dict per method (for CSV-like use)."""
    return [{"method": n, **r.to_dict()} for n, r in report.results.items()]
