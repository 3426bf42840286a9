"""Every method end to end on a tiny LaMP fixture with the real default models.

One evaluation of all twelve methods runs once for the module (2 users, 3 queries, short
answers): the base model on llama.cpp, summaries by the same model, the profile embedder, a
randomly initialised hypernetwork (``random_hypernet_dir``) for P2P, an MT-LoRA and per-user
OPPU LoRAs trained for one step through the trainer's LoRA mode.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from p2p_local.baselines import METHODS, EvalEnv, MethodSettings, create
from p2p_local.eval.harness import EvalReport, EvalSettings, load_data, run_evaluation

pytestmark = pytest.mark.real_model

SMALL = dict(summary_tokens=32, summary_history_tokens=64, oppu_max_steps=1, oppu_batch_size=2,
             oppu_seq_len=96)


@pytest.fixture(scope="module")
def train_base():
    from p2p_local.baselines.common import load_train_base

    return load_train_base("base")


@pytest.fixture(scope="module")
def mt_lora_dir(tmp_path_factory: pytest.TempPathFactory, train_base) -> Path:
    """An MT-LoRA trained for one step on other users' review ratings (the trainer's LoRA
    mode, as `p2p-local train` with run.mode = "mt_lora" trains it)."""
    from p2p_local.export.peft import save_peft
    from p2p_local.train.config import TrainConfig
    from p2p_local.train.data import Example
    from p2p_local.train.run import train_user_lora

    rate = "What is the score of the following review on a scale of 1 to 5? review: "
    examples = [Example("LaMP_3", f"t{i}", rate + text, score)
                for i, (text, score) in enumerate([("Works fine.", "4"), ("Awful.", "1"),
                                                   ("Best purchase ever.", "5")])]
    config = TrainConfig.from_dict({
        "run": {"mode": "mt_lora", "max_steps": 1, "batch_size": 2, "max_seq_len": 96,
                "max_target_tokens": 8, "eval_every": 0, "checkpoint_every": 0,
                "progress": False},
        "optim": {"lr": 1e-3, "warmup_steps": 0},
        "data": {"tasks": ["LaMP_3"]},
    })
    adapter = train_user_lora(config, examples, train_base)
    out = tmp_path_factory.mktemp("mt-lora") / "adapter"
    save_peft(adapter, out)
    return out


def _settings(data: Path, checkpoint: Path, mt_lora: Path) -> EvalSettings:
    return EvalSettings(
        data=str(data), methods=("all",),
        method=MethodSettings(checkpoint=str(checkpoint), mt_lora=str(mt_lora), **SMALL),
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory, lamp_rating_files, random_hypernet_dir, mt_lora_dir, train_base,
        _llama_base_session):
    out = tmp_path_factory.mktemp("eval-out")
    settings = _settings(lamp_rating_files, random_hypernet_dir, mt_lora_dir)
    report = run_evaluation(settings, out_dir=out, backend=_llama_base_session,
                            train_base=train_base, progress=False)
    return settings, out, report


def test_every_method_answers_every_query(run) -> None:
    _settings_, out, report = run
    assert list(report.results) == list(METHODS)
    assert (report.task, report.kind, report.split, report.n_users, report.n_queries) == (
        "LaMP_3", "rating", "all", 2, 3)
    for name, r in report.results.items():
        s = r.scores
        assert s.n == 3 and 0 <= s.unparsable <= 3, name
        assert 0.0 <= s.metrics["mae"] <= 4.0 and s.metrics["rmse"] >= s.metrics["mae"]
        assert 0.0 <= s.metrics["accuracy"] <= 1.0
        assert r.seconds_per_query > 0 and math.isfinite(r.seconds_per_query)
        lines = (out / "predictions" / f"{name}-{r.fingerprint}.jsonl").read_text().splitlines()
        answers = [json.loads(line) for line in lines]
        assert sorted(a["query_id"] for a in answers) == ["u1-q1", "u1-q2", "u2-q1"]
        assert all(isinstance(a["raw"], str) and a["gold"] for a in answers)
    # per-user preparation is measured where there is some
    assert report.results["oppu"].setup_seconds_per_user > 0
    assert report.results["p2p"].setup_seconds_per_user > 0
    assert report.results["base"].setup_seconds_per_user < 0.05
    # the best constant comes from the users' history ratings here (no training users)
    assert report.best_constant is not None and report.best_constant.answer == "5"


def test_report_files_and_json_shape(run) -> None:
    _settings_, out, report = run
    data = json.loads((out / "results.json").read_text())
    assert set(report.summary()) == {"task", "split", "n_users", "n_queries", "results",
                                     "best_constant"}
    assert data["results"]["p2p"]["mae"] == report.results["p2p"].scores.metrics["mae"]
    again = EvalReport.from_dict(data)
    assert again.summary() == json.loads(json.dumps(report.summary()))
    # every answer's score is kept, so per-user comparisons need only this file
    per_query = data["per_query"]
    assert per_query["metric"] == "mae"
    assert sorted(zip(per_query["user_ids"], per_query["query_ids"], strict=True)) == [
        ("u1", "u1-q1"), ("u1", "u1-q2"), ("u2", "u2-q1")]
    assert set(per_query["scores"]) == set(METHODS)
    for name, values in per_query["scores"].items():
        assert sum(values) / len(values) == pytest.approx(data["results"][name]["mae"], abs=1e-6)
    constant = per_query["best_constant"]
    assert sum(constant) / len(constant) == pytest.approx(data["best_constant"]["mae"], abs=1e-6)
    table = (out / "results.md").read_text()
    for name in METHODS:
        assert f"| {name} |" in table
    assert "MAE ↓" in table and 'best constant ("5")' in table
    # and below it, p2p minus every other method and the constant, per user
    assert "Per user, p2p minus each method" in table
    rows = table.splitlines()
    for name in METHODS:
        if name != "p2p":  # a row in the table, and one in the comparisons below
            assert sum(line.startswith(f"| {name} | ") for line in rows) == 2, name
    assert sum(line.startswith("| best constant | ") for line in rows) == 1
    assert (out / "summaries.jsonl").read_text().count('"user"') == 2


def test_a_second_run_reuses_every_cached_answer(run, train_base,
                                                 _llama_base_session) -> None:
    settings, out, first = run
    sizes = {p.name: p.stat().st_size for p in (out / "predictions").iterdir()}
    second = run_evaluation(settings, out_dir=out, backend=_llama_base_session,
                            train_base=train_base, progress=False)
    assert {p.name: p.stat().st_size for p in (out / "predictions").iterdir()} == sizes
    assert second.summary()["results"] == first.summary()["results"]


def test_a_repeat_penalty_is_its_own_cache_entry_and_is_reported(
        run, tmp_path, train_base, _llama_base_session) -> None:
    from dataclasses import replace

    settings, _out, first = run
    penalized = replace(settings, methods=("base",),
                        method=replace(settings.method, repeat_penalty=1.1))
    report = run_evaluation(penalized, out_dir=tmp_path, backend=_llama_base_session,
                            train_base=train_base, progress=False)
    assert report.results["base"].fingerprint != first.results["base"].fingerprint
    assert "greedy decoding with repeat penalty 1.1;" in (tmp_path / "results.md").read_text()
    assert "greedy decoding;" in first.markdown() and "repeat penalty" not in first.markdown()


def test_p2p_ablations_use_the_intended_profiles(lamp_rating_files, random_hypernet_dir,
                                                 _llama_base_session) -> None:
    """The shuffled profile is exactly the donor's, the random one and the per-query one
    differ from the user's own, and different users get different adapters."""
    settings = MethodSettings(checkpoint=str(random_hypernet_dir), **SMALL)
    ds = load_data(EvalSettings(data=str(lamp_rating_files)))
    env = EvalEnv(_llama_base_session, ds.spec, ds.users, settings)
    u1, u2 = ds.users
    assert env.donor(u1) is u2 and env.donor(u2) is u1

    def weights(name: str, user, query=None) -> torch.Tensor:
        method = create(name, env)
        return env.adapter_for(method.embedding(user, query)).b["q_proj"]

    own1, own2 = weights("p2p", u1), weights("p2p", u2)
    assert not torch.equal(own1, own2)
    assert torch.equal(weights("p2p-shuffled", u1), own2)
    assert not torch.equal(weights("p2p-random", u1), own1)
    q = u1.queries[0]
    assert not torch.equal(weights("p2p-per-query", u1, q), own1)
    # the per-query ablation: the donor's items retrieved for u1's query, not u1's
    donors_items = env.profile(u2, query=q.input).text
    assert create("p2p-per-query-shuffled", env).profile_text(u1, q) == donors_items
    assert donors_items != create("p2p-per-query", env).profile_text(u1, q)
    donors_adapter = env.adapter_for(env.embedder().embed([donors_items])[0])
    assert torch.equal(weights("p2p-per-query-shuffled", u1, q), donors_adapter.b["q_proj"])
    assert not torch.equal(weights("p2p-summary-only", u1), own1)
    texts = {name: create(name, env).profile_text(u1, u1.queries[0])
             for name in ("p2p", "p2p-summary-only", "p2p-retrieval-only")}
    assert "## User History Statistics" in texts["p2p"]
    assert "## User History Statistics" not in texts["p2p-summary-only"]
    assert "## User Profile" not in texts["p2p-retrieval-only"]
    assert "## User History:" in texts["p2p-retrieval-only"]
    assert "## User History:" not in texts["p2p"]


