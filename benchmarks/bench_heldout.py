"""Held-out loss of a hypernetwork checkpoint, per task: own profile vs another user's.

    .venv/bin/python benchmarks/bench_heldout.py --checkpoint runs/p2p-cpu-default-v3/hypernet \\
        [--config models/hypernets/configs/cpu_default.toml] [--examples 400] [--prepared DIR]

Runs the trainer's held-out evaluation (``Trainer.evaluate``: plain CE on the reply tokens of
validation users' examples, once with their own profile and once with another user's of the same
task; on rating tasks also the greedy rating's MAE) for a finished checkpoint, with more
examples than training logs (``--examples``). The data is the config's prepared training data
(``--prepared`` to name the folder). Writes
``benchmarks/results/heldout_<checkpoint id>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--config", type=Path,
                    default=Path("models/hypernets/configs/cpu_default.toml"))
    ap.add_argument("--examples", type=int, default=400, help="held-out examples to score")
    ap.add_argument("--prepared", type=Path, default=None,
                    help="the prepared training data (default: the config's, in the cache)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import tempfile

    from p2p_local.hypernet.checkpoint import read_checkpoint_info
    from p2p_local.train import profiles_cache
    from p2p_local.train.config import TrainConfig
    from p2p_local.train.data import TrainData
    from p2p_local.train.models import load_base
    from p2p_local.train.trainer import Trainer

    t0 = time.perf_counter()
    info = read_checkpoint_info(args.checkpoint)
    config = TrainConfig.load(args.config)
    prepared = args.prepared or profiles_cache.prepared_dir(config)
    with tempfile.TemporaryDirectory() as scratch:
        config = replace(
            config,
            # the checkpoint's weights as they are (a shared LoRA's starting point is in them)
            run=replace(config.run, init_from=str(args.checkpoint), init_shared="",
                        out_dir=scratch, progress=False),
            data=replace(config.data, max_val_examples=args.examples, prepared=str(prepared)),
        )
        trainer = Trainer(config, TrainData.load(prepared), load_base(config.model.base))
        try:
            val = trainer.evaluate()
        finally:
            trainer.close()
    report = {
        "checkpoint": str(args.checkpoint), "checkpoint_id": info.checkpoint_id,
        "config": str(args.config), "prepared": str(prepared), "examples": args.examples,
        "held_out": val, "seconds": round(time.perf_counter() - t0, 1),
    }
    out = args.out or RESULTS / f"heldout_{info.checkpoint_id}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
