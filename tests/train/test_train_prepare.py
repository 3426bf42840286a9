"""``profiles_cache.prepare()`` on the real ``fortunes`` task: user split, sampling, summaries,
profiles, embeddings and the prepared-folder cache.

The LLM summarizer is a deterministic stub (no llama.cpp model is loaded); the embedder is the
real default MiniLM (cached with the other models). The training cache (``cache_dir()/train``)
lives in a temporary cache dir whose ``datasets/`` and ``models/`` link to the shared cache, so
the fetched corpora and models are reused and nothing is written into the shared ``train/``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from p2p_local.profile import summarize as summarize_module
from p2p_local.train import profiles_cache
from p2p_local.train.config import TrainConfig
from p2p_local.train.data import TrainData
from p2p_local.train.profiles_cache import _val_summaries, prepare, prepared_dir

TASK = "fortunes"
MAX_USERS = 4
SUMMARY_USERS = 1
K = 2
SUMMARY_MARK = "This user is stub summary"


def _fingerprint(items: Any) -> str:
    """Identifies a history (so a summary can be traced back to its user)."""
    h = hashlib.sha256()
    for item in items:
        h.update(item.content_hash().encode())
    return h.hexdigest()[:16]


def _norm(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Prepared:
    config: TrainConfig
    path: Path
    cache: Path
    data: TrainData
    split: dict[str, Any]
    dataset: Any
    summary_calls: list[str] = field(default_factory=list)  # history fingerprints, in order
    embed_calls: list[list[str]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    @property
    def profile_texts(self) -> list[str]:
        return self.embed_calls[-1]  # the last embedding call is the prepared data's rows

    def users(self, part: str) -> set[str]:
        return {ex.user_id for ex in self.data.examples if ex.split == part}

    def fp_of(self, user_id: str) -> str:
        return _fingerprint(self.dataset.user(user_id).history)


def _config() -> TrainConfig:
    return TrainConfig.from_dict({
        "data": {"tasks": [TASK], "max_users_per_task": MAX_USERS},
        "profile": {"summary_users_per_task": SUMMARY_USERS, "k": K},
    })


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    from p2p_local.datasets import load_task

    shared = Path(os.environ["P2P_LOCAL_CACHE"])  # tests/conftest.py: the shared model cache
    root = tmp_path_factory.mktemp("prepare")
    cache = root / "cache"
    cache.mkdir()
    for name in ("datasets", "models"):
        (shared / name).mkdir(parents=True, exist_ok=True)
        (cache / name).symlink_to(shared / name, target_is_directory=True)

    summary_calls: list[str] = []
    embed_calls: list[list[str]] = []
    backend = object()  # what the stub summarizer hands to summarize(); never a real model

    def stub_summarize(items, backend_arg, *, task=None, settings=None):
        assert backend_arg is backend
        fp = _fingerprint(items)
        summary_calls.append(fp)
        return summarize_module.Summary(
            text=f"{SUMMARY_MARK} {fp}.", model_id="stub", task=task or "",
            items_used=len(items), prompt_tokens=0, seconds=0.0,
        )

    real_embed = profiles_cache.EmbeddingCache.embed

    def recording_embed(self, texts, log):
        embed_calls.append(list(texts))
        return real_embed(self, texts, log)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("P2P_LOCAL_HOME", str(root / "home"))
        mp.setenv("P2P_LOCAL_CACHE", str(cache))
        mp.setattr(profiles_cache._LazySummarizer, "backend", lambda self: backend)
        mp.setattr(summarize_module, "summarize", stub_summarize)
        mp.setattr(profiles_cache.EmbeddingCache, "embed", recording_embed)
        config = _config()
        logs: list[str] = []
        path = prepare(config, log=logs.append)
        yield Prepared(
            config=config, path=path, cache=cache, data=TrainData.load(path),
            split=json.loads((path / "splits" / f"{TASK}.json").read_text()),
            dataset=load_task(TASK, max_queries=config.data.max_queries),
            summary_calls=summary_calls, embed_calls=embed_calls, logs=logs,
        )


@pytest.mark.real_model
def test_prepared_folder_and_split(prepared: Prepared) -> None:
    from p2p_local.eval.splits import SplitSettings, random_split

    p = prepared
    assert p.path == prepared_dir(p.config)
    assert p.path.parent == p.cache / "train" / "prepared"
    for name in ("meta.json", "examples.jsonl", "embeddings.npy", f"splits/{TASK}.json"):
        assert (p.path / name).is_file(), name
    # the split the evaluation will reuse is the seeded random split of all the task's users
    expected = random_split(p.dataset.user_ids(), SplitSettings(seed=0)).to_dict()
    assert p.split == expected
    assert p.split["test"] and p.split["val"]
    meta = p.data.meta["tasks"][TASK]
    assert meta["users_total"] == len(p.dataset)
    assert meta["users_train"] == MAX_USERS
    assert meta["users_train_split"] == len(p.split["train"])
    assert (meta["users_val"], meta["users_test"]) == (len(p.split["val"]), len(p.split["test"]))
    assert meta["examples_train"] == len(p.data.split("train"))
    assert meta["examples_val"] == len(p.data.split("val"))
    assert p.data.meta["profile"] == {"mode": "both", "k": K,
                                      "summary_users_per_task": SUMMARY_USERS}
    # what the checkpoint will record, so profiles built for it match training's
    assert p.data.meta["profile_settings"] == {"k": K, "item_chars": 400, "statistics": True,
                                               "recent": 0}
    assert p.data.meta["summarizer"].startswith("smollm2")  # the real id, only the model stubbed
    assert p.data.embeddings.shape == (len(p.profile_texts), p.data.embedding_dim)


@pytest.mark.real_model
def test_training_examples_come_from_the_sampled_users(prepared: Prepared) -> None:
    p = prepared
    train_users = p.users("train")
    assert len(train_users) == MAX_USERS
    assert train_users <= set(p.split["train"])
    # a seeded sample of the split's training users, not the head of the sorted list
    assert sorted(train_users) != sorted(p.split["train"])[:MAX_USERS]
    assert p.users("val") and p.users("val") <= set(p.split["val"])
    # every held-out query (with an answer) of each included user is one example
    for part in ("train", "val"):
        for user_id in p.users(part):
            want = sorted((q.input, q.output) for q in p.dataset.user(user_id).queries
                          if q.output and q.output.strip())
            got = sorted((ex.prompt, ex.target) for ex in p.data.examples
                         if ex.user_id == user_id)
            assert got == want, user_id
            assert all(ex.split == part and ex.task == TASK for ex in p.data.examples
                       if ex.user_id == user_id)
    for ex in p.data.examples:
        assert 0 <= ex.emb_user < len(p.profile_texts)
        assert 0 <= ex.emb_query < len(p.profile_texts)
        assert ex.emb_user != ex.emb_query  # k = 2: the per-query profile adds retrieved items


@pytest.mark.real_model
def test_no_test_user_is_read(prepared: Prepared) -> None:
    p = prepared
    test_users = set(p.split["test"])
    assert not test_users & {ex.user_id for ex in p.data.examples}
    assert not {p.fp_of(u) for u in test_users} & set(p.summary_calls)
    cached = (p.cache / "train" / "summaries").rglob("*.jsonl")
    summarized = {json.loads(line)["user"] for f in cached for line in f.read_text().splitlines()}
    assert summarized and not summarized & test_users

    every_text = "\n".join(_norm(t) for call in p.embed_calls for t in call)

    def quoted(user_id: str) -> bool:
        return any(_norm(item.text)[:40] in every_text
                   for item in p.dataset.user(user_id).history if len(_norm(item.text)) >= 40)

    assert all(quoted(u) for u in p.users("train"))  # the check can see history in profiles
    assert not [u for u in test_users if quoted(u)]


@pytest.mark.real_model
def test_summaries_go_to_one_training_user_and_the_val_share(prepared: Prepared) -> None:
    p = prepared
    by_fp = {p.fp_of(u): u for u in p.users("train") | p.users("val")}
    assert len(p.summary_calls) == len(set(p.summary_calls))
    summarized = {by_fp[fp] for fp in p.summary_calls}
    n_val = len(p.split["val"])
    assert len(summarized & p.users("train")) == SUMMARY_USERS
    assert len(summarized & set(p.split["val"])) == n_val * SUMMARY_USERS // MAX_USERS
    assert summarized <= p.users("train") | set(p.split["val"])
    assert p.data.meta["tasks"][TASK]["users_with_summary"] == len(summarized)
    # each summary reaches its own user's profiles (both kinds) and no one else's
    for ex in p.data.examples:
        for row in (ex.emb_user, ex.emb_query):
            text = p.profile_texts[row]
            if ex.user_id in summarized:
                assert f"{SUMMARY_MARK} {p.fp_of(ex.user_id)}." in text
            else:
                assert SUMMARY_MARK not in text


@pytest.mark.real_model
def test_second_prepare_is_a_cache_hit(prepared: Prepared) -> None:
    p = prepared
    meta_mtime = (p.path / "meta.json").stat().st_mtime_ns
    n_summaries, n_embeds = len(p.summary_calls), len(p.embed_calls)
    logs: list[str] = []
    assert prepare(_config(), log=logs.append) == p.path
    assert len(p.summary_calls) == n_summaries
    assert len(p.embed_calls) == n_embeds
    assert (p.path / "meta.json").stat().st_mtime_ns == meta_mtime
    assert any("prepared data found" in line for line in logs)
    # another [profile] setting is another folder
    other = TrainConfig.from_dict({**_config().to_dict(), "profile": {
        **_config().to_dict()["profile"], "k": K + 1}})
    assert prepared_dir(other) != p.path
    # a new profile wording is another folder too (the profiles are not the same text)
    from p2p_local.profile import builder

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builder, "PROFILE_FORMAT", builder.PROFILE_FORMAT + 1)
        assert prepared_dir(_config()) != p.path


@pytest.mark.parametrize(
    ("per_task", "n_train", "n_val", "expected"),
    [
        (0, 4, 24, 0),  # no summaries at all
        (-1, 4, 24, 0),
        (1, 0, 24, 0),  # no training users
        (4, 4, 24, 24),  # every training user summarized -> every validation user
        (9, 4, 24, 24),
        (1, 4, 24, 6),  # the training share: 24 * 1/4
        (3, 4, 10, 7),  # 7.5 rounded down
        (1, 4, 3, 0),  # 0.75 rounded down
        (1, 3, 0, 0),  # no validation users
    ],
)
def test_val_summaries(per_task: int, n_train: int, n_val: int, expected: int) -> None:
    assert _val_summaries(per_task, n_train, n_val) == expected


def test_prepared_folder_follows_the_models_not_their_names(prepared: Prepared) -> None:
    """The cache key uses the models the specs resolve to: the role name and the registry
    name of the same embedder share a folder; another embedder gets another one."""
    base = _config().to_dict()

    def with_embedding(spec: str) -> TrainConfig:
        return TrainConfig.from_dict({**base, "model": {**base["model"], "embedding": spec}})

    assert prepared_dir(with_embedding("all-minilm-l6-v2")) == prepared.path
    assert prepared_dir(with_embedding("hidden:base")) != prepared.path


@pytest.mark.real_model
def test_saved_splits_replace_the_computed_ones(prepared: Prepared, tmp_path: Path) -> None:
    """``[data] splits`` trains on a saved split as it is (keyed by its content, not its path);
    a split of another kind or seed, or of other users, is refused."""
    from p2p_local.errors import ConfigError

    moved = prepared.split["train"][0]
    saved = {**prepared.split, "train": prepared.split["train"][1:],
             "test": [*prepared.split["test"], moved]}
    folder = tmp_path / "splits"
    folder.mkdir()
    (folder / f"{TASK}.json").write_text(json.dumps(saved))
    base = _config().to_dict()

    def with_splits(path: Path, **data: Any) -> TrainConfig:
        return TrainConfig.from_dict({**base, "data": {**base["data"], "splits": str(path),
                                                       **data}})

    config = with_splits(folder)
    path = prepare(config)
    assert path == prepared_dir(config) != prepared.path
    assert json.loads((path / "splits" / f"{TASK}.json").read_text()) == saved
    trained = {ex.user_id for ex in TrainData.load(path).examples}
    assert moved not in trained and trained  # the moved user is a test user now

    copy = tmp_path / "copy"  # the same content elsewhere: the same folder
    copy.mkdir()
    (copy / f"{TASK}.json").write_text(json.dumps(saved))
    assert prepared_dir(with_splits(copy)) == path

    with pytest.raises(ConfigError, match="random split with seed 0"):
        prepare(with_splits(folder, split_seed=1))
    (folder / f"{TASK}.json").write_text(json.dumps({**saved, "test": saved["test"][:-1]}))
    assert prepared_dir(with_splits(folder)) != path
    with pytest.raises(ConfigError, match="does not partition"):
        prepare(with_splits(folder))
    with pytest.raises(ConfigError, match="cannot read"):
        prepared_dir(with_splits(tmp_path / "missing"))
