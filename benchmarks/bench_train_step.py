"""Cost of one training step of the default recipe (real base model, real prepared data).

    .venv/bin/python benchmarks/bench_train_step.py [--steps 4] [--budgets 0,512]
        [--config models/hypernets/configs/cpu_default.toml]

Times ``Trainer.train_step`` (forward, backward, clip, AdamW) on the config's prepared data
(prepared first if missing, which can take long: see ``p2p-local train --prepare-only``), after
one warm-up step, for each ``max_batch_tokens`` budget in turn on the same steps (0 = one padded
batch; N = length-sorted pieces of at most N padded tokens). Reports wall seconds and this
process's CPU seconds per step: the CPU seconds are what to compare when the machine is shared
(wall time then depends on the other processes; the 1-minute load average is recorded).
Writes ``benchmarks/results/train_step.json``.
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
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--budgets", default="0,512", help="max_batch_tokens values to compare")
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
    budgets = [int(b) for b in args.budgets.split(",")]
    loads = [os.getloadavg()[0]]
    timings: dict[int, dict[str, list[float]]] = {b: {"wall": [], "cpu": []} for b in budgets}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        cfg = replace(config, run=replace(config.run, out_dir=tmp, progress=False))
        trainer = Trainer(cfg, data, base)
        trainer.train_step(0)  # warm-up (tokeniser, allocator)
        for step in range(1, args.steps + 1):
            for budget in budgets:  # interleaved: every budget sees the same load
                trainer.config = replace(cfg, run=replace(cfg.run, max_batch_tokens=budget))
                wall, cpu = time.perf_counter(), time.process_time()
                trainer.train_step(step)
                timings[budget]["wall"].append(time.perf_counter() - wall)
                timings[budget]["cpu"].append(time.process_time() - cpu)
            loads.append(os.getloadavg()[0])
        trainer.close()
    result = {
        "benchmark": "train_step",
        "config": os.path.relpath(args.config, ROOT),
        "mode": cfg.run.mode,
        "base_model": base.model_id,
        "global_batch": trainer.global_batch,
        "max_seq_len": cfg.run.max_seq_len,
        "steps_timed": args.steps,
        "by_max_batch_tokens": {
            str(b): {
                "wall_seconds_per_step_median": statistics.median(t["wall"]),
                "cpu_seconds_per_step_median": statistics.median(t["cpu"]),
                "wall_seconds": [round(x, 2) for x in t["wall"]],
                "cpu_seconds": [round(x, 2) for x in t["cpu"]],
            }
            for b, t in timings.items()
        },
        "base_load_seconds": round(load_s, 1),
        "load_average_1min": loads,
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
