"""Resuming from a checkpoint continues the identical run."""

from __future__ import annotations

import json
from pathlib import Path

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
