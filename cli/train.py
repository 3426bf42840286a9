"""The train command: ``p2p-local train --config FILE`` trains a hypernetwork (or an MT-LoRA /
OPPU LoRA) from a TOML config.

A thin shell over :func:`p2p_local.train.run.run_training`; the same run on several GPUs is
``accelerate launch ... -m p2p_local.train --config FILE`` (see the docs). torch and
transformers are imported inside the command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import JsonOpt, console, err_console


def train(
    config: Annotated[
        Path,
        typer.Option("--config", "-c", help="Training config (TOML); see "
                     "models/hypernets/configs/ for documented examples.",
                     exists=False, dir_okay=False),
    ],
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Override run.max_steps of the config.", min=1)
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="SECTION.KEY=VALUE",
                     help="Override one key of the config (repeatable), e.g. "
                     "--set optim.lr=2e-4 --set data.max_queries=3; the value is TOML."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue from the newest checkpoint in the run folder."),
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Override run.out_dir (the run folder).")
    ] = None,
    stop_after: Annotated[
        int | None,
        typer.Option("--stop-after", min=1,
                     help="Stop after this many steps of this call (a checkpoint is saved; "
                     "continue with --resume)."),
    ] = None,
    time_limit: Annotated[
        float | None,
        typer.Option("--time-limit", min=0.1,
                     help="Stop after this many minutes (checkpoint saved; continue with "
                     "--resume)."),
    ] = None,
    prepare_only: Annotated[
        bool,
        typer.Option("--prepare-only", help="Only build (and cache) the training data."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a P2P hypernetwork on many users' profiles (or the MT-LoRA / OPPU baselines).

    On several GPUs run the same thing through accelerate:
    accelerate launch --config_file ACCEL.yaml -m p2p_local.train --config FILE
    """
    from p2p_local.train.config import TrainConfig
    from p2p_local.train.run import run_training

    cfg = TrainConfig.load(config).with_overrides(
        max_steps=max_steps, out_dir=str(out) if out is not None else None,
        settings=settings or (),
    )

    def log(text: str) -> None:
        err_console.print(escape(text), highlight=False)

    result = run_training(
        cfg,
        resume=resume,
        stop_after=stop_after,
        time_limit_s=time_limit * 60 if time_limit else None,
        prepare_only=prepare_only,
        log=None if as_json else log,
    )
    if isinstance(result, Path):
        if as_json:
            console.print_json(json.dumps({"prepared": str(result)}))
        else:
            console.print(f"prepared data: {escape(str(result))}")
        return
    if as_json:
        data = {k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}
        console.print_json(json.dumps(data))
        return
    state = "finished" if result.completed else "stopped early (continue with --resume)"
    losses = []
    if result.final_train_loss is not None:
        losses.append(f"train loss {result.final_train_loss:.4f}")
    if result.final_val_ce is not None:
        losses.append(f"held-out CE {result.final_val_ce:.4f}")
    console.print(
        f"{state}: step {result.steps}, {result.wall_seconds / 60:.1f} min"
        + (f", {', '.join(losses)}" if losses else "")
    )
    console.print(f"result: {escape(str(result.result_path))}")
    console.print(f"metadata: {escape(str(result.metadata_path))}")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
