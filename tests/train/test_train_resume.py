"""Resuming from a checkpoint continues the identical run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from p2p_local.hypernet.checkpoint import load_checkpoint
from p2p_local.train.data import TrainData
from p2p_local.train.models import load_base
from p2p_local.train.trainer import Trainer


def _run(out: Path, data_dir: Path, base_dir: Path, *, resume: bool = False,
         stop_after: int | None = None):
    cfg = tiny_config(out, data_dir, base_dir, max_steps=8, eval_every=4, checkpoint_every=3,
                      log_every=2)
    trainer = Trainer(cfg, TrainData.load(data_dir), load_base(str(base_dir)))
    try:
        return trainer.fit(resume=resume, stop_after=stop_after)
    finally:
        trainer.close()


def _log(out: Path) -> list[dict]:
    rows = [json.loads(x) for x in (out / "loss.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_resume_continues_the_identical_run(tmp_path, tiny_data_dir, tiny_base_dir) -> None:
    whole = _run(tmp_path / "whole", tiny_data_dir, tiny_base_dir)

    parted = tmp_path / "parted"
    # stop between checkpoints and inside a log window: both must continue seamlessly
    first = _run(parted, tiny_data_dir, tiny_base_dir, stop_after=5)
    assert not first.completed and first.steps == 5
    meta = json.loads((parted / "training.json").read_text())
    assert meta["completed"] is False and meta["steps"] == 5
    second = _run(parted, tiny_data_dir, tiny_base_dir, resume=True)
    assert second.completed and second.steps == 8

    a = load_checkpoint(whole.result_path).hypernet.state_dict()
    b = load_checkpoint(second.result_path).hypernet.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert _log(tmp_path / "whole") == _log(parted)
    assert second.final_val_ce == whole.final_val_ce


def test_resume_without_a_checkpoint_starts_fresh(tmp_path, tiny_data_dir, tiny_base_dir) -> None:
    result = _run(tmp_path / "new", tiny_data_dir, tiny_base_dir, resume=True, stop_after=2)
    assert result.steps == 2 and not result.completed


def test_sigterm_stops_at_a_step_with_a_checkpoint(tmp_path, tiny_data_dir, tiny_base_dir) -> None:
    import os
    import signal
    import threading

    from p2p_local.train.state import latest_checkpoint, read_state

    cfg = tiny_config(tmp_path / "run", tiny_data_dir, tiny_base_dir, max_steps=100000,
                      log_every=1000)
    trainer = Trainer(cfg, TrainData.load(tiny_data_dir), load_base(str(tiny_base_dir)))
    previous = signal.getsignal(signal.SIGTERM)
    threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    try:
        result = trainer.fit()
    finally:
        trainer.close()
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is put back
    assert not result.completed and 0 < result.steps < 100000
    assert read_state(latest_checkpoint(tmp_path / "run")).step == result.steps
    assert json.loads((tmp_path / "run" / "training.json").read_text())["steps"] == result.steps


def test_init_from_starts_a_new_run_from_a_checkpoint(
    tmp_path, tiny_data_dir, tiny_base_dir
) -> None:
    from p2p_local.errors import CheckpointError, ConfigError
    from p2p_local.train.models import build_trainable, targets_for

    first = _run(tmp_path / "first", tiny_data_dir, tiny_base_dir)
    trained = load_checkpoint(first.result_path).hypernet.state_dict()

    base = load_base(str(tiny_base_dir))
    cfg = tiny_config(tmp_path / "second", tiny_data_dir, tiny_base_dir,
                      init_from=str(first.result_path))
    data = TrainData.load(tiny_data_dir)
    start = build_trainable(cfg, targets_for(cfg, base), data.embedding_dim,
                            base_model_id=base.model_id).state_dict()
    assert start.keys() == trained.keys()
    assert all(torch.equal(start[k], trained[k]) for k in trained)
    fresh = build_trainable(tiny_config(tmp_path / "x", tiny_data_dir, tiny_base_dir),
                            targets_for(cfg, base), data.embedding_dim).state_dict()
    assert not all(torch.equal(fresh[k], trained[k]) for k in trained)

    with pytest.raises(CheckpointError, match="base model"):
        build_trainable(cfg, targets_for(cfg, base), data.embedding_dim,
                        base_model_id="another-model")
    with pytest.raises(ConfigError, match="p2p"):
        tiny_config(tmp_path / "y", tiny_data_dir, tiny_base_dir, mode="mt_lora",
                    init_from=str(first.result_path))


def _fit(cfg, data_dir: Path, base_dir: Path):
    trainer = Trainer(cfg, TrainData.load(data_dir), load_base(str(base_dir)))
    try:
        return trainer.fit()
    finally:
        trainer.close()


def test_init_shared_starts_every_user_at_the_mt_lora(tmp_path, tiny_data_dir,
                                                      tiny_base_dir) -> None:
    import dataclasses

    from p2p_local.errors import ConfigError
    from p2p_local.export.peft import load_peft
    from p2p_local.train.models import build_trainable, targets_for

    mt = _fit(tiny_config(tmp_path / "mt", tiny_data_dir, tiny_base_dir, mode="mt_lora"),
              tiny_data_dir, tiny_base_dir)
    mt_lora = load_peft(mt.result_path)
    assert any(torch.count_nonzero(b) for b in mt_lora.b.values())  # trained: B moved off zero

    cfg = tiny_config(tmp_path / "p2p", tiny_data_dir, tiny_base_dir)
    cfg = dataclasses.replace(cfg, hypernet={**cfg.hypernet, "shared_lora": True},
                              run=dataclasses.replace(cfg.run, init_shared=str(tmp_path / "mt")))
    base = load_base(str(tiny_base_dir))
    data = TrainData.load(tiny_data_dir)
    net = build_trainable(cfg, targets_for(cfg, base), data.embedding_dim)
    net.eval()
    w = net(torch.randn(3, data.embedding_dim))
    for name in mt_lora.a:  # every user gets exactly the MT-LoRA before training
        for user in range(3):
            assert torch.allclose(w.a[name][user], mt_lora.a[name], atol=1e-7)
            assert torch.allclose(w.b[name][user], mt_lora.b[name], atol=1e-7)

    result = _fit(cfg, tiny_data_dir, tiny_base_dir)  # trains, saves and reloads
    trained = load_checkpoint(result.result_path).hypernet
    assert trained.settings.shared_lora
    moved = trained(torch.randn(2, data.embedding_dim))
    assert not torch.allclose(moved.b["q_proj"][0], mt_lora.b["q_proj"])

    with pytest.raises(ConfigError, match="shared_lora = true"):
        build_trainable(tiny_config(tmp_path / "z", tiny_data_dir, tiny_base_dir,
                                    init_shared=str(tmp_path / "mt")),
                        targets_for(cfg, base), data.embedding_dim)
    with pytest.raises(ConfigError, match="fresh hypernetwork"):
        tiny_config(tmp_path / "y", tiny_data_dir, tiny_base_dir, mode="mt_lora",
                    init_shared=str(tmp_path / "mt"))
