"""Deployment cost: time to give one user personalized parameters, P2P vs OPPU (the P2P
paper's Figure 4), measured in one run on this machine.

    .venv/bin/python benchmarks/bench_deploy_cost.py [--task movielens] [--users 3]
        [--oppu-max-steps 32] [--checkpoint DIR] [--summaries]

For each of ``--users`` held-out users (random split of the task, seeded):

- P2P: build the per-user profile (statistics + retrieval; with ``--summaries`` also the LLM
  summary, reported separately), embed it, run the hypernetwork, and serialise the adapter as
  the GGUF bytes llama.cpp loads. Per-user time = profile + embedding + generation (+ export).
- OPPU: train a LoRA on the user's own history with the trainer's LoRA mode (one epoch, batch
  ``--oppu-batch``, capped at ``--oppu-max-steps`` steps; the cap only ever shortens OPPU, so
  the ratio is conservative). Per-user time = the training call's wall time.

Both pipelines are warmed up once on another user first (imports, first-call allocations).
The hypernetwork is the installed checkpoint, else ``--checkpoint``, else a randomly initialised
one of the default size (its cost is the same as a trained one's: timing only). Writes
``benchmarks/results/deploy_cost.json`` and ``deploy_cost.png`` (cumulative time against the
number of users, measured users plus a linear extrapolation). The load average is recorded:
other work on the machine slows both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _hypernet_dir(explicit: str | None, base_id: str, tmp: Path, base_model: Any
                  ) -> tuple[Path, str]:
    """The checkpoint to time: explicit, installed, or a random one (returns its kind)."""
    from p2p_local.adapter import find_checkpoint

    if explicit:
        return Path(explicit), "given"
    installed = find_checkpoint(None)
    if installed is not None:
        return installed, "installed"
    import torch

    from p2p_local.embedding import Embedder
    from p2p_local.hypernet.checkpoint import save_checkpoint
    from p2p_local.hypernet.model import HyperNetSettings, HyperNetwork
    from p2p_local.hypernet.targets import TargetSpec

    torch.manual_seed(0)
    net = HyperNetwork(HyperNetSettings(), TargetSpec.from_model(base_model))
    net.randomize_heads(seed=0)
    out = tmp / "hypernet"
    save_checkpoint(net, out, base_model=base_id, embedding_model=Embedder().model_id)
    return out, "random-init (timing only)"


def _p2p_user(env: Any, user: Any, summaries: bool) -> dict[str, float]:
    from p2p_local.export.gguf import gguf_adapter_bytes

    row: dict[str, float] = {}
    if summaries:
        t = time.perf_counter()
        env.summary(user)
        row["summary_s"] = time.perf_counter() - t
    t0 = time.perf_counter()
    text = env.profile(user, summary=summaries).text
    t1 = time.perf_counter()
    vector = env.embedder().embed([text])[0]
    t2 = time.perf_counter()
    adapter = env.adapter_for(vector)
    t3 = time.perf_counter()
    data = gguf_adapter_bytes(adapter)
    t4 = time.perf_counter()
    row.update(profile_s=t1 - t0, embed_s=t2 - t1, generate_s=t3 - t2, export_s=t4 - t3,
               adapter_bytes=len(data))
    row["p2p_s"] = row["profile_s"] + row["embed_s"] + row["generate_s"]
    return row


def _oppu_user(env: Any, user: Any) -> dict[str, float]:
    from p2p_local.baselines.oppu import OPPU

    method = OPPU(env)
    adapter, seconds, steps = method.train(user)
    del adapter
    from p2p_local.baselines.oppu import user_examples

    return {"oppu_s": seconds, "oppu_steps": steps,
            "history_examples": len(user_examples(env.spec, user))}


def plot(rows: list[dict[str, Any]], means: dict[str, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    horizon = max(100, n)
    xs = np.arange(1, horizon + 1)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for key, label, color in (("oppu_s", "OPPU (train a LoRA per user)", "tab:red"),
                              ("p2p_s", "P2P (profile embedding + hypernetwork)", "tab:blue")):
        measured = np.cumsum([r[key] for r in rows])
        ax.plot(np.arange(1, n + 1), measured, "o-", color=color, label=f"{label}, measured")
        ax.plot(xs, xs * means[key], "--", color=color, alpha=0.6,
                label=f"{means[key]:.3g} s / user, extrapolated")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of users")
    ax.set_ylabel("cumulative time to personalize (s)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="movielens")
    ap.add_argument("--users", type=int, default=3)
    ap.add_argument("--oppu-max-steps", type=int, default=32)
    ap.add_argument("--oppu-batch", type=int, default=4)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--summaries", action="store_true",
                    help="also write (and time) the LLM summary of each profile")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    import p2p_local
    from p2p_local.baselines import EvalEnv, MethodSettings
    from p2p_local.baselines.common import load_train_base
    from p2p_local.datasets import load_task
    from p2p_local.eval.harness import EvalSettings, select_users
    from p2p_local.train.models import model_id_for

    load_start = os.getloadavg()
    dataset = load_task(args.task, max_queries=3)
    selection = select_users(dataset, EvalSettings(data=args.task, split="random",
                                                   users=args.users + 1))
    users = selection.eval_users
    if len(users) < 2:
        print("need at least 2 held-out users (one warms up)", file=sys.stderr)
        return 1
    base_id = model_id_for("base")[1]
    with tempfile.TemporaryDirectory(prefix="p2p-deploy-") as tmp:
        train_base = load_train_base()
        ckpt, ckpt_kind = _hypernet_dir(args.checkpoint, base_id, Path(tmp), train_base.model)
        settings = MethodSettings(checkpoint=str(ckpt), oppu_max_steps=args.oppu_max_steps,
                                  oppu_batch_size=args.oppu_batch, summaries=args.summaries)
        backend = None
        if args.summaries:
            from p2p_local.registry import model_path
            from p2p_local.runtime.llamacpp import LlamaCppBackend

            backend = LlamaCppBackend(model_path("base"))
        env = EvalEnv(backend, dataset.spec, users, settings, train_base=train_base)
        env.checkpoint()
        warm, timed = users[0], users[1:]
        t = time.perf_counter()
        _p2p_user(env, warm, args.summaries)
        _oppu_user(env, warm)
        warmup = time.perf_counter() - t
        rows = []
        for i, user in enumerate(timed, 1):
            row = {"user": user.user_id, "history_items": len(user.history),
                   **_p2p_user(env, user, args.summaries), **_oppu_user(env, user)}
            rows.append(row)
            print(f"[{i}/{len(timed)}] {user.user_id}: P2P {row['p2p_s']:.3f} s, "
                  f"OPPU {row['oppu_s']:.1f} s ({row['oppu_steps']} steps)", flush=True)
    means = {k: float(np.mean([r[k] for r in rows]))
             for k in ("p2p_s", "oppu_s", "profile_s", "embed_s", "generate_s", "export_s")}
    if args.summaries:
        means["summary_s"] = float(np.mean([r["summary_s"] for r in rows]))
    result = {
        "task": args.task,
        "users_timed": len(rows),
        "p2p_seconds_per_user": means["p2p_s"],
        "oppu_seconds_per_user": means["oppu_s"],
        "speedup_p2p_over_oppu": means["oppu_s"] / means["p2p_s"],
        "target_speedup": 100,
        "means": means,
        "per_user": rows,
        "p2p": "per-user profile (statistics + BM25 items" + (" + LLM summary" if args.summaries
                                                            else "") + ") -> MiniLM embedding "
               "-> hypernetwork forward; GGUF export timed separately (export_s)",
        "oppu": {"epochs": 1, "batch_size": args.oppu_batch, "max_steps": args.oppu_max_steps,
                 "init": "fresh LoRA (the starting point does not change the time)",
                 "base_model": base_id, "precision": "fp32"},
        "checkpoint": ckpt_kind,
        "warmup_seconds": round(warmup, 2),
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "p2p_local": p2p_local.__version__,
        "command": "python benchmarks/bench_deploy_cost.py " + " ".join(argv or sys.argv[1:]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "deploy_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    title = (f"{args.task}: P2P {means['p2p_s']:.3g} s vs OPPU {means['oppu_s']:.3g} s per user "
             f"({result['speedup_p2p_over_oppu']:.0f}x), {result['hardware']}")
    plot(rows, means, args.out / "deploy_cost.png", title)
    print(json.dumps({k: result[k] for k in ("p2p_seconds_per_user", "oppu_seconds_per_user",
                                             "speedup_p2p_over_oppu")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
