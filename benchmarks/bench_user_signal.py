"""Is there a per-user signal in a task's data? Retrieval as the answer, own history vs others'.

    .venv/bin/python benchmarks/bench_user_signal.py --splits-dir <prepared>/splits \\
        [--split random] [--tasks movielens,shakespeare,fortunes,office] [--donors 5]

No model answers here. For every test user of the saved split (``<splits-dir>/<task>.json``,
the split training and ``bench_quality.py`` use) and each held-out query (8 a user, training's
``data.max_queries``), the answer is the history item that BM25 ranks first for the query (as
RAG and the per-query profile retrieve it): its reply (a dialogue pair's second half, a
quotation), or for a rating task its rating. Scored with the task's main metric (ROUGE-1,
MAE), from the user's own history and from each of ``--donors`` other test users' histories
(one seeded donor per user and draw, never the user), then compared per user
(``p2p_local.eval.paired.paired_over_runs``: the donor draws averaged, 95% bootstrap over users).
Where users belong to groups (Shakespeare: the play), the comparison is repeated with donors
drawn from any user of the same group (training users too: only their history is read), which
tells a user's own voice from their group's topic.

If the own history's nearest item is no closer to the user's held-out answers than another
user's, the data gives a profile nothing user-specific to carry for that task, and neither
P2P's own-vs-shuffled ablation nor OPPU can show a per-user gain on it. Writes
``benchmarks/results/user_signal/retrieval_<split>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = "movielens,shakespeare,fortunes,office"


def item_answer(item: Any, kind: str) -> str:
    """What a history item says as an answer: its rating, else its reply, else its text."""
    if kind == "rating" and item.score is not None:
        return f"{item.score:g}"
    return str(item.output or item.text)


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded permutation of range(n) with no fixed point (n >= 2)."""
    while True:
        order = rng.permutation(n)
        if not np.any(order == np.arange(n)):
            return order


def compare(kind: str, own: dict[str, Any], donor_runs: list[dict[str, Any]],
            args: argparse.Namespace) -> dict[str, Any]:
    """Own history against the donor draws: means and the per-user paired difference."""
    from p2p_local.eval.paired import MAIN_METRIC, paired_over_runs

    def mean(run: dict[str, Any]) -> float:
        return float(np.mean([a["score"] for a in run.values()]))

    paired = paired_over_runs(kind, [own], donor_runs, resamples=args.resamples, seed=args.seed)
    others = float(np.mean([mean(r) for r in donor_runs]))
    return {
        "metric": MAIN_METRIC[kind][0], "queries": len(own),
        "own_history": round(mean(own), 4),
        "other_users_history": [round(mean(r), 4) for r in donor_runs],
        "own_minus_others_per_user": paired.to_dict(),
        "summary": f"{MAIN_METRIC[kind][0]} {mean(own):.4f} vs {others:.4f}, per user "
                   f"{paired.mean_difference:+.4f} [{paired.ci95[0]:+.4f}, {paired.ci95[1]:+.4f}]",
    }


def arguments(doc: str, tasks: str) -> argparse.ArgumentParser:
    """The options this script and ``bench_profile_signal.py`` share."""
    from p2p_local.eval.harness import EvalSettings  # its default queries per user: training's

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--splits-dir", type=Path, required=True,
                    help="a folder of saved splits, <task>.json each (the training data "
                    "folder's splits/)")
    ap.add_argument("--split", default="random", help="a label for the output file name")
    ap.add_argument("--tasks", default=tasks)
    ap.add_argument("--queries", type=int, default=EvalSettings.queries)
    ap.add_argument("--resamples", type=int, default=10000)
    return ap


def test_users(task: str, splits_dir: Path, queries: int) -> tuple[Any, list[Any]]:
    """The task's data and the saved split's test users with a history and a gold answer."""
    from p2p_local.datasets import load_task
    from p2p_local.eval.splits import Split

    dataset = load_task(task, max_queries=queries)
    split = Split.from_dict(json.loads((splits_dir / f"{task}.json").read_text()))
    users = [dataset.user(u) for u in split.test]
    return dataset, [u for u in users if u.history and any(q.output for q in u.queries)]


