"""The Python API from several threads: users' Personalizers share one Engine (one loaded base
model); each reply runs under the engine's lock with its own user's adapter, so concurrent
users get exactly what they get alone. Adapters come from a randomly initialised
hypernetwork with non-zero heads, so different users' replies really differ."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from personas import create_users, random_checkpoint

from p2p_local.errors import InputError

PASSPHRASE = "threads passphrase"
HISTORIES = {
    "alice": ["I bake sourdough bread and keep bees in my garden.",
              "Jazz piano records on a Sunday morning are my favourite thing."],
    "bob": ["I restore old motorbikes and ride them across the desert.",
            "Spicy ramen at midnight after a long shift at the hospital."],
}
PROMPTS = ["Plan my Saturday.", "What should I cook tonight?", "Suggest a hobby for me."]
SHORT = 10


def _greedy(max_tokens: int = SHORT):
    from p2p_local.runtime.base import GenerationSettings

    return GenerationSettings(max_tokens=max_tokens, temperature=0.0)


def _msg(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


@pytest.fixture(scope="module")
def shared(tmp_path_factory, base_gguf):
    """One engine; alice and bob on it, with adapters built (their summaries written by the
    engine's base model)."""
    from p2p_local.engine import Engine

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("P2P_LOCAL_HOME", str(tmp_path_factory.mktemp("threads-home")))
        engine = Engine("llamacpp", n_ctx=512)
        engine.load()
        checkpoint = random_checkpoint(tmp_path_factory.mktemp("threads-hypernet"),
                                       engine.embedder().model_id, seed=1)
        users = create_users(engine, HISTORIES, PASSPHRASE, checkpoint)
        for person in users.values():
            replies = engine.replies
            assert person.personal_adapter() is not None
            assert engine.replies == replies + 1  # the summary, on the shared model
        try:
            yield engine, users
        finally:
            for person in users.values():
                person.close()
            engine.close()


@pytest.fixture(scope="module")
def alone(shared):
    """Each user's greedy replies with nobody else talking."""
    _, users = shared
    return {name: {p: person.chat(_msg(p), _greedy()) for p in PROMPTS}
            for name, person in users.items()}


@pytest.mark.real_model
def test_personalizer_without_an_engine_makes_and_closes_its_own(home: Path,
                                                                   llama_base) -> None:
    from p2p_local.api import Personalizer
    from p2p_local.engine import Engine

    with Personalizer.create("solo", PASSPHRASE) as p:
        own = p.engine()
        assert p.engine("llamacpp") is own and not own.loaded  # loads on first reply
    with pytest.raises(InputError, match="closed"):
        own.load()

    shared = Engine.from_backend(llama_base)
    with Personalizer("solo", passphrase=PASSPHRASE, engine=shared) as p:
        assert p.engine() is shared and p.chat_backend() is llama_base
    assert shared.loaded and llama_base.n_ctx() > 0  # other users keep using it


def test_ingest_takes_items_and_dicts(home: Path) -> None:
    from p2p_local.api import Personalizer
    from p2p_local.store.records import HistoryItem

    with Personalizer.create("eve", PASSPHRASE) as p:
        res = p.ingest([HistoryItem(text="first"), {"text": "second", "kind": "rating",
                                                    "score": 4, "unknown_field": 1}])
        assert res.added == 2 and p.ingest([{"text": "first"}]).duplicates == 1
        assert [s.item.score for s in p.history()] == [None, 4]
        with pytest.raises(InputError, match="HistoryItem or a dict"):
            p.ingest(["just a string"])


@pytest.mark.real_model
def test_users_on_threads_get_their_own_replies(shared, alone) -> None:
    engine, users = shared
    for prompt in PROMPTS:
        assert alone["alice"][prompt] != alone["bob"][prompt]
    start = threading.Barrier(4)
    results: dict[tuple[str, int], list[str]] = {}
    errors: list[BaseException] = []

    def worker(name: str, k: int) -> None:
        try:
            start.wait(60)
            out = []
            for i, prompt in enumerate(PROMPTS):
                if (i + k) % 2:
                    out.append(users[name].chat(_msg(prompt), _greedy()))
                else:
                    with users[name].chat(_msg(prompt), _greedy(), stream=True) as pieces:
                        out.append("".join(pieces))
            results[(name, k)] = out
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    swaps = engine.swaps
    threads = [threading.Thread(target=worker, args=(n, k)) for n in users for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    for (name, _), out in results.items():
        assert out == [alone[name][p] for p in PROMPTS], name
    assert len(results) == 4 and engine.swaps > swaps


@pytest.mark.real_model
def test_an_open_stream_keeps_other_users_waiting(shared, alone) -> None:
    engine, users = shared
    stream = users["alice"].chat(_msg(PROMPTS[0]), _greedy(), stream=True)
    first = next(stream)
    swaps = engine.swaps
    got: list[str] = []
    other = threading.Thread(target=lambda: got.append(
        users["bob"].chat(_msg(PROMPTS[0]), _greedy())))
    other.start()
    other.join(1.0)
    assert other.is_alive() and not got  # waits for the model
    assert engine.swaps == swaps  # bob's adapter was not swapped in under alice's stream
    rest = "".join(stream)  # reading to the end releases the model
    other.join(300)
    assert first + rest == alone["alice"][PROMPTS[0]]
    assert got == [alone["bob"][PROMPTS[0]]]


@pytest.mark.real_model
def test_a_second_reply_on_the_same_thread_is_refused_not_deadlocked(shared, alone) -> None:
    _, users = shared
    stream = users["alice"].chat(_msg(PROMPTS[1]), _greedy(), stream=True)
    next(stream)
    with pytest.raises(InputError, match="close"):
        users["bob"].chat(_msg(PROMPTS[1]), _greedy())
    stream.close()
    assert stream.closed and list(stream) == []
    assert users["bob"].chat(_msg(PROMPTS[1]), _greedy()) == alone["bob"][PROMPTS[1]]
