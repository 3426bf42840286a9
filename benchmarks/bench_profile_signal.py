"""Does the profile embedding know whose replies these are? Per-user profiles on the text tasks.

    .venv/bin/python benchmarks/bench_profile_signal.py --splits-dir <prepared>/splits \\
        [--split random] [--tasks shakespeare,fortunes,office]

The hypernetwork sees a user only through the embedding of their per-user profile. For every
test user of the saved split and each held-out query (8 a user), the held-out reply is embedded
with the default embedder and compared (cosine) with every test user's profile embedding; the
score is the share of the other users whose profile is less similar to the reply than the
user's own (ties count half): 0.5 when the profile says nothing about whose replies these are,
1.0 when the own profile is always the closest. Averaged per user, then over users (95%
bootstrap interval over users), for three per-user profiles of the same history:

- ``shipped``: what P2P embeds now (profile format 2: the history statistics when items carry
  ratings or labels, else the 2 most recent items);
- ``recent_8``: the 8 most recent items, no statistics;
- ``recent_32``: the 32 most recent items (the embedder reads the first 512 tokens).

Per user, each richer profile minus ``shipped`` (the same bootstrap). A profile that scores
near 0.5 gives the hypernetwork nothing to tell this user's replies from another's, whatever
it is trained to do. Writes ``benchmarks/results/user_signal/profile_<split>.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_user_signal import arguments, test_users, write_report

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("shipped", "recent_8", "recent_32")


def bootstrap(values: np.ndarray, resamples: int, seed: int) -> dict[str, Any]:
    """Mean of per-user values with its 95% bootstrap interval over users."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": round(float(values.mean()), 4), "ci95": [round(float(low), 4),
                                                             round(float(high), 4)]}


def own_profile_rank(sims: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Per reply (row): the share of other users' profiles less similar than the owner's."""
    own = sims[np.arange(len(owner)), owner][:, None]
    others = np.ones_like(sims, dtype=bool)
    others[np.arange(len(owner)), owner] = False
    below = ((sims < own) & others).sum(axis=1) + 0.5 * ((sims == own) & others).sum(axis=1)
    return below / others.sum(axis=1)


def main(argv: list[str] | None = None) -> int:
    ap = arguments(__doc__, "shakespeare,fortunes,office")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from p2p_local.embedding import load_embedder
    from p2p_local.profile.builder import ProfileSettings, build_profile

    started = time.perf_counter()
    embedder = load_embedder("embedding")
    report: dict[str, Any] = {"split": args.split, "splits_dir": str(args.splits_dir),
                              "queries_per_user": args.queries,
                              "embedding_model": embedder.model_id, "tasks": {}}
    for task in args.tasks.split(","):
        dataset, users = test_users(task, args.splits_dir, args.queries)
        rows = [(i, q) for i, u in enumerate(users) for q in u.queries if q.output]
        owner = np.array([i for i, _ in rows])
        replies = np.asarray(embedder.embed([str(q.output) for _, q in rows]), dtype=np.float64)
        replies /= np.linalg.norm(replies, axis=1, keepdims=True)
        describe = dataset.spec.description
        texts = {
            "shipped": [build_profile(u.history, task=describe).text for u in users],
            "recent_8": [build_profile(u.history, task=describe, statistics=False,
                                       settings=ProfileSettings(k=8)).text for u in users],
            "recent_32": [build_profile(u.history, task=describe, statistics=False,
                                        settings=ProfileSettings(k=32)).text for u in users],
        }
        per_user: dict[str, np.ndarray] = {}
        for name in VARIANTS:
            profiles = np.asarray(embedder.embed(texts[name]), dtype=np.float64)
            profiles /= np.linalg.norm(profiles, axis=1, keepdims=True)
            rank = own_profile_rank(replies @ profiles.T, owner)
            per_user[name] = np.array([rank[owner == i].mean() for i in range(len(users))])
        entry: dict[str, Any] = {"users": len(users), "queries": len(rows)}
        for name in VARIANTS:
            entry[name] = bootstrap(per_user[name], args.resamples, args.seed)
        for name in VARIANTS[1:]:
            entry[f"{name} - shipped"] = bootstrap(per_user[name] - per_user["shipped"],
                                                   args.resamples, args.seed)
        report["tasks"][task] = entry
        print(task, json.dumps(entry), flush=True)
    write_report(report, "bench_profile_signal.py", argv, started,
                 args.out or RESULTS / "user_signal" / f"profile_{args.split}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