def write_report(report: dict[str, Any], script: str, argv: list[str] | None, started: float,
                 out: Path) -> None:
    """Add the time, machine and command to ``report`` and write it to ``out``."""
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["machine"] = platform.machine()
    report["command"] = f"python benchmarks/{script} " + " ".join(
        argv if argv is not None else sys.argv[1:])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__, TASKS)
    ap.add_argument("--donors", type=int, default=5, help="other users' histories per user")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.donors < 1:
        ap.error("--donors must be at least 1")

    from p2p_local.eval.metrics import parse_answer
    from p2p_local.eval.paired import query_scores, scored_answers
    from p2p_local.profile.builder import build_index

    started = time.perf_counter()
    report: dict[str, Any] = {"split": args.split, "splits_dir": str(args.splits_dir),
                              "queries_per_user": args.queries, "donors": args.donors,
                              "seed": args.seed, "tasks": {}}
    for task in args.tasks.split(","):
        dataset, users = test_users(task, args.splits_dir, args.queries)
        spec = dataset.spec
        indexes = {u.user_id: build_index(u.history) for u in users}

        def answers(history_of: dict[str, Any], users: list[Any] = users,
                    indexes: dict[str, Any] = indexes, spec: Any = spec) -> dict[str, Any]:
            """Each test query answered from ``history_of[user]``'s nearest item, scored."""
            rows = [(u, q) for u in users for q in u.queries if q.output]
            texts = []
            for u, q in rows:
                source = history_of[u.user_id]
                best = indexes[source.user_id].search(q.input, k=1)[0]
                texts.append(item_answer(source.history[int(best.position)], spec.kind))
            preds = [parse_answer(t, spec.kind, spec.labels) for t in texts]
            values = query_scores(spec.kind, preds, [str(q.output) for _, q in rows],
                                  spec.labels)
            return scored_answers([(u.user_id, q.id) for u, q in rows], values)

        own = answers({u.user_id: u for u in users})
        rng = np.random.default_rng(args.seed)
        donor_runs = []
        for _ in range(args.donors):
            order = derangement(len(users), rng)
            donor_runs.append(answers({u.user_id: users[j] for u, j in
                                       zip(users, order, strict=True)}))
        entry = compare(spec.kind, own, donor_runs, args)
        entry["users"] = len(users)
        print(f"{task}: own - other users' history {entry['summary']}", flush=True)

        groups = {u.meta.get("group") for u in users} - {None, ""}
        if groups:  # donors from the user's own group (any user of the task with a history)
            pool = {g: [u for u in dataset.users if u.meta.get("group") == g and u.history]
                    for g in groups}
            grouped = [u for u in users if len(pool.get(u.meta.get("group"), [])) > 1]
            same_runs = []
            for _ in range(args.donors):
                donor_of = {}
                for u in grouped:
                    others = [d for d in pool[u.meta["group"]] if d.user_id != u.user_id]
                    donor_of[u.user_id] = others[int(rng.integers(len(others)))]
                for d in donor_of.values():
                    indexes.setdefault(d.user_id, build_index(d.history))
                same_runs.append(answers(donor_of, users=grouped))
            own_grouped = {q: a for q, a in own.items()
                           if a["user_id"] in {u.user_id for u in grouped}}
            entry["same_group"] = compare(spec.kind, own_grouped, same_runs, args)
            entry["same_group"]["users"] = len(grouped)
            print(f"{task}: own - same group's history ({len(grouped)} users) "
                  f"{entry['same_group']['summary']}", flush=True)
        report["tasks"][task] = {"kind": spec.kind, **entry}
    write_report(report, "bench_user_signal.py", argv, started,
                 args.out or RESULTS / "user_signal" / f"retrieval_{args.split}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
