"""The contrastive term of the trainer (``[optim] contrast_weight``): each training reply should
fit its own user's profile better than another user's of the same task. The donors, the hinge
and the objective are checked against plain forward passes of the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import EMB_DIM, tiny_config

from p2p_local.errors import ConfigError
from p2p_local.train.data import Example, TaskSampler, TrainData
from p2p_local.train.trainer import LmLoss, Trainer, contrast_hinge


def _data(n_users: int = 4) -> TrainData:
    """Two tasks of `n_users` users each (and one single-user task), a profile row per user."""
    rng = np.random.default_rng(0)
    examples, rows = [], []
    for task in ("alpha", "beta"):
        for u in range(n_users):
            rows.append(rng.normal(size=EMB_DIM))
            for k in range(2):
                examples.append(Example(
                    task=task, user_id=f"{task}{u}", prompt=f"{task} question {k} #{u}",
                    target=f"answer {u} {k} of {task}", split="train",
                    emb_user=len(rows) - 1,
                ))
    rows.append(rng.normal(size=EMB_DIM))
    examples.append(Example(task="solo", user_id="s0", prompt="alone", target="yes",
                            split="train", emb_user=len(rows) - 1))
    examples.append(Example(task="alpha", user_id="v0", prompt="held out", target="no",
                            split="val", emb_user=0))
    emb = np.stack(rows).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return TrainData(examples, emb, {"embedding_model": "random-test@000000000000"})


def _lm(ce_sums: list[float], tokens: list[int]) -> LmLoss:
    return LmLoss(torch.tensor(0.0), sum(tokens), torch.tensor(ce_sums),
                  torch.tensor(tokens), torch.zeros(len(tokens), 2))


def test_the_hinge_is_zero_once_the_own_profile_wins_by_the_margin() -> None:
    own = _lm([2.0, 6.0, 3.0], [2, 3, 1])      # per token: 1.0, 2.0, 3.0
    other = _lm([3.0, 5.7, 8.0], [2, 3, 2])    # per token: 1.5, 1.9, 4.0
    hinge = contrast_hinge(own, other, margin=0.2)
    assert hinge.tolist() == pytest.approx([0.0, 0.3, 0.0])


def test_donors_are_other_users_of_the_same_task_and_seeded() -> None:
    data = _data()
    train = data.split("train")
    sampler = TaskSampler(train, seed=3, mode="user")
    draws = sampler.global_batch(5, 32)
    donors = sampler.donor_rows(5, draws, salt=(0, 0, 0))
    owner = {ex.emb_user: (ex.task, ex.user_id) for ex in train}
    for d, row in zip(draws, donors, strict=True):
        ex = train[d.index]
        if ex.task == "solo":  # nobody else to borrow from: the own profile
            assert row == d.emb_row
        else:
            assert owner[row][0] == ex.task and owner[row][1] != ex.user_id
    assert donors == sampler.donor_rows(5, draws, salt=(0, 0, 0))
    assert donors != sampler.donor_rows(6, draws, salt=(0, 0, 0))


def _row_ce(trainer: Trainer, batch, rows: list[int]) -> torch.Tensor:
    """Plain CE per row over its target tokens, from a full forward pass with `rows`' LoRAs."""
    trainer.injector.set(trainer.trainable(trainer.embeddings[torch.as_tensor(rows)]))
    try:
        logits = trainer.base.model(input_ids=batch.input_ids,
                                    attention_mask=batch.attention_mask).logits
    finally:
        trainer.injector.clear()
    labels = batch.labels[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels.clamp(min=0), reduction="none")
    mask = (labels != -100).float()
    return (nll * mask).sum(dim=1) / mask.sum(dim=1)


def test_the_objective_adds_the_weighted_hinge_of_each_example(
        tmp_path, tiny_base, tiny_base_dir) -> None:
    data = _data()
    prepared = data.save(tmp_path / "data")
    weight, margin = 0.7, 5.0  # a margin this wide keeps every example's hinge active
    cfg = tiny_config(tmp_path / "run", prepared, tiny_base_dir, profile_mode="user",
                      max_steps=2, batch_size=6,
                      optim={"contrast_weight": weight, "contrast_margin": margin})
    trainer = Trainer(cfg, data, tiny_base)
    trainer.trainable.eval()  # no dropout: every pass sees the same LoRAs
    with_term = trainer.compute_gradients(0)
    grads_with = [p.grad.clone() for p in trainer.trainable.parameters() if p.grad is not None]
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.config = tiny_config(tmp_path / "plain", prepared, tiny_base_dir,
                                 profile_mode="user", max_steps=2, batch_size=6)
    plain = trainer.compute_gradients(0)
    grads_plain = [p.grad for p in trainer.trainable.parameters() if p.grad is not None]
    # the hinge reaches the hypernetwork's weights (its CE is not a detached figure)
    assert any(not torch.allclose(a, b) for a, b in zip(grads_with, grads_plain, strict=True))
    draws = trainer.sampler.micro_batch(0, batch_size=6, rank=0, world=1, micro=0, accum=1)
    donors = trainer.sampler.donor_rows(0, draws, salt=(0, 0, 0))
    with torch.no_grad():
        batch = trainer._batch(draws)
        own = _row_ce(trainer, batch, [d.emb_row for d in draws])
        other = _row_ce(trainer, batch, donors)
    trainer.close()
    expected = weight * torch.relu(margin + own - other).sum() / len(draws)
    assert with_term - plain == pytest.approx(float(expected), rel=1e-4)


@pytest.mark.parametrize(("run", "message"), [
    ({"mode": "mt_lora"}, "needs run.mode = 'p2p'"),
    ({"grad_checkpointing": True}, "grad_checkpointing = false"),
])
def test_the_term_refuses_runs_it_cannot_serve(tmp_path, run: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path, tmp_path, tmp_path, optim={"contrast_weight": 0.5}, **run)


def test_an_unset_term_leaves_fingerprints_as_they_were(tmp_path: Path) -> None:
    plain = tiny_config(tmp_path, tmp_path, tmp_path)
    unset = tiny_config(tmp_path, tmp_path, tmp_path,
                        optim={"contrast_weight": 0.0, "contrast_margin": 0.1})
    assert plain.fingerprint_sections("optim") == unset.fingerprint_sections("optim")
    assert "contrast_weight" not in plain.fingerprint_sections("optim")["optim"]
    changed = tiny_config(tmp_path, tmp_path, tmp_path, optim={"contrast_weight": 0.5})
    assert changed.fingerprint("optim") != plain.fingerprint("optim")
