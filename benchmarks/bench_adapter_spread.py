"""How far apart are the adapters the hypernetwork gives different users? Weight-level spread.

    .venv/bin/python benchmarks/bench_adapter_spread.py --data <prepared> \\
        [--checkpoint models/hypernets/p2p-smollm2-minilm/hypernet] [--out FILE]

For the validation users of a prepared training-data folder (held out from training; their
profile embeddings are stored there), the hypernetwork's LoRA for each profile, and the
relative distance between two adapters' weight updates (``LoraWeights.relative_distance``:
sqrt of sum over layers of ||B1A1 - B2A2||^2 / ||B2A2||^2, averaged over module types):

- ``user_vs_other_user``: a user's per-user adapter against another user's of the same task
  (a seeded derangement), what ``p2p-shuffled`` swaps;
- ``query_vs_other_query``: two per-query adapters of the same user (their first two queries);
- ``user_vs_own_query``: a user's per-user adapter against their first per-query one;
- ``user_vs_other_task``: against a user of another task (each task's first user, in turn);
- ``user_vs_random_vector``: against the adapter of a random unit vector (what ``p2p-random``
  embeds);
- ``user_vs_mt_lora``: against MT-LoRA's update (``--mt-lora``; relative to MT-LoRA's size);
- ``size_vs_mt_lora``: the size of the user's update over MT-LoRA's (the same norm).

If other users' adapters were as close as 0.0, the hypernetwork would ignore the user at the
weight level; if they are as far apart as other tasks', the weights follow the user strongly,
and whether the answers follow is the quality tables' question. Per task: mean and 95%
bootstrap interval over users. Writes ``benchmarks/results/adapter_spread.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_profile_signal import bootstrap
from bench_user_signal import write_report

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CHECKPOINT = "models/hypernets/p2p-smollm2-minilm/hypernet"
DEFAULT_MT_LORA = "models/hypernets/mt-lora-smollm2/adapter"


def validation_users(data: Path) -> dict[str, dict[str, tuple[int, list[int]]]]:
    """task -> user -> (per-user embedding row, per-query embedding rows), validation only."""
    users: dict[str, dict[str, tuple[int, list[int]]]] = defaultdict(dict)
    with (data / "examples.jsonl").open() as fh:
        for line in fh:
            ex = json.loads(line)
            if ex["split"] == "val":
                entry = users[ex["task"]].setdefault(ex["user_id"], (ex["emb_user"], []))
                entry[1].append(ex["emb_query"])
    return users


def update_norm(weights: Any) -> torch.Tensor:
    """Per user [B]: sqrt(sum over layers of ||B @ A||_F^2), averaged over module types
    (Gram matrices, as ``LoraWeights.relative_distance``)."""
    norms = [((b.transpose(-1, -2) @ b) * (a @ a.transpose(-1, -2))).sum(dim=(-1, -2, -3))
             for a, b in ((weights.a[m], weights.b[m]) for m in weights.a)]
    return torch.stack([n.clamp_min(0.0).sqrt() for n in norms]).mean(dim=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a prepared training-data folder")
    ap.add_argument("--checkpoint", type=Path, default=Path(DEFAULT_CHECKPOINT))
    ap.add_argument("--mt-lora", type=Path, default=Path(DEFAULT_MT_LORA))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "adapter_spread.json")
    args = ap.parse_args(argv)
    from p2p_local.hypernet.checkpoint import load_checkpoint
    from p2p_local.train.run import load_init_adapter

    started = time.perf_counter()
    ckpt = load_checkpoint(args.checkpoint)
    net = ckpt.hypernet.eval()
    embeddings = np.load(args.data / "embeddings.npy")
    users = validation_users(args.data)
    mt_lora_adapter = load_init_adapter(str(args.mt_lora))
    if mt_lora_adapter is None:
        raise SystemExit("--mt-lora names no adapter")
    mt_lora = mt_lora_adapter.weights()
    rng = np.random.default_rng(args.seed)

    def weights(rows: list[int]) -> Any:
        return net(torch.from_numpy(embeddings[rows]).float())

    firsts = {task: weights([next(iter(u.values()))[0]]) for task, u in users.items()}
    if abs(mt_lora.scale - net(torch.from_numpy(embeddings[:1]).float()).scale) > 1e-6:
        raise SystemExit("MT-LoRA and the hypernetwork use different LoRA scales")
    report: dict[str, Any] = {"benchmark": "adapter_spread",
                              "checkpoint": ckpt.info.checkpoint_id, "mt_lora": str(args.mt_lora),
                              "data": str(args.data), "tasks": {}}
    with torch.no_grad():
        for task, per_user in users.items():
            ids = [u for u, (_, q) in per_user.items() if len(q) >= 2]
            own = weights([per_user[u][0] for u in ids])
            q1 = weights([per_user[u][1][0] for u in ids])
            q2 = weights([per_user[u][1][1] for u in ids])
            shift = 1 + int(rng.integers(0, len(ids) - 1))  # a derangement: no user is their own
            other = own.select(torch.roll(torch.arange(len(ids)), shift))
            others = [t for t in users if t != task]
            cross = [own.select(i).relative_distance(firsts[others[i % len(others)]])
                     for i in range(len(ids))]
            noise = rng.normal(size=(len(ids), embeddings.shape[1]))
            noise /= np.linalg.norm(noise, axis=1, keepdims=True)
            size = update_norm(own) / update_norm(mt_lora)
            dist = {
                "user_vs_other_user": own.relative_distance(other),
                "query_vs_other_query": q1.relative_distance(q2),
                "user_vs_own_query": own.relative_distance(q1),
                "user_vs_other_task": torch.cat(cross),
                "user_vs_random_vector": own.relative_distance(
                    net(torch.from_numpy(noise).float())),
                "user_vs_mt_lora": own.relative_distance(
                    mt_lora.select(torch.zeros(len(ids), dtype=torch.long))),
            }
            report["tasks"][task] = {"users": len(ids)} | {
                name: bootstrap(d.sqrt().numpy(), 10000, args.seed) for name, d in dist.items()
            } | {"size_vs_mt_lora": bootstrap(size.numpy(), 10000, args.seed)}
    write_report(report, "bench_adapter_spread.py", argv, started, args.out)
    for task, rows in report["tasks"].items():
        print(task, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
