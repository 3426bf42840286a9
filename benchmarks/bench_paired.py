"""Is a quality difference real? Per-user paired comparison of methods from one quality run.

    .venv/bin/python benchmarks/bench_paired.py \\
        benchmarks/results/all_test_users/quality_movielens_random.json \\
        [--pairs p2p:p2p-shuffled,p2p:base] [--resamples 10000] [--seed 0] \\
        [--also RUN_SEED1.json RUN_SEED2.json ...]

For each pair ``A:B`` it reads both methods' cached answers (``<cache>/eval/<task>-<split>/
predictions/<method>-<fingerprint>.jsonl``, the fingerprints the results file records), scores
each user's queries alone with the task's main metric (``p2p_local.eval.paired``: MAE for
ratings, ROUGE-1 for generation, accuracy for classification), and reports the mean over users
of A's score minus B's with a 95% bootstrap interval over users (seeded), and for how many
users A is better, worse or equal.
Queries count only where both methods answered. Writes ``paired_<task>_<split>.json`` next to
the results file (or to ``--out``).

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
from typing import Any

DEFAULT_PAIRS = ("p2p:p2p-shuffled,p2p:p2p-random,p2p:base,p2p:mt-lora,p2p-per-query:p2p,"
                 "p2p-per-query:base,p2p-per-query:mt-lora")


def load_answers(folder: Path, method: str, fingerprint: str) -> dict[str, dict[str, Any]]:
    path = folder / "predictions" / f"{method}-{fingerprint}.jsonl"
    if not path.is_file():
        raise SystemExit(f"no cached answers at {path}: rerun the bench_quality.py command the "
                         "results file records on this machine")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["query_id"]: r for r in rows}


def run_answers(results: dict[str, Any], method: str) -> dict[str, dict[str, Any]]:
    """One method's cached answers for a quality results file, limited to the file's users."""
    from p2p_local.paths import cache_dir

    folder = cache_dir() / "eval" / f"{results['task']}-{results['split']}"
    users = set(results["meta"]["user_ids"])
    answers = load_answers(folder, method, results["methods"][method]["fingerprint"])
    return {q: r for q, r in answers.items() if r["user_id"] in users}


def method_runs(runs: list[dict[str, Any]], method: str) -> list[dict[str, dict[str, Any]]]:
    """The cached answers of every distinct run of ``method`` (one per fingerprint)."""
    seen: dict[str, dict[str, dict[str, Any]]] = {}
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
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from p2p_local.eval.paired import paired_over_runs

    data = json.loads(args.results.read_text())
    task, split, kind = data["task"], data["split"], data["kind"]
    runs = [data] + [_same_users(data, json.loads(path.read_text()), path) for path in args.also]
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
              "also": [path.name for path in args.also],
              "checkpoint": data["meta"].get("checkpoint", {}).get("id"),
              "resamples": args.resamples, "seed": args.seed, "comparisons": comparisons}
    out = args.out or args.results.parent / f"paired_{task}_{split}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
