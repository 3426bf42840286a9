"""Is a quality difference real? Per-user paired comparison of methods from one quality run.

    .venv/bin/python benchmarks/bench_paired.py \\
        benchmarks/results/all_test_users/quality_movielens_random.json \\
        [--pairs p2p:p2p-shuffled,p2p:base] [--resamples 10000] [--seed 0] \\
        [--also RUN_SEED1.json RUN_SEED2.json ...] [--also-methods base,mt-lora]

For each pair ``A:B`` it takes both methods' per-query scores from the results file (its
``per_query`` section; files written before it existed fall back to the machine's cached
answers, ``<cache>/eval/<task>-<split>/predictions/<method>-<fingerprint>.jsonl``), scores
each user's queries alone with the task's main metric (``p2p_local.eval.paired``: MAE for
ratings, ROUGE-1 for generation, accuracy for classification), and reports the mean over users
of A's score minus B's with a 95% bootstrap interval over users (seeded), and for how many
users A is better, worse or equal.
Queries count only where both methods answered. Writes ``paired_<task>_<split>.json`` next to
the results file (or to ``--out``).

``--add-scores`` first writes the per-query scores into each named file that lacks them, from
this machine's cache, after checking that the cached answers reproduce the file's figures.

``--also`` names further results files of the same task, split and users, e.g. the same
command run again with ``--seed 1``, ``--seed 2``, ... and ``--methods p2p-shuffled``: each of
those seeds gives every user another donor, and a method found in several files is scored per
user as the mean over its runs (``paired_over_runs``). One donor per user is a noisy ablation
(greedy replies flip with small changes of the adapter); several average that out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from p2p_local.eval.paired import Answer

DEFAULT_PAIRS = ("p2p:p2p-shuffled,p2p:p2p-random,p2p:base,p2p:mt-lora,p2p-per-query:p2p,"
                 "p2p-per-query:base,p2p-per-query:mt-lora")


def load_answers(folder: Path, method: str, fingerprint: str) -> dict[str, dict[str, Any]]:
    path = folder / "predictions" / f"{method}-{fingerprint}.jsonl"
    if not path.is_file():
        raise SystemExit(f"no per-query scores in the results file and no cached answers at "
                         f"{path}: rerun the bench_quality.py command the results file records "
                         "(a rerun writes them into the file)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["query_id"]: r for r in rows}


def run_answers(results: dict[str, Any], method: str) -> dict[str, Answer]:
    """One method's answers in a quality results file, limited to the file's users: the
    per-query scores it carries, else the cached answers on this machine."""
    from p2p_local.eval.paired import scored_answers

    per_query = results.get("per_query") or {}
    if method in per_query.get("scores", {}):
        queries = zip(per_query["user_ids"], per_query["query_ids"], strict=True)
        return scored_answers(queries, per_query["scores"][method])
    return cached_answers(results, method)


def cached_answers(results: dict[str, Any], method: str) -> dict[str, Answer]:
    """One method's answers from this machine's evaluation cache, limited to the file's users,
    each with its main-metric ``score``; refuses unless they reproduce the file's figure (the
    cache may hold another machine's run of the same settings: adapters computed elsewhere can
    differ in the last bits, and greedy replies with them)."""
    from bench_quality import work_dir

    from p2p_local.eval.paired import MAIN_METRIC, query_scores

    held_out = results["meta"].get("settings", {}).get("held_out", "test")
    folder = work_dir(results["task"], results["split"], held_out)
    users = set(results["meta"]["user_ids"])
    answers = load_answers(folder, method, results["methods"][method]["fingerprint"])
    answers = {q: r for q, r in answers.items() if r["user_id"] in users}
    metric = MAIN_METRIC[results["kind"]][0]
    values = query_scores(results["kind"], [r["prediction"] for r in answers.values()],
                          [str(r["gold"]) for r in answers.values()]) if answers else []
    figure = results["results"][method]
    if len(values) != figure["n"] or abs(sum(values) / len(values) - figure[metric]) > 1e-9:
        raise SystemExit(f"the cached answers of {method!r} on this machine do not reproduce "
                         f"the file's {metric} over {figure['n']} queries (another run of the "
                         "same settings): rerun the command the file records, into another "
                         "--out, and compare that file instead")
    return {q: {**r, "score": v} for (q, r), v in zip(answers.items(), values, strict=True)}


def add_per_query(results: dict[str, Any]) -> dict[str, Any]:
    """Give a results file written before results carried per-query scores its ``per_query``
    section, from this machine's cached answers; refuses unless those answers reproduce every
    method's figure in the file."""
    from p2p_local.eval.paired import MAIN_METRIC

    metric = MAIN_METRIC[results["kind"]][0]
    answers = {m: cached_answers(results, m) for m in results["methods"]}  # checked, scored
    shared = set.intersection(*(set(a) for a in answers.values()))
    first = next(iter(answers.values()))
    order = {u: i for i, u in enumerate(results["meta"]["user_ids"])}
    query_ids = sorted(shared, key=lambda q: (order[first[q]["user_id"]], q))
    scores = {m: [a[q]["score"] for q in query_ids] for m, a in answers.items()}
    return {**results, "per_query": {"metric": metric,
                                     "user_ids": [first[q]["user_id"] for q in query_ids],
                                     "query_ids": query_ids, "scores": scores}}


