"""Training: the P2P hypernetwork (and the MT-LoRA / OPPU baselines) over many real users.

Modules, in the order a run uses them:

- ``config``: the TOML configuration (:class:`TrainConfig`);
- ``profiles_cache``: tasks -> user splits -> profiles (+ summaries) -> embeddings -> examples,
  cached under ``cache_dir()/train``;
- ``data``: examples, chat-template tokenisation with the loss on the target only, batching,
  sqrt-size task sampling;
- ``models``: the frozen base model, the plain LoRA of the baselines;
- ``trainer``: the loop (accelerate: one process or DDP), held-out loss, results;
- ``state`` / ``metrics``: resumable checkpoints, the loss log and picture;
- ``run``: config -> data -> trainer (``p2p-local train`` and ``python -m p2p_local.train``).

Nothing in the personalization path imports this package. Heavy imports happen on use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from p2p_local.train.config import TrainConfig
    from p2p_local.train.run import run_training, train_user_lora
    from p2p_local.train.trainer import Trainer, TrainResult

__all__ = ["TrainConfig", "Trainer", "TrainResult", "run_training", "train_user_lora"]

_WHERE = {
    "TrainConfig": "p2p_local.train.config",
    "Trainer": "p2p_local.train.trainer",
    "TrainResult": "p2p_local.train.trainer",
    "run_training": "p2p_local.train.run",
    "train_user_lora": "p2p_local.train.run",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'p2p_local.train' has no attribute {name!r}")
