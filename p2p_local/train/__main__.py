"""``python -m p2p_local.train --config FILE``: the entry ``accelerate launch`` runs.

The same options as ``p2p-local train``; each launched process runs this module, and
``accelerate`` (through environment variables it sets) makes them one DDP group.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from p2p_local.errors import P2PError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m p2p_local.train",
        description="Train a P2P hypernetwork (or an MT-LoRA / OPPU LoRA) from a TOML config.",
    )
    parser.add_argument("--config", required=True, help="the training TOML file")
    parser.add_argument("--max-steps", type=int, default=None, help="override [run] max_steps")
    parser.add_argument("--out", default=None, help="override [run] out_dir")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        dest="settings", help="override one key of the config (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop (with a checkpoint) after this many steps of this call")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="stop (with a checkpoint) after this many minutes")
    parser.add_argument("--prepare-only", action="store_true",
                        help="only prepare (and cache) the training data")
    args = parser.parse_args(argv)

    from p2p_local.train.config import TrainConfig
    from p2p_local.train.run import run_training

    try:
        config = TrainConfig.load(args.config).with_overrides(
            max_steps=args.max_steps, out_dir=args.out, settings=args.settings
        )
        result = run_training(
            config,
            resume=args.resume,
            stop_after=args.stop_after,
            time_limit_s=args.time_limit * 60 if args.time_limit else None,
            prepare_only=args.prepare_only,
            log=lambda text: print(text, flush=True),
        )
    except P2PError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(result if isinstance(result, Path) else f"result: {result.result_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
