"""Is one training recipe better than another, over several seeds? Per-user paired comparison.

    .venv/bin/python benchmarks/bench_recipes.py \\
        --a runs/eval-recipe-a-seed0 runs/eval-recipe-a-seed1 \\
        --b runs/eval-recipe-b-seed0 runs/eval-recipe-b-seed1 \\
        [--names "recipe A,recipe B"] [--split random] [--method p2p] \\
        [--baselines p2p-shuffled,mt-lora] [--tasks movielens,shakespeare,fortunes,office] \\
        --out benchmarks/results/<folder>/recipes_random.json

Each folder is one trained checkpoint's ``bench_quality.py --out`` folder (its
``quality_<task>_<split>.json`` files, every run on the same test users). One seed of a recipe
is noisy (on these test sets the seed moves a task as much as any recipe change), so per task
this averages each user's score over the recipe's runs (``p2p_local.eval.paired.
paired_over_runs``, the answers read from the evaluation cache as ``bench_paired.py`` does) and
reports, with 95% bootstrap intervals over users:
- A minus B for ``--method``;
- within each recipe, ``--method`` minus each baseline (e.g. the shuffled-profile ablation);
- the per-run figures and, over the generation tasks, the mean of the main metric per recipe.
The intervals are over users only: the seeds a recipe was run with are averaged over, and
their own spread is bounded by nothing but the per-run figures.
Writes the JSON to ``--out`` and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench_paired import run_answers

if TYPE_CHECKING:
    from p2p_local.eval.paired import Answer


def _load_run(folder: Path, task: str, split: str) -> dict[str, Any]:
    path = folder / f"quality_{task}_{split}.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run bench_quality.py --task {task} --split {split} "
                         f"--out {folder} for that checkpoint first")
    return json.loads(path.read_text())


def _answers(run: dict[str, Any], method: str) -> dict[str, Answer]:
    if method not in run["methods"]:
        raise SystemExit(f"{run['task']}: a run has no {method!r} answers (command: "
                         f"{run.get('command', '?')})")
    return run_answers(run, method)


def compare_task(task: str, split: str, recipes: dict[str, list[Path]], method: str,
                 baselines: list[str], resamples: int, seed: int) -> dict[str, Any]:
    from p2p_local.eval.paired import MAIN_METRIC, paired_over_runs

    runs = {name: [_load_run(f, task, split) for f in folders]
            for name, folders in recipes.items()}
    every = [r for rs in runs.values() for r in rs]
    kind = every[0]["kind"]
    if any(sorted(r["meta"]["user_ids"]) != sorted(every[0]["meta"]["user_ids"]) for r in every):
        raise SystemExit(f"{task}: the runs were not evaluated on the same users; rerun them "
                         "with the same --users and --splits-dir")
    metric = MAIN_METRIC[kind][0]
    a_name, b_name = runs
    answers = {name: [_answers(r, method) for r in rs] for name, rs in runs.items()}
    per_run = {name: [r["results"][method][metric] for r in rs] for name, rs in runs.items()}
    within: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        within[name] = {}
        for base in baselines:
            if all(base in r["methods"] for r in rs):
                other = [_answers(r, base) for r in rs]
                within[name][f"{method} - {base}"] = paired_over_runs(
                    kind, answers[name], other, resamples=resamples, seed=seed).to_dict()
    return {
        "kind": kind, "metric": metric, "users": len(every[0]["meta"]["user_ids"]),
        "checkpoints": {name: [r["meta"].get("checkpoint", {}).get("id") for r in rs]
                        for name, rs in runs.items()},
        "per_run": per_run,
        "mean": {name: sum(v) / len(v) for name, v in per_run.items()},
        f"{a_name} - {b_name}": paired_over_runs(
            kind, answers[a_name], answers[b_name], resamples=resamples, seed=seed).to_dict(),
        "within": within,
        "commands": {name: [r.get("command") for r in rs] for name, rs in runs.items()},
    }


def _interval(d: dict[str, Any]) -> str:
    low, high = d["ci95"]
    return f"{d['mean_difference']:+.3f} [{low:+.3f}, {high:+.3f}]"


def markdown(report: dict[str, Any]) -> str:
    a, b = report["recipes"]
    tasks = report["tasks"]
    head = "| | " + " | ".join(f"{t} {v['metric']}" for t, v in tasks.items()) + " |"
    rows = [head, "|---" + "|---:" * len(tasks) + "|"]

    def row(label: str, cell: Any) -> None:
        rows.append(f"| {label} | " + " | ".join(cell(v) for v in tasks.values()) + " |")

    for name in (a, b):
        row(f"{name}: per run", lambda v, n=name: " / ".join(f"{x:.3f}" for x in v["per_run"][n]))
        row(f"{name}: mean", lambda v, n=name: f"{v['mean'][n]:.3f}")
    row(f"{a} - {b}, per user", lambda v: _interval(v[f"{a} - {b}"]))
    for name in (a, b):
        for comp in report["baselines"]:
            key = f"{report['method']} - {comp}"
            row(f"{name}: {key}, per user",
                lambda v, n=name, k=key: _interval(v["within"][n][k]) if k in v["within"][n]
                else "-")
    gen = report["generation_mean"]
    tail = ", ".join(f"{n} {x:.3f}" for n, x in gen.items()) if gen else "-"
    return "\n".join(rows) + f"\n\nGeneration tasks, mean main metric over runs and tasks: {tail}\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, nargs="+", required=True, help="recipe A's run folders")
    ap.add_argument("--b", type=Path, nargs="+", required=True, help="recipe B's run folders")
    ap.add_argument("--names", default="A,B", help="the two recipes' names, comma-separated")
    ap.add_argument("--split", default="random")
    ap.add_argument("--tasks", default="movielens,shakespeare,fortunes,office")
    ap.add_argument("--method", default="p2p")
    ap.add_argument("--baselines", default="p2p-shuffled,mt-lora",
                    help="methods each recipe's --method is compared with, within its own runs")
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    names = [n.strip() for n in args.names.split(",")]
    if len(names) != 2 or names[0] == names[1]:
        raise SystemExit("--names takes two different names, e.g. --names 'new,shipped'")
    recipes = dict(zip(names, (args.a, args.b), strict=True))
    baselines = [b for b in args.baselines.split(",") if b]
    tasks = {t: compare_task(t, args.split, recipes, args.method, baselines, args.resamples,
                             args.seed) for t in args.tasks.split(",") if t}
    generation = [v for v in tasks.values() if v["kind"] == "generation"]
    report = {
        "split": args.split, "method": args.method, "baselines": baselines,
        "recipes": {n: [str(f) for f in fs] for n, fs in recipes.items()},
        "resamples": args.resamples, "seed": args.seed, "tasks": tasks,
        "generation_mean": {n: sum(v["mean"][n] for v in generation) / len(generation)
                            for n in names} if generation else {},
        "command": "python benchmarks/bench_recipes.py " + " ".join(sys.argv[1:] if argv is None
                                                                     else argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
