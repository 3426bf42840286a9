"""The training loop on a tiny random llama: it learns, gradients reach the whole
hypernetwork, batches mix users, the baselines' plain LoRA shares the loop, results are written."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_data, tiny_config

from p2p_local.errors import TrainingError
from p2p_local.train.data import Example, TrainData
from p2p_local.train.trainer import Trainer


def _trainer(tmp_path: Path, data: TrainData, base, tiny_base_dir: Path, **settings) -> Trainer:
    data_dir = data.save(tmp_path / "data")
    cfg = tiny_config(tmp_path / "run", data_dir, tiny_base_dir, **settings)
    return Trainer(cfg, data, base)


def _ce_rows(out: Path) -> list[float]:
    rows = [json.loads(x) for x in (out / "loss.jsonl").read_text().splitlines()]
    return [r["ce"] for r in rows if "ce" in r]


def test_tiny_model_overfits_a_handful_of_examples(tmp_path, tiny_base, tiny_base_dir) -> None:
    data = make_data(n_users=3, per_user=2, n_val_users=0)
    trainer = _trainer(tmp_path, data, tiny_base, tiny_base_dir, max_steps=80, log_every=10,
                       optim={"lr": 1e-2})
    result = trainer.fit()
    trainer.close()
    ce = _ce_rows(tmp_path / "run")
    assert result.completed and result.steps == 80
    print("train CE by window:", ce)
    assert ce[-1] <= 0.5 * ce[0], ce


def test_gradients_reach_every_hypernetwork_parameter(tmp_path, tiny_base, tiny_base_dir) -> None:
    trainer = _trainer(tmp_path, make_data(), tiny_base, tiny_base_dir, max_steps=4)
    hyper = trainer.trainable
    named = dict(hyper.named_parameters())
    groups = {name.split(".")[0] for name in named}
    assert groups == {"task_encoder", "module_emb", "module_norm", "depth_emb", "depth_norm",
                      "mixer", "blocks", "output", "heads"}
    # bias-HyperInit: the heads' weights start at zero, so the first step only moves the heads
    trainer.compute_gradients(0)
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for n, p in named.items() if n.startswith("heads.") and n.endswith(".bias"))
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.compute_gradients(1)
    no_grad = [n for n, p in named.items() if p.grad is None or p.grad.abs().sum() == 0]
    trainer.close()
    assert no_grad == []


def test_one_batch_mixes_users(tmp_path, tiny_base, tiny_base_dir) -> None:
    """Two users answer the same prompts differently; only the profile tells them apart."""
    examples = []
    for user, answer in (("yes-user", "yes"), ("no-user", "no")):
        for k in range(4):
            examples.append(Example(task="t", user_id=user, prompt=f"question {k}?",
                                    target=answer, emb_user=0 if user == "yes-user" else 1))
    for user, answer in (("yes-user", "yes"), ("no-user", "no")):  # held out: new prompts
        examples.append(Example(task="t", user_id=user, prompt="question 9?", target=answer,
                                split="val", emb_user=0 if user == "yes-user" else 1))
    emb = np.eye(2, 16, dtype=np.float32)
    data = TrainData(examples, emb, {"embedding_model": "test"})
    trainer = _trainer(tmp_path, data, tiny_base, tiny_base_dir, max_steps=60, batch_size=8,
                       eval_every=60, log_every=20, optim={"lr": 1e-2}, profile_mode="user")
    result = trainer.fit()
    trainer.close()
    assert result.final_val_ce is not None and result.final_val_ce_shuffled is not None
    print("held-out CE own / swapped:", result.final_val_ce, result.final_val_ce_shuffled)
    # swapping the two users' profiles must make their own answers much less likely
    assert result.final_val_ce_shuffled > result.final_val_ce + 0.5


def test_outputs_of_a_p2p_run(tmp_path, tiny_base, tiny_base_dir) -> None:
    from p2p_local.hypernet.checkpoint import load_checkpoint

    data = make_data()
    data.meta["profile_settings"] = {"k": 2, "recent": 4}  # as prepare() records them
    trainer = _trainer(tmp_path, data, tiny_base, tiny_base_dir, max_steps=4,
                       eval_every=2, checkpoint_every=2, log_every=2)
    result = trainer.fit()
    trainer.close()
    out = tmp_path / "run"
    assert (out / "loss.png").stat().st_size > 1000
    rows = [json.loads(x) for x in (out / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_ce" in r] == [0, 2, 4]
    meta = json.loads((out / "training.json").read_text())
    assert meta["steps"] == 4 and meta["completed"] and meta["global_batch"] == 4
    assert meta["final_val_ce"] == result.final_val_ce and meta["initial_val_ce"] is not None
    last_val = [r for r in rows if "val_ce" in r][-1]
    assert meta["final_val_by_task"] == {k: v for k, v in last_val.items() if "/" in k}
    assert set(meta["final_val_by_task"]) >= {"val_ce/rate", "val_ce/reply"}
    assert meta["data"]["tasks"]["rate"]["sources"] == ["test"]
    assert meta["embedding_model"] == "random-test@000000000000"
    ckpt = load_checkpoint(result.result_path, embedding_model="random-test@000000000000")
    assert ckpt.info.base_model == trainer.base.model_id
    # the profile settings the data was prepared with travel with the checkpoint
    from p2p_local.profile.builder import ProfileSettings

    assert ckpt.info.profile_settings == ProfileSettings(k=2, recent=4)
    assert ckpt.info.embedding_dim == 16
    trained = trainer.trainable.state_dict()
    for name, value in ckpt.hypernet.state_dict().items():
        assert torch.equal(value, trained[name])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step-00000002", "step-00000004"]


def test_refuses_to_overwrite_an_earlier_run(tmp_path, tiny_base, tiny_base_dir) -> None:
    trainer = _trainer(tmp_path, make_data(), tiny_base, tiny_base_dir, max_steps=2,
                       checkpoint_every=1)
    trainer.fit()
    with pytest.raises(TrainingError, match="--resume"):
        trainer.fit()
    trainer.close()


def test_mt_lora_and_oppu_share_the_loop(tmp_path, tiny_base, tiny_base_dir) -> None:
    from p2p_local.export.peft import load_peft
    from p2p_local.train.run import train_user_lora

    data = make_data()
    trainer = _trainer(tmp_path, data, tiny_base, tiny_base_dir, mode="mt_lora", max_steps=5)
    result = trainer.fit()
    trainer.close()
    assert result.result_path == tmp_path / "run" / "adapter"
    mt = load_peft(result.result_path)
    assert any(b.abs().sum() > 0 for b in mt.b.values())  # B started at zero and moved

    user = [ex for ex in data.examples if ex.user_id == "u1"]
    cfg = replace(trainer.config, run=replace(trainer.config.run, max_steps=3))
    oppu = train_user_lora(cfg, user, tiny_base, init=mt)
    assert oppu.targets == mt.targets
    moved = [float((oppu.a[n] - mt.a[n]).abs().max()) for n in mt.a]
    assert max(moved) > 0
    assert len(tiny_base.model.model.layers[0].self_attn.q_proj._forward_hooks) == 0


def test_gradient_checkpointing_gives_the_same_run(tmp_path, tiny_base_dir) -> None:
    from p2p_local.train.models import load_base

    data = make_data()
    weights = []
    for flag in (False, True):
        trainer = _trainer(tmp_path / str(flag), data, load_base(str(tiny_base_dir)),
                           tiny_base_dir, max_steps=3, grad_checkpointing=flag)
        trainer.fit()
        trainer.close()
        weights.append(trainer.trainable.state_dict())
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=1e-6)


def test_length_sorted_pieces_give_the_same_gradient(tmp_path, tiny_base_dir) -> None:
    from p2p_local.train.models import load_base

    grads = []
    for budget in (0, 200):
        trainer = _trainer(tmp_path / str(budget), make_data(), load_base(str(tiny_base_dir)),
                           tiny_base_dir, max_batch_tokens=budget, batch_size=6)
        draws = trainer.sampler.micro_batch(0, batch_size=6, rank=0, world=1, micro=0, accum=1)
        encoded = [trainer._encode("train", d.index, trainer.train_examples) for d in draws]
        pieces = trainer._chunks(draws, encoded)
        assert len(pieces) == (1 if budget == 0 else 3)
        assert sorted(d.index for p in pieces for d in p) == sorted(d.index for d in draws)
        trainer.trainable.eval()  # no dropout: both runs see the same network
        trainer.model.eval()
        trainer.compute_gradients(0)
        grads.append({n: p.grad.clone() for n, p in trainer.trainable.named_parameters()})
        trainer.close()
    for name, grad in grads[0].items():
        # summed in another order, fp32 gradients differ by ~1e-7; a piece weighted wrongly
        # moves them by a share of their size
        scale = float(grad.abs().max())
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-5 * scale + 1e-9)


def test_whitening_is_fitted_on_training_profiles_only(tmp_path, tiny_base, tiny_base_dir) -> None:
    from p2p_local.hypernet.checkpoint import load_checkpoint

    data = make_data()
    data_dir = data.save(tmp_path / "data")
    cfg = tiny_config(tmp_path / "run", data_dir, tiny_base_dir, max_steps=2)
    cfg = replace(cfg, hypernet={**cfg.hypernet, "whiten_input": True})
    trainer = Trainer(cfg, data, tiny_base)
    train_rows = sorted({r for ex in data.examples if ex.split == "train"
                         for r in (ex.emb_user, ex.emb_query)})
    expected = torch.from_numpy(data.embeddings[train_rows]).mean(0)
    assert torch.allclose(trainer.trainable.input_mean, expected, atol=1e-6)
    assert not torch.allclose(trainer.trainable.input_mean,
                              torch.from_numpy(data.embeddings).mean(0), atol=1e-4)
    result = trainer.fit()
    trainer.close()
    ckpt = load_checkpoint(result.result_path, embedding_model="random-test@000000000000")
    assert torch.equal(ckpt.hypernet.input_whitener, trainer.trainable.input_whitener)


def test_derangement_never_keeps_a_users_own_row() -> None:
    from p2p_local.train.trainer import derangement

    users = ["a", "a", "a", "b", "c", "c"]
    rows = [10, 11, 12, 20, 30, 31]
    owner = dict(zip(rows, users, strict=True))
    for seed in range(5):
        out = derangement(users, rows, seed)
        assert sorted(out) == sorted(rows)
        assert all(owner[r] != u for r, u in zip(out, users, strict=True))


def test_shuffled_profiles_come_from_another_user_of_the_same_task(
        tmp_path, tiny_base, tiny_base_dir) -> None:
    data = make_data(n_users=3, per_user=1, n_val_users=6)  # 2 held-out users in each task
    trainer = _trainer(tmp_path, data, tiny_base, tiny_base_dir)
    draws = trainer._val_draws()
    owner = {}
    for ex in data.examples:
        owner[ex.emb_user] = owner[ex.emb_query] = (ex.task, ex.user_id)
    shuffled = trainer._shuffled_rows(draws)
    trainer.close()
    for d, row in zip(draws, shuffled, strict=True):
        ex = trainer.val_examples[d.index]
        assert owner[row][0] == ex.task and owner[row][1] != ex.user_id


def test_runs_with_other_seeds_score_the_same_held_out_examples(
        tmp_path, tiny_base, tiny_base_dir) -> None:
    data = make_data(n_users=3, per_user=1, n_val_users=6)
    picks = []
    for seed in (0, 3):
        trainer = _trainer(tmp_path / str(seed), data, tiny_base, tiny_base_dir, seed=seed)
        draws = trainer._val_draws()
        picks.append((draws, trainer._shuffled_rows(draws)))
        trainer.close()
    assert picks[0] == picks[1] and picks[0][0]


def test_held_out_loss_is_also_reported_per_task(tmp_path, tiny_base, tiny_base_dir) -> None:
    """The overall held-out CE is the token-weighted mean of the per-task figures."""
    trainer = _trainer(tmp_path, make_data(n_val_users=3), tiny_base, tiny_base_dir, max_steps=1)
    val = trainer.evaluate()
    trainer.close()
    tasks = sorted(k.partition("/")[2] for k in val if k.startswith("val_ce/"))
    assert tasks == ["complete", "rate", "reply"]
    tokens = {t: val[f"val_tokens/{t}"] for t in tasks}
    assert sum(tokens.values()) == val["val_tokens"] and min(tokens.values()) > 0
    for key in ("val_ce", "val_ce_shuffled"):
        weighted = sum(val[f"{key}/{t}"] * tokens[t] for t in tasks) / val["val_tokens"]
        assert weighted == pytest.approx(val[key], rel=1e-6)
