"""Quality: P2P against its baselines and ablations on held-out users (the paper's Tables 1-2).

    .venv/bin/python benchmarks/bench_quality.py --task movielens --split random \\
        [--users 5] [--methods base,rag,pag,p2p,p2p-shuffled] [--checkpoint DIR] \\
        [--mt-lora DIR] [--queries 8] [--max-tokens N] [--repeat-penalty 1.1] [--threads N] \\
        [--held-out val] [--adapter-scale 0.5]

``--task all`` runs the four built-in tasks one after the other and also writes a combined
table (``quality_<split>.md``). Each (task, split) writes
``benchmarks/results/quality_<task>_<split>.json`` (``p2p-local eval``'s results.json: metrics,
per-instance times, the best constant answer, settings and the hypernetwork checkpoint id) and
``quality_<task>_<split>.md`` (the table). Answers are cached under
``<cache>/eval/<task>-<split>/``, so an interrupted or extended run (more users, more
methods) only computes what is missing. The default hypernetwork and MT-LoRA are the installed
ones; the held-out users are the test users of the split training used (same seed and queries
per user), or with ``--held-out val`` its validation users (files and cache get a ``-val``
suffix), where settings such as ``--adapter-scale`` are chosen.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = ("movielens", "shakespeare", "office", "fortunes")
DEFAULT_METHODS = ("base,rag,pag,full-history,p2p,p2p-per-query,p2p-shuffled,"
                   "p2p-per-query-shuffled,p2p-random,p2p-summary-only,"
                   "p2p-retrieval-only")


def held_out_suffix(held_out: str) -> str:
    """What names the files and cache of a run on validation users apart ("" for test users)."""
    return "-val" if held_out == "val" else ""


def work_dir(task: str, split: str, held_out: str = "test") -> Path:
    """Where one (task, split) evaluation caches its answers; validation users have their own."""
    from p2p_local.paths import cache_dir

    return cache_dir() / "eval" / f"{task}-{split}{held_out_suffix(held_out)}"


def main(argv: list[str] | None = None) -> int:
    from p2p_local.eval.harness import EvalSettings  # its default queries per user: training's

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="movielens", help=f"one of {', '.join(TASKS)}, or all")
    ap.add_argument("--split", default="random", choices=("random", "ood"))
    ap.add_argument("--users", type=int, default=5)
    ap.add_argument("--methods", default=None,
                    help="comma-separated (default: all but oppu, with mt-lora when one is "
                    "installed or given; --mt-lora also adds oppu)")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--mt-lora", default=None)
    ap.add_argument("--queries", type=int, default=EvalSettings.queries,
                    help="held-out queries per test user (training's data.max_queries)")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0,
                    help="seeds the user sample, the shuffled profile's donors and random "
                    "profiles (another seed gives p2p-shuffled other donors)")
    ap.add_argument("--splits-dir", type=Path, default=None,
                    help="a folder of saved splits, <task>.json each (the training data "
                    "folder's splits/), instead of recomputing them")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--repeat-penalty", type=float, default=1.0,
                    help="repetition penalty of the greedy decoding, for every method (1 = off)")
    ap.add_argument("--adapter-scale", type=float, default=1.0,
                    help="multiply every P2P adapter's update by this (choose it on --held-out "
                    "val)")
    ap.add_argument("--held-out", default="test", choices=("test", "val"),
                    help="the split's test users (default) or its validation users")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--oppu-max-steps", type=int, default=64)
    ap.add_argument("--no-summaries", action="store_true")
    ap.add_argument("--backend", default="llamacpp", choices=("llamacpp", "hf"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    from rich.console import Console

    from p2p_local.baselines import MethodSettings, parse_methods
    from p2p_local.eval.harness import run_evaluation
    from p2p_local.eval.report import combined_table

    err = Console(stderr=True)
    tasks = TASKS if args.task == "all" else (args.task,)
    from p2p_local.registry import default_path

    # the MT-LoRA baseline: --mt-lora, else the installed default; OPPU only with --mt-lora
    extra = ",mt-lora,oppu" if args.mt_lora else (",mt-lora" if default_path("mt-lora") else "")
    methods = args.methods or DEFAULT_METHODS + extra
    reports = []
    for task in tasks:
        split_file = None
        if args.splits_dir is not None:
            split_file = str(args.splits_dir / f"{task}.json")
        settings = EvalSettings(
            data=task, split=args.split, split_file=split_file, held_out=args.held_out,
            methods=tuple(parse_methods(methods)),
            users=args.users, queries=args.queries, split_seed=args.split_seed,
            backend=args.backend, threads=args.threads,
            method=MethodSettings(k=args.k, max_tokens=args.max_tokens,
                                  checkpoint=args.checkpoint, mt_lora=args.mt_lora,
                                  oppu_max_steps=args.oppu_max_steps,
                                  summaries=not args.no_summaries,
                                  repeat_penalty=args.repeat_penalty, seed=args.seed,
                                  adapter_scale=args.adapter_scale),
        )
        val = held_out_suffix(args.held_out)
        work = work_dir(task, args.split, args.held_out)
        report = run_evaluation(settings, out_dir=work,
                                log=lambda text: err.print(text, highlight=False))
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"quality_{task}_{args.split}{val}"
        data = json.loads((work / "results.json").read_text())
        data["command"] = "python benchmarks/bench_quality.py " + " ".join(
            argv if argv is not None else sys.argv[1:])
        (args.out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
        shutil.copyfile(work / "results.md", args.out / f"{stem}.md")
        print(report.markdown())
        reports.append(report)
    if len(reports) > 1:
        table = combined_table(reports)
        (args.out / f"quality_{args.split}{val}.md").write_text(table)
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