def method_runs(runs: list[dict[str, Any]], method: str) -> list[dict[str, Answer]]:
    """The cached answers of every distinct run of ``method`` (one per fingerprint)."""
    seen: dict[str, dict[str, Answer]] = {}
    for results in runs:
        entry = results["methods"].get(method)
        if entry is not None and entry["fingerprint"] not in seen:
            seen[entry["fingerprint"]] = run_answers(results, method)
    return list(seen.values())


def _same_users(first: dict[str, Any], other: dict[str, Any], path: Path) -> dict[str, Any]:
    same = (other["task"], other["split"], sorted(other["meta"]["user_ids"])) == (
        first["task"], first["split"], sorted(first["meta"]["user_ids"]))
    if not same:
        raise SystemExit(f"{path} is not a run of the same task, split and users (--seed also "
                         "draws the user sample: with --users below the split's test users, "
                         "another seed scores other users; use them all)")
    return other


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="a quality_<task>_<split>.json")
    ap.add_argument("--pairs", default=DEFAULT_PAIRS,
                    help="comma-separated A:B pairs (pairs naming a method the run lacks are "
                    "skipped)")
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--also", type=Path, nargs="*", default=[],
                    help="more results files of the same task, split and users (e.g. other "
                    "--seed values: other donors for p2p-shuffled); a method's runs are averaged")
    ap.add_argument("--also-methods", default="",
                    help="comma-separated methods to take from the --also files (e.g. base,mt-lora "
                    "from a run of another checkpoint on the same queries); default: every method")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--add-scores", action="store_true",
                    help="first write each file's per-query scores into it from this "
                    "machine's cached answers (files written before results carried them)")
    args = ap.parse_args(argv)

    from p2p_local.eval.paired import paired_over_runs

    if args.add_scores:
        for path in [args.results, *args.also]:
            results = json.loads(path.read_text())
            if "per_query" not in results:
                path.write_text(json.dumps(add_per_query(results), indent=2) + "\n")
    data = json.loads(args.results.read_text())
    task, split, kind = data["task"], data["split"], data["kind"]
    also = [_same_users(data, json.loads(path.read_text()), path) for path in args.also]
    keep = {m.strip() for m in args.also_methods.split(",") if m.strip()}
    if keep:
        also = [{**run, "methods": {m: e for m, e in run["methods"].items() if m in keep}}
                for run in also]
    runs = [data, *also]
    comparisons: dict[str, Any] = {}
    for pair in args.pairs.split(","):
        a_name, _, b_name = pair.strip().partition(":")
        a_runs, b_runs = method_runs(runs, a_name), method_runs(runs, b_name)
        if not a_runs or not b_runs:
            continue
        result = paired_over_runs(kind, a_runs, b_runs, resamples=args.resamples, seed=args.seed)
        comparisons[f"{a_name} - {b_name}"] = {**result.to_dict(), "runs": [len(a_runs),
                                                                            len(b_runs)]}
    report = {"task": task, "split": split, "results_file": args.results.name,
              "also": [str(path) for path in args.also], "also_methods": sorted(keep),
              "checkpoint": data["meta"].get("checkpoint", {}).get("id"),
              "resamples": args.resamples, "seed": args.seed, "comparisons": comparisons}
    out = args.out or args.results.parent / f"paired_{task}_{split}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