def test_p2p_profiles_follow_the_checkpoints_recorded_settings(
        lamp_rating_files, random_hypernet_dir, tmp_path, _llama_base_session) -> None:
    from p2p_local.hypernet.checkpoint import load_checkpoint, save_checkpoint
    from p2p_local.profile.builder import ProfileSettings

    ck = load_checkpoint(random_hypernet_dir)
    save_checkpoint(ck.hypernet, tmp_path / "recent", base_model=ck.info.base_model,
                    embedding_model=ck.info.embedding_model, profile=ProfileSettings(recent=2))
    settings = MethodSettings(checkpoint=str(tmp_path / "recent"), **SMALL)
    ds = load_data(EvalSettings(data=str(lamp_rating_files)))
    env = EvalEnv(_llama_base_session, ds.spec, ds.users, settings)
    u1, u2 = ds.users
    own = create("p2p", env).profile_text(u1, None)
    assert own is not None and own.count("\n- ") == 2  # statistics, then the 2 newest items
    assert create("p2p-shuffled", env).profile_text(u1, None) == (
        create("p2p", env).profile_text(u2, None))
    # the summary-only ablation stays the summary alone
    assert "## User History:" not in create("p2p-summary-only", env).profile_text(u1, None)


def test_an_adapter_scale_reaches_every_p2p_adapter_and_its_cache_key(
        run, lamp_rating_files, random_hypernet_dir, tmp_path, _llama_base_session) -> None:
    from dataclasses import replace

    settings, _out, first = run
    ds = load_data(EvalSettings(data=str(lamp_rating_files)))
    u1 = ds.users[0]
    applied = {}
    for scale in (1.0, 0.5):
        env = EvalEnv(_llama_base_session, ds.spec, ds.users,
                      MethodSettings(checkpoint=str(random_hypernet_dir), adapter_scale=scale,
                                     **SMALL))
        env.payload = lambda adapter, key: adapter  # type: ignore[method-assign]
        for name in ("p2p", "p2p-shuffled"):
            applied[name, scale] = create(name, env).plan(u1, u1.queries[0]).payload
    for name in ("p2p", "p2p-shuffled"):
        torch.testing.assert_close(applied[name, 0.5].delta("q_proj", 0),
                                   0.5 * applied[name, 1.0].delta("q_proj", 0))
    halved = replace(settings, methods=("base", "p2p"),
                     method=replace(settings.method, adapter_scale=0.5))
    report = run_evaluation(halved, out_dir=tmp_path, backend=_llama_base_session,
                            progress=False)
    assert report.results["p2p"].fingerprint != first.results["p2p"].fingerprint
    assert report.results["base"].fingerprint == first.results["base"].fingerprint
    assert "its updates scaled by 0.5." in (tmp_path / "results.md").read_text()


def test_held_out_val_evaluates_the_splits_validation_users(lamp_rating_files,
                                                            tmp_path) -> None:
    from p2p_local.errors import ConfigError, EvaluationError
    from p2p_local.eval.harness import select_users
    from p2p_local.eval.splits import Split

    split = tmp_path / "split.json"
    split.write_text(json.dumps(Split("random", (), ("u2",), ("u1",), 0).to_dict()))
    ds = load_data(EvalSettings(data=str(lamp_rating_files)))
    picked = {held_out: [u.user_id for u in select_users(ds, EvalSettings(
        data=str(lamp_rating_files), split_file=str(split), held_out=held_out)).eval_users]
        for held_out in ("test", "val")}
    assert picked == {"test": ["u1"], "val": ["u2"]}
    with pytest.raises(EvaluationError, match="has no validation users"):
        select_users(ds, EvalSettings(data=str(lamp_rating_files), held_out="val"))
    with pytest.raises(ConfigError, match="held_out must be test or val"):
        EvalSettings(data="office", held_out="train")
