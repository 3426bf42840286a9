"""One training run from a config: the entry point of ``p2p-local train`` and of
``python -m p2p_local.train`` (which ``accelerate launch`` runs on every process).

Owns the order of things: create the accelerator, prepare the data on the main process (the
others wait, then read the same folder), load the base model, build the :class:`Trainer`,
fit. Also :func:`train_user_lora`, the OPPU baseline's programmatic entry (one user's examples
in, a LoRA out). Does not own the loop (trainer.py) or data preparation (profiles_cache.py).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from p2p_local.adapter import LoraAdapter
from p2p_local.errors import ConfigError, TrainingError
from p2p_local.train.config import TrainConfig
from p2p_local.train.data import Example, TrainData
from p2p_local.train.models import BaseModel, PlainLora, load_base
from p2p_local.train.trainer import Trainer, TrainResult, make_accelerator

Log = Callable[[str], None]


def load_init_adapter(spec: str) -> LoraAdapter | None:
    """The starting LoRA of an OPPU run: an MT-LoRA run folder, or a PEFT adapter folder."""
    if not spec:
        return None
    from p2p_local.train.models import load_lora_folder

    return load_lora_folder(spec, "[oppu] init")


def run_training(
    config: TrainConfig,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    time_limit_s: float | None = None,
    prepare_only: bool = False,
    base: BaseModel | None = None,
    log: Log | None = None,
) -> TrainResult | Path:
    """Prepare the data (cached) and train; with ``prepare_only`` return the data folder."""
    from p2p_local.train import profiles_cache

    acc = make_accelerator(config)
    say = log if (log is not None and acc.is_main_process) else (lambda _text: None)
    if config.run.mode == "oppu":  # the user's own history: no profiles to prepare
        if prepare_only:
            raise ConfigError("--prepare-only applies to the p2p and mt_lora modes")
        data = profiles_cache.oppu_data(config)
    else:
        if config.data.prepared:
            data_dir = Path(config.data.prepared).expanduser()
        else:
            data_dir = profiles_cache.prepared_dir(config)
            if acc.is_main_process:
                profiles_cache.prepare(config, log=say)
            acc.wait_for_everyone()
        if prepare_only:
            return data_dir
        data = TrainData.load(data_dir)
        data.meta["prepared_dir"] = str(data_dir)
        say(f"data: {data_dir}")
    if base is None:
        say(f"loading base model {config.model.base!r}")
        base = load_base(config.model.base)
    init = load_init_adapter(config.oppu.init) if config.run.mode == "oppu" else None
    trainer = Trainer(config, data, base, init=init, accelerator=acc, log=say)
    try:
        return trainer.fit(resume=resume, stop_after=stop_after, time_limit_s=time_limit_s)
    finally:
        trainer.close()


def train_user_lora(
    config: TrainConfig,
    examples: Sequence[Example],
    base: BaseModel,
    *,
    init: LoraAdapter | None = None,
    out_dir: Path | None = None,
    log: Log | None = None,
) -> LoraAdapter:
    """Train one plain LoRA on ``examples`` (OPPU: one user's own history), from ``init``.

    Uses ``config``'s [run] / [optim] / [model] settings with ``mode = "oppu"``; the run's
    files go to ``out_dir`` (a temporary folder when None). Returns the trained adapter.
    """
    if not examples:
        raise TrainingError("no examples to train the user's LoRA on")
    train = [replace(ex, split="train", emb_user=-1, emb_query=-1) for ex in examples]
    data = TrainData(train, np.zeros((1, 1), dtype=np.float32), {"embedding_model": "none"})
    with tempfile.TemporaryDirectory(prefix="p2p-oppu-") as tmp:
        target = Path(out_dir) if out_dir is not None else Path(tmp)
        cfg = replace(
            config,
            run=replace(config.run, mode="mt_lora", out_dir=str(target), eval_every=0,
                        checkpoint_every=0, progress=False),
            profile=replace(config.profile, mode="user"),
        )
        trainer = Trainer(cfg, data, base, init=init, log=log)
        try:
            trainer.fit()
            trainable = trainer.trainable
            assert isinstance(trainable, PlainLora)
            return trainable.to_adapter(base.model_id)
        finally:
            trainer.close()
