"""Cost of one training step of the default recipe (real base model, real prepared data).

    .venv/bin/python benchmarks/bench_train_step.py [--steps 8] [--batch-size N]
        [--config models/hypernets/configs/cpu_default.toml] [--grad-checkpointing]

Runs the trainer for ``--steps`` + 1 steps (the first, which tokenises and warms up, is not
counted) on the config's prepared data (prepared first if missing: that can take long, see
``--prepare-only`` of ``p2p-local train``), with held-out evaluation and intermediate
checkpoints off. Reports seconds per optimizer step (median, mean, min, max), target tokens per
step, and the 1-minute load average before and after (these machines are shared: a load above
the core count inflates the numbers). Writes ``benchmarks/results/train_step.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train_step.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "models/hypernets/configs/cpu_default.toml"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    import torch

    from p2p_local.train import profiles_cache
    from p2p_local.train.config import TrainConfig
    from p2p_local.train.data import TrainData
    from p2p_local.train.models import load_base
    from p2p_local.train.trainer import Trainer

    config = TrainConfig.load(args.config)
    data_dir = (Path(config.data.prepared) if config.data.prepared
                else profiles_cache.prepare(config, log=print))
    data = TrainData.load(data_dir)
    t0 = time.perf_counter()
    base = load_base(config.model.base)
    load_s = time.perf_counter() - t0
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        run = replace(
            config.run, out_dir=tmp, max_steps=args.steps + 1, log_every=1, eval_every=0,
            checkpoint_every=0, progress=False,
            batch_size=args.batch_size or config.run.batch_size,
            grad_checkpointing=args.grad_checkpointing or config.run.grad_checkpointing,
        )
        cfg = replace(config, run=run)
        trainer = Trainer(cfg, data, base)
        trainer.fit()
        trainer.close()
        rows = [json.loads(x) for x in (Path(tmp) / "loss.jsonl").read_text().splitlines()]
    load_after = os.getloadavg()[0]
    steps = [r for r in rows if "loss" in r][1:]
    seconds = [r["seconds"] for r in steps]
    tokens = [r["tokens"] for r in steps]
    result = {
        "benchmark": "train_step",
        "config": str(Path(args.config).resolve().relative_to(ROOT))
        if Path(args.config).resolve().is_relative_to(ROOT) else args.config,
        "mode": cfg.run.mode,
        "base_model": base.model_id,
        "global_batch": trainer.global_batch,
        "max_seq_len": cfg.run.max_seq_len,
        "grad_checkpointing": cfg.run.grad_checkpointing,
        "steps_timed": len(seconds),
        "seconds_per_step_median": statistics.median(seconds),
        "seconds_per_step_mean": statistics.fmean(seconds),
        "seconds_per_step_min": min(seconds),
        "seconds_per_step_max": max(seconds),
        "target_tokens_per_step_mean": statistics.fmean(tokens),
        "base_load_seconds": round(load_s, 1),
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_after,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
