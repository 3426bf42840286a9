"""Does the profile embedding carry the user's rating habit? A linear probe on MovieLens.

    .venv/bin/python benchmarks/bench_profile_probe.py [--alpha 1.0] [--queries 8]
    .venv/bin/python benchmarks/bench_profile_probe.py --split-file <prepared>/splits/movielens.json

For every MovieLens user of the random split (seed 0), or of a saved split (``--split-file``,
e.g. the OOD split a training data folder keeps), the per-user profile is embedded twice
with the default embedder: as built (the statistics open with the rating habit in words) and
with the habit sentence left out (the numbers only). A ridge regression fitted on the training
users' embeddings predicts the ratings of their held-out queries; it is scored on the
held-out users' queries (random: validation + test users, and the test users alone, whom the
quality tables score; a saved split: its test users; MAE of the rounded, clipped prediction)
against the best constant answer and against rounding the user's own mean rating. If the
embedding cannot tell users apart, no hypernetwork reading it can; if the user's own mean
rating does not beat the constant, a profile of the user's habit alone cannot either. Writes
``benchmarks/results/profile_probe.json`` (``profile_probe_<kind>.json`` for a saved split).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    from p2p_local.eval.harness import EvalSettings  # its default queries per user: training's

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=1.0, help="ridge regularisation")
    ap.add_argument("--queries", type=int, default=EvalSettings.queries,
                    help="held-out queries per user (training's data.max_queries)")
    ap.add_argument("--split-file", type=Path, default=None,
                    help="a saved split (a training data folder's splits/movielens.json)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from sklearn.linear_model import Ridge

    from p2p_local.datasets import load_task
    from p2p_local.embedding import load_embedder
    from p2p_local.eval.splits import Split, SplitSettings, random_split
    from p2p_local.profile.builder import build_profile
    from p2p_local.profile.statistics import compute_statistics

    t0 = time.perf_counter()
    dataset = load_task("movielens", max_queries=args.queries)
    if args.split_file is None:
        split = random_split(dataset.user_ids(), SplitSettings(seed=0))
        held_out = list(split.val) + list(split.test)
        described = "random (seed 0): fitted on train users, scored on val + test users"
        out = args.out or RESULTS / "profile_probe.json"
    else:
        split = Split.from_dict(json.loads(args.split_file.read_text()))
        held_out = list(split.test)
        described = (f"{split.kind} (seed {split.seed}, {args.split_file.name}): fitted on "
                     "train users, scored on test users")
        out = args.out or RESULTS / f"profile_probe_{split.kind}.json"
    embedder = load_embedder("embedding")
    task = dataset.spec.description

    def features(user_ids: list[str], habit: bool) -> tuple[np.ndarray, ...]:
        """Per query: the user's profile embedding, the true rating, the user's mean, the user."""
        texts, targets, means, rows, owners = [], [], [], [], []
        for uid in user_ids:
            user = dataset.user(uid)
            stats = compute_statistics(user.history)
            assert stats is not None and stats.mean_rating is not None
            if not habit:
                stats = dataclasses.replace(stats, scale=None)  # no scale: no habit sentence
            texts.append(build_profile(user.history, task=task, statistics=stats).text)
            for q in user.queries:
                rows.append(len(texts) - 1)
                targets.append(float(q.output or 0))
                means.append(stats.mean_rating)
                owners.append(uid)
        vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
        return vectors[rows], np.asarray(targets), np.asarray(means), np.asarray(owners)

    def rounded(x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(x), 1, 5)

    predictions: dict[str, np.ndarray] = {}
    for habit in (True, False):
        x_train, y_train, _, _ = features(list(split.train), habit)
        x_eval, y_eval, means, owners = features(held_out, habit)
        probe = Ridge(alpha=args.alpha).fit(x_train, y_train)
        predictions["with_habit" if habit else "numbers_only"] = rounded(probe.predict(x_eval))
    values, counts = np.unique(y_train, return_counts=True)
    constant = float(values[np.argmax(counts)])

    def scored(rows: np.ndarray) -> dict[str, float]:
        y = y_eval[rows]
        results = {f"probe_mae_{name}": float(np.abs(pred[rows] - y).mean())
                   for name, pred in predictions.items()}
        results["best_constant"] = constant
        results["best_constant_mae"] = float(np.abs(constant - y).mean())
        results["own_mean_rating_mae"] = float(np.abs(rounded(means[rows]) - y).mean())
        return {k: round(v, 4) for k, v in results.items()}

    every = np.ones(len(y_eval), dtype=bool)
    tested = np.isin(owners, list(split.test))
    report = {
        "task": "movielens",
        "split": described,
        "queries_per_user": args.queries,
        "n_train_queries": int(len(y_train)),
        "n_eval_queries": int(len(y_eval)),
        "embedding_model": embedder.model_id,
        "ridge_alpha": args.alpha,
        "results": scored(every),
        "n_test_queries": int(tested.sum()),
        "results_test_users": scored(tested),
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
