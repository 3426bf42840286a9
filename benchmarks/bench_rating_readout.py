"""Rating tasks: does the adapter carry the user beyond its most likely answer?

    .venv/bin/python benchmarks/bench_rating_readout.py --split random \\
        [--checkpoint DIR] [--mt-lora DIR] [--splits-dir DIR] [--users 94] \\
        [--methods base,mt-lora,p2p,p2p-shuffled] [--out FILE]

For every query of the held-out MovieLens users, each method's prompt and adapter (exactly as
``p2p-local eval`` builds them) go through one forward pass; the next-token probabilities of
"1".."5", renormalised, are the method's rating distribution. Three readouts of it are scored:
``mode`` (the most likely rating: what greedy decoding answers when it answers with a digit),
``median`` (the answer that minimises the expected absolute error) and ``mean`` (the expected
rating, rounded). The best constant ("4" on MovieLens) is scored beside them, and each
method's median readout is compared per user with the constant and with MT-LoRA (paired
bootstrap, as ``bench_paired.py``). Writes ``benchmarks/results/rating_readout_<split>.json``.
This is a diagnostic; the quality tables keep greedy decoding.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
RATINGS = ("1", "2", "3", "4", "5")


def readouts(probs: np.ndarray) -> dict[str, int]:
    """Mode, median and rounded mean of a distribution over the ratings 1..5."""
    cdf = np.cumsum(probs)
    return {
        "mode": int(np.argmax(probs)) + 1,
        "median": int(np.searchsorted(cdf, 0.5)) + 1,
        "mean": int(np.clip(np.rint(float(np.dot(probs, np.arange(1, 6)))), 1, 5)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="random", choices=("random", "ood"))
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--mt-lora", default=None)
    ap.add_argument("--splits-dir", type=Path, default=None)
    ap.add_argument("--users", type=int, default=None)
    ap.add_argument("--methods", default="base,mt-lora,p2p,p2p-shuffled")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from p2p_local.baselines import EvalEnv, MethodSettings, create, parse_methods
    from p2p_local.eval.harness import EvalSettings, load_backend, load_data, select_users
    from p2p_local.eval.paired import paired_by_user
    from p2p_local.runtime import apply_adapter

    split_file = str(args.splits_dir / "movielens.json") if args.splits_dir else None
    settings = EvalSettings(
        data="movielens", split=args.split, split_file=split_file,
        methods=tuple(parse_methods(args.methods)), users=args.users,
        method=MethodSettings(max_tokens=8, checkpoint=args.checkpoint, mt_lora=args.mt_lora,
                              summaries=False),
    )
    dataset = load_data(settings)
    selection = select_users(dataset, settings)
    users = selection.eval_users
    backend = load_backend(settings)
    env = EvalEnv(backend, dataset.spec, users, settings.method, model_spec=settings.model)
    digit_ids = [backend.tokenize(r)[0] for r in RATINGS]
    constant = max(RATINGS, key=[str(q.output) for u in selection.train_users
                                 for q in u.queries].count)
    queries = [(u, q) for u in users for q in u.queries if q.output]
    golds = {q.id: int(str(q.output)) for _, q in queries}
    by_method: dict[str, dict[str, dict[str, int]]] = {}
    for name in settings.methods:
        method = create(name, env)
        method.setup()
        answers: dict[str, dict[str, int]] = {}
        for user in users:
            method.setup_user(user)
            for q in user.queries:
                if not q.output:
                    continue
                plan = method.plan(user, q)
                apply_adapter(backend, plan.payload)
                logits = backend.eval_logits(backend.prompt_tokens(plan.messages))[-1]
                picked = logits[digit_ids].astype(np.float64)
                probs = np.exp(picked - picked.max())
                answers[q.id] = readouts(probs / probs.sum())
            method.finish_user(user)
        method.close()
        apply_adapter(backend, None)
        by_method[name] = answers
        print(f"{name}: done", file=sys.stderr)

    def as_answers(preds: dict[str, str]) -> dict[str, dict[str, str]]:
        return {q.id: {"user_id": u.user_id, "prediction": preds[q.id], "gold": str(golds[q.id])}
                for u, q in queries}

    def mae(preds: dict[str, int]) -> float:
        return float(np.mean([abs(preds[qid] - golds[qid]) for qid in golds]))

    results: dict[str, dict[str, float]] = {
        name: {kind: mae({qid: a[kind] for qid, a in answers.items()})
               for kind in ("mode", "median", "mean")}
        for name, answers in by_method.items()
    }
    constant_preds = {qid: int(constant) for qid in golds}
    results[f'constant "{constant}"'] = {"mode": mae(constant_preds)}
    comparisons = {}
    for name, answers in by_method.items():
        median = as_answers({qid: str(a["median"]) for qid, a in answers.items()})
        refs = {"constant": as_answers({qid: constant for qid in golds})}
        if "mt-lora" in by_method and name != "mt-lora":
            refs["mt-lora"] = as_answers({qid: str(a["median"])
                                          for qid, a in by_method["mt-lora"].items()})
        for ref, ref_answers in refs.items():
            comparisons[f"{name} median - {ref}"] = paired_by_user(
                "rating", median, ref_answers).to_dict()
    out = args.out or RESULTS / f"rating_readout_{args.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "task": "movielens", "split": args.split, "users": len(users), "queries": len(golds),
        "checkpoint": args.checkpoint, "mt_lora": args.mt_lora, "mae": results,
        "comparisons": comparisons,
        "command": "python benchmarks/bench_rating_readout.py " + " ".join(
            argv if argv is not None else sys.argv[1:]),
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"mae": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
