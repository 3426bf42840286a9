"""The anchor (``[optim] anchor_tasks``, ``anchor_weight``): a run started from a checkpoint
trains only the other tasks, and holds the anchor tasks' adapters to the starting network's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from p2p_local.errors import ConfigError, TrainingError
from p2p_local.train.data import TrainData
from p2p_local.train.models import load_base
from p2p_local.train.trainer import Trainer

ANCHORS = ["reply", "complete"]  # conftest's tasks are rate, reply and complete


@pytest.fixture(scope="module")
def start_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path,
              tiny_base_dir: Path) -> Path:
    """A short ordinary run: the checkpoint the anchored runs start from."""
    cfg = tiny_config(tmp_path_factory.mktemp("start"), tiny_data_dir, tiny_base_dir,
                      max_steps=4)
    trainer = Trainer(cfg, TrainData.load(tiny_data_dir), load_base(str(tiny_base_dir)))
    try:
        return trainer.fit().result_path
    finally:
        trainer.close()


def _anchored(out: Path, data_dir: Path, base_dir: Path, start: Path, weight: float,
              **run) -> Trainer:
    cfg = tiny_config(out, data_dir, base_dir, init_from=str(start),
                      optim={"anchor_tasks": ANCHORS, "anchor_weight": weight}, **run)
    return Trainer(cfg, TrainData.load(data_dir), load_base(str(base_dir)))


def _drift(trainer: Trainer) -> float:
    """Mean relative distance of the anchor tasks' training adapters from the start's."""
    with torch.no_grad():
        return float(trainer._anchor_distances(trainer.trainable, trainer.anchor_rows).mean())


def test_anchor_tasks_are_not_trained_on(tmp_path, tiny_data_dir, tiny_base_dir,
                                         start_dir) -> None:
    trainer = _anchored(tmp_path, tiny_data_dir, tiny_base_dir, start_dir, 1.0)
    try:
        drawn = {trainer.train_examples[d.index].task
                 for step in range(20) for d in trainer.sampler.global_batch(step, 8)}
        assert drawn == {"rate"}
        data = TrainData.load(tiny_data_dir)
        anchor_train = {r for ex in data.split("train") if ex.task in ANCHORS
                        for r in (ex.emb_user, ex.emb_query)}
        assert set(trainer.anchor_rows) == anchor_train
        # it starts where it started: no dropout in the anchor, even while training
        assert trainer.trainable.training
        with torch.no_grad():
            start = float(trainer._anchor_distances(trainer.model, trainer.anchor_rows).mean())
        assert start == pytest.approx(0.0, abs=1e-6)
        assert trainer.trainable.training
    finally:
        trainer.close()


def test_the_objective_adds_the_weighted_distance(tmp_path, tiny_data_dir, tiny_base_dir,
                                                  start_dir) -> None:
    light = _anchored(tmp_path / "a", tiny_data_dir, tiny_base_dir, start_dir, 1.0, batch_size=4)
    heavy = _anchored(tmp_path / "b", tiny_data_dir, tiny_base_dir, start_dir, 3.0, batch_size=4)
    try:
        with torch.no_grad():  # the same moved network in both, so the distance is not zero
            for p, q in zip(light.trainable.parameters(), heavy.trainable.parameters(),
                            strict=True):
                p.add_(0.05 * torch.randn_like(p))
                q.copy_(p)
        for t in (light, heavy):
            t.trainable.eval()  # no dropout: both passes see the same adapters
        gap = heavy.compute_gradients(0) - light.compute_gradients(0)
        rows = light._anchor_draw(0, (0, 0))
        assert rows == heavy._anchor_draw(0, (0, 0))
        assert all(r in light.anchor_rows for r in rows)
        with torch.no_grad():
            distance = float(light._anchor_distances(light.trainable, rows).mean())
        assert distance > 0.01
        assert gap == pytest.approx(2.0 * distance, rel=1e-4)
    finally:
        light.close()
        heavy.close()


def test_a_heavy_anchor_holds_the_other_tasks(tmp_path, tiny_data_dir, tiny_base_dir,
                                              start_dir) -> None:
    drift = {}
    for weight in (1e-6, 1e3):
        trainer = _anchored(tmp_path / str(weight), tiny_data_dir, tiny_base_dir, start_dir,
                            weight, max_steps=12, eval_every=12)
        try:
            result = trainer.fit()
            drift[weight] = _drift(trainer)
        finally:
            trainer.close()
        assert result.completed
    assert drift[1e-6] > 0.05  # trained on "rate" alone, the shared network moves
    assert drift[1e3] < drift[1e-6] / 10
    log = (tmp_path / "1000.0" / "loss.jsonl").read_text()
    assert '"val_anchor"' in log  # the held-out report says how far the anchor moved


@pytest.mark.parametrize(("optim", "run", "message"), [
    ({"anchor_tasks": ["reply"], "anchor_weight": 1.0}, {}, "init_from"),
    ({"anchor_tasks": ["reply"]}, {"init_from": "x"}, "go together"),
    ({"anchor_weight": 1.0}, {"init_from": "x"}, "go together"),
    ({"anchor_tasks": ["reply"], "anchor_weight": 1.0}, {"init_from": "x", "mode": "mt_lora"},
     "p2p"),
])
def test_the_anchor_refuses_runs_it_cannot_serve(tmp_path, optim: dict, run: dict,
                                                 message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path, tmp_path, tmp_path, optim=optim, **run)


def test_the_anchor_must_leave_tasks_to_train() -> None:
    from p2p_local.train.config import TrainConfig

    with pytest.raises(ConfigError, match="some, not all"):
        TrainConfig.from_dict({
            "run": {"init_from": "x"},
            "optim": {"anchor_tasks": ["movielens", "office"], "anchor_weight": 1.0},
            "data": {"tasks": ["movielens", "office"]},
        })


def test_anchor_tasks_missing_from_the_data_are_refused(tmp_path, tiny_data_dir,
                                                        tiny_base_dir, start_dir) -> None:
    cfg = tiny_config(tmp_path, tiny_data_dir, tiny_base_dir, init_from=str(start_dir),
                      optim={"anchor_tasks": ["poetry"], "anchor_weight": 1.0})
    with pytest.raises(TrainingError, match="no training profiles"):
        Trainer(cfg, TrainData.load(tiny_data_dir), load_base(str(tiny_base_dir)))


def test_an_unset_anchor_leaves_fingerprints_as_they_were(tmp_path: Path) -> None:
    plain = tiny_config(tmp_path, tmp_path, tmp_path)
    unset = tiny_config(tmp_path, tmp_path, tmp_path,
                        optim={"anchor_tasks": [], "anchor_weight": 0.0})
    assert plain.fingerprint_sections("optim") == unset.fingerprint_sections("optim")
    changed = tiny_config(tmp_path, tmp_path, tmp_path, init_from="x",
                          optim={"anchor_tasks": ["reply"], "anchor_weight": 1.0})
    assert changed.fingerprint("optim") != plain.fingerprint("optim")
