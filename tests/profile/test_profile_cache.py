"""Profiles of a real vault: the encrypted summary cache, invalidation, nothing in plaintext."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from p2p_local.api import Personalizer
from p2p_local.errors import EmptyHistoryError
from p2p_local.profile.builder import ProfileSettings, ProfileViewCache, VaultProfiler
from p2p_local.profile.retrieval import DigestCache
from p2p_local.profile.summarize import SummarySettings, read_cached_summary, summary_blob_name
from p2p_local.runtime.base import GenerationSettings, Message
from p2p_local.store.records import HistoryItem

DATA = Path(__file__).parent / "data"
PASSPHRASE = "plum cake by the lighthouse"
CHEAP = SummarySettings(max_tokens=48, max_history_tokens=256)  # ~1-2 s a summary


def _items(name: str) -> list[HistoryItem]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [HistoryItem.from_dict(json.loads(line)) for line in lines if line.strip()]


class CountingBackend:
    """The real llama.cpp backend, with the generations it is asked for counted."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.model_path = inner.model_path
        self.calls = 0

    def chat(self, messages: list[Message], settings: GenerationSettings) -> str:
        self.calls += 1
        return self.inner.chat(messages, settings)

    def stream(self, messages: list[Message], settings: GenerationSettings) -> Iterator[str]:
        self.calls += 1
        return self.inner.stream(messages, settings)

    def n_ctx(self) -> int:
        return self.inner.n_ctx()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def _open(backend, embedder) -> Personalizer:
    p = Personalizer("alice", passphrase=PASSPHRASE)
    p.configure_profile(summary_backend=backend, embedder=embedder, summary_settings=CHEAP)
    return p


@pytest.fixture
def alice(home: Path) -> Iterator[Personalizer]:
    p = Personalizer.create("alice", PASSPHRASE)
    p.add_items(_items("reviews.jsonl"))
    p.close()
    yield p


@pytest.mark.real_model
def test_summary_is_reused_until_the_history_changes(alice, llama_base, embedder) -> None:
    backend = CountingBackend(llama_base)
    with _open(backend, embedder) as p:
        first = p.profile()
        assert backend.calls == 1 and first.summary
        per_query = p.profile(query="my tent leaked in the rain")
        assert backend.calls == 1  # the cached summary, not a new one
        assert per_query.summary == first.summary
        assert per_query.retrieved[0].text.startswith("Tent leaked")
        assert per_query.embedding is not None and per_query.embedding.shape == (384,)
        assert per_query.embedding_model == embedder.model_id
        assert float(per_query.embedding @ first.embedding) < 1.0 - 1e-6

    with _open(backend, embedder) as p:  # the cache lives (encrypted) in the vault on disk
        assert p.profile().summary == first.summary
        assert backend.calls == 1
        p.add_items([HistoryItem(text="The umbrella turned inside out in the first gust.",
                                 kind="rating", score=1, label="outdoors")])
        stale = read_cached_summary(p.vault, backend.name + ":" + llama_base.model_path.name,
                                    settings=CHEAP)
        assert stale is None  # one new item invalidates it
        grown = p.profile()
        assert backend.calls == 2
        assert grown.statistics is not None and grown.statistics.items == 13
        p.profile(task="Predict the star rating the user gives a product.")
        assert backend.calls == 3  # summaries are per task
        p.profile()
        assert backend.calls == 3
        again = p.refresh()
        assert backend.calls == 4 and again.text and not again.cached


@pytest.mark.real_model
def test_nothing_of_the_profile_is_on_disk_in_plaintext(alice, home, llama_base, embedder) -> None:
    backend = CountingBackend(llama_base)
    with _open(backend, embedder) as p:
        prof = p.profile(query="a good knife for chopping onions")
        model_id = f"{backend.name}:{llama_base.model_path.name}"
        assert p.vault.get_blob(summary_blob_name(model_id, prof.task)) is not None
    assert prof.summary and prof.statistics is not None
    secrets = [prof.summary, prof.statistics.render(), *(r.text for r in prof.retrieved)]
    needles = set()
    for secret in secrets:
        data = secret.encode("utf-8")
        # Every 24-byte window at a stride of 12: a partial copy is caught too.
        needles.update(data[i : i + 24] for i in range(0, max(1, len(data) - 23), 12))
    files = [f for f in home.rglob("*") if f.is_file()]
    assert any(f.name.startswith("vault") or f.suffix for f in files)  # the scan sees the vault
    for f in files:
        content = f.read_bytes()
        for needle in needles:
            assert needle not in content, f"plaintext profile text found in {f}"
    emb = np.ascontiguousarray(prof.embedding, dtype=np.float32).tobytes()[:64]
    assert all(emb not in f.read_bytes() for f in files)


def test_empty_history_says_to_ingest_first(home: Path) -> None:
    with Personalizer.create("bob", PASSPHRASE) as p:
        with pytest.raises(EmptyHistoryError, match="ingest first: p2p-local ingest FILE"):
            p.profile()
        with pytest.raises(EmptyHistoryError, match="ingest first"):
            p.refresh()
        assert p.__dict__.get("_summary_llm") is None  # no model was loaded for nothing


def test_decrypted_history_is_cached_per_digest_and_dropped(alice) -> None:
    views: DigestCache = DigestCache(max_entries=4)

    def no_model():
        raise AssertionError("building the history view must not load a model")

    with Personalizer("alice", passphrase=PASSPHRASE) as p:
        profiler = VaultProfiler(p.vault, no_model, model_id="unused", views=views)
        first = profiler.view()
        assert profiler.view() is first and len(first.items) == 12
        assert first.index.search("tent", 1)[0].id == first.items[5].short_id
        p.add_items([HistoryItem(text="Sturdy tent pegs held in sand.", score=5)])
        grown = profiler.view()
        assert grown is not first and len(grown.items) == 13 and len(views) == 2
        assert grown.statistics is not None and grown.statistics.rated == 13
        profiler.drop_cached_history()
        assert len(views) == 0


def test_each_owner_keeps_its_own_decrypted_history(alice) -> None:
    def no_model():
        raise AssertionError("building the history view must not load a model")

    with Personalizer("alice", passphrase=PASSPHRASE) as p:
        one = VaultProfiler(p.vault, no_model, model_id="unused")
        two = VaultProfiler(p.vault, no_model, model_id="unused")
        assert one.view() is one.view()
        assert two.view() is not one.view()  # no cache shared by the whole process

        first = p.profiler().view()
        assert first is not one.view()
        p.configure_profile(settings=ProfileSettings())  # a new profiler, the same owner
        assert p.profiler().view() is first
        views = p.__dict__["_profile_views"]
        assert isinstance(views, ProfileViewCache) and len(views) == 1
        with Personalizer("alice", passphrase=PASSPHRASE) as q:  # another owner, same vault
            assert q.profiler().view() is not first
        assert p.profiler().view() is first
    assert len(views) == 0  # closing the owner drops what it decrypted
