"""The rating terms of the trainer: a CE over the rating scale and the expected absolute rating
error added to the loss (``[optim] rating_ce_weight``, ``rating_risk_weight``) and the greedy
rating MAE of the held-out evaluation, all read from the rating scale's tokens at the reply's
first position, checked against a plain forward pass of the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EMB_DIM, tiny_config

from p2p_local.train.data import Example, TrainData
from p2p_local.train.trainer import RatingScale, Trainer, rating_risk


def _rating_data(n_train: int = 4, n_val: int = 3) -> TrainData:
    """MovieLens-named users (a rating task of the registry) with ratings and one text task."""
    rng = np.random.default_rng(0)
    examples, rows = [], []
    for u in range(n_train + n_val):
        rows.append(rng.normal(size=EMB_DIM))
        split = "train" if u < n_train else "val"
        for k in range(2):
            examples.append(Example(
                task="movielens", user_id=f"m{u}", prompt=f"rate movie {k} #{u}",
                target=str(1 + (u + 2 * k) % 5), split=split, emb_user=len(rows) - 1,
            ))
        examples.append(Example(
            task="reply", user_id=f"r{u}", prompt=f"say hello #{u}", target="well met",
            split=split, emb_user=len(rows) - 1,
        ))
    emb = np.stack(rows).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return TrainData(examples, emb, {"embedding_model": "random-test@000000000000"})


def _trainer(tmp_path: Path, base, base_dir: Path, **optim) -> Trainer:
    data = _rating_data()
    cfg = tiny_config(tmp_path / "run", data.save(tmp_path / "data"), base_dir,
                      optim=optim, profile_mode="user", max_steps=2, batch_size=6)
    return Trainer(cfg, data, base)


def test_rating_risk_is_the_expected_absolute_error() -> None:
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.2, 0.2]])
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    gold = torch.tensor([2.0, 4.0])
    expected = [0.5 * 1, 0.1 * 3 + 0.2 * 2 + 0.3 * 1 + 0.2 * 1]
    assert rating_risk(probs, values, gold).tolist() == pytest.approx(expected)


def test_rating_scale_knows_rating_tasks_only(tiny_base) -> None:
    scale = RatingScale(tiny_base.tokenizer, ["movielens", "shakespeare", "reply"])
    assert list(scale.scales) == ["movielens"]
    ids, values = scale.scales["movielens"]
    assert [tiny_base.tokenizer.decode([i]) for i in ids] == ["1", "2", "3", "4", "5"]
    assert scale.gold("movielens", "4") == 4.0 and scale.gold("movielens", "7") is None
    assert scale.gold("reply", "4") is None


def _scale_ids(tokenizer) -> list[int]:
    return [tokenizer(str(k), add_special_tokens=False)["input_ids"][0] for k in range(1, 6)]


def _first_target_logits(trainer: Trainer, draws, split: str) -> torch.Tensor:
    """The logits before each row's first target token, from a full forward pass."""
    batch = trainer._batch(draws, split)
    rows = trainer.embeddings[torch.as_tensor(batch.emb_rows)]
    trainer.injector.set(trainer.trainable(rows))
    try:
        logits = trainer.base.model(input_ids=batch.input_ids,
                                    attention_mask=batch.attention_mask).logits
    finally:
        trainer.injector.clear()
    first = (batch.labels != -100).float().argmax(dim=1)
    return logits[torch.arange(len(draws)), first - 1]


def test_the_rating_terms_add_the_scale_ce_and_expected_error_of_each_rating_example(
        tmp_path, tiny_base, tiny_base_dir) -> None:
    w_ce, w_risk = 0.3, 0.7
    with_risk = _trainer(tmp_path / "risk", tiny_base, tiny_base_dir, rating_ce_weight=w_ce,
                         rating_risk_weight=w_risk)
    with_risk.trainable.eval()  # no dropout: both objectives see the same LoRAs
    torch.manual_seed(0)
    objective = with_risk.compute_gradients(0)
    draws = with_risk.sampler.micro_batch(0, batch_size=6, rank=0, world=1, micro=0, accum=1)
    with_risk.optimizer.zero_grad(set_to_none=True)
    with_risk.config = tiny_config(  # the same run without the term
        tmp_path / "plain", Path(with_risk.config.data.prepared), tiny_base_dir,
        profile_mode="user", max_steps=2, batch_size=6)
    plain = with_risk.compute_gradients(0)
    with torch.no_grad():
        logits = _first_target_logits(with_risk, draws, "train")
    with_risk.close()
    terms = []
    for i, d in enumerate(draws):
        ex = with_risk.train_examples[d.index]
        if ex.task == "movielens":
            probs = torch.softmax(logits[i, _scale_ids(with_risk.base.tokenizer)], dim=-1)
            gold = int(ex.target)
            risk = sum(float(p) * abs(k + 1 - gold) for k, p in enumerate(probs))
            terms.append(w_ce * -float(torch.log(probs[gold - 1])) + w_risk * risk)
    assert terms, "the batch has rating examples"
    assert objective - plain == pytest.approx(sum(terms) / len(draws), rel=1e-4)


def test_held_out_greedy_mae_matches_the_model_argmax(tmp_path, tiny_base, tiny_base_dir) -> None:
    trainer = _trainer(tmp_path, tiny_base, tiny_base_dir)
    val = trainer.evaluate()
    draws = trainer._val_draws()
    ids = _scale_ids(trainer.base.tokenizer)
    errors = []
    with torch.no_grad():
        logits = _first_target_logits(trainer, draws, "val")
    for i, d in enumerate(draws):
        ex = trainer.val_examples[d.index]
        if ex.task == "movielens":
            errors.append(abs(1 + int(logits[i, ids].argmax()) - float(ex.target)))
    trainer.close()
    assert errors and val["val_mae/movielens"] == pytest.approx(np.mean(errors))
    assert "val_mae_shuffled/movielens" in val and "val_mae/reply" not in val
