"""Resumable training checkpoints.

Owns the folder ``<out_dir>/checkpoints/step-XXXXXXXX/``: the trainable's weights, the
optimizer and scheduler states, each process's RNG states (python, numpy, torch, CUDA) and
``state.json`` (step, wall time, global batch, config fingerprint), written last so that a
folder without it is an unfinished write and is ignored. The data order needs no state: batches
are a function of the seed and the step (data.py). Does not own the final result (the
hypernetwork checkpoint is written by ``hypernet/checkpoint.py``).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from p2p_local.errors import TrainingError

STATE_FILE = "state.json"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


@dataclass(frozen=True)
class SavedState:
    """What ``state.json`` records."""

    step: int
    wall_seconds: float
    global_batch: int
    world_size: int
    fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def checkpoints_dir(out_dir: Path) -> Path:
    return Path(out_dir) / "checkpoints"


def step_dir(out_dir: Path, step: int) -> Path:
    return checkpoints_dir(out_dir) / f"step-{step:08d}"


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    root = checkpoints_dir(out_dir)
    if not root.is_dir():
        return None
    done = [
        p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()
    ]
    return max(done, key=lambda p: p.name) if done else None


def rng_state() -> dict[str, Any]:
    np_state: Any = np.random.get_state()  # a legacy tuple ("MT19937", keys, pos, ...)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, keys_np, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys_np, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(
    directory: Path,
    *,
    trainable: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    state: SavedState,
    rank: int,
    is_main: bool,
    process_state: dict[str, Any] | None = None,
) -> None:
    """Write one process's share (each writes its RNG and ``process_state``, e.g. partial
    sums of the log window; the main process the rest).

    Call on every process, then synchronise, then :func:`finish_checkpoint` on the main one.
    """
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({**rng_state(), "process": process_state or {}}, directory / f"rng-{rank}.pt")
    if is_main:
        weights = {k: v.detach().cpu().clone() for k, v in trainable.state_dict().items()}
        torch.save(weights, directory / "trainable.pt")
        torch.save(optimizer.state_dict(), directory / "optimizer.pt")
        torch.save(scheduler.state_dict(), directory / "scheduler.pt")


def finish_checkpoint(directory: Path, state: SavedState, keep: int) -> None:
    """Mark ``directory`` complete and delete all but the ``keep`` newest checkpoints."""
    tmp = directory / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state.to_dict(), indent=2) + "\n")
    os.replace(tmp, directory / STATE_FILE)
    root = directory.parent
    done = sorted(p for p in root.iterdir() if _STEP_DIR.match(p.name))
    complete = [p for p in done if (p / STATE_FILE).is_file()]
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for partial in done:  # unfinished writes older than this one
        if partial not in complete and partial.name < directory.name:
            shutil.rmtree(partial, ignore_errors=True)


def read_state(directory: Path) -> SavedState:
    try:
        data = json.loads((directory / STATE_FILE).read_text())
        return SavedState(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise TrainingError(f"checkpoint {directory} is unreadable ({exc}): delete it") from None


def load_training_state(
    directory: Path,
    *,
    trainable: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    rank: int,
) -> dict[str, Any] | None:
    """Restore weights, optimizer, scheduler and this process's RNG states; return the
    process state saved with them.

    Returns None when this process has no RNG file (the run had fewer processes): its
    random streams then start afresh, the rest is still exact.
    """
    weights = torch.load(directory / "trainable.pt", map_location="cpu", weights_only=True)
    trainable.load_state_dict(weights, strict=True)
    optimizer.load_state_dict(
        torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=True)
    )
    scheduler.load_state_dict(
        torch.load(directory / "scheduler.pt", map_location="cpu", weights_only=True)
    )
    rng_file = directory / f"rng-{rank}.pt"
    if not rng_file.is_file():
        return None
    saved = torch.load(rng_file, map_location="cpu", weights_only=True)
    set_rng_state(saved)
    return dict(saved.get("process", {}))
