"""The method registry, the settings' validation and OPPU's training examples (no models)."""

from __future__ import annotations

import pytest

from p2p_local.baselines import METHODS, MethodSettings, parse_methods
from p2p_local.baselines.oppu import LABEL_PROMPT, STYLE_PROMPT, TITLE_PROMPT, user_examples
from p2p_local.datasets.base import Query, TaskSpec, UserRecord
from p2p_local.errors import ConfigError
from p2p_local.store.records import HistoryItem

NAMES = ["base", "rag", "pag", "full-history", "mt-lora", "oppu", "p2p", "p2p-per-query",
         "p2p-shuffled", "p2p-per-query-shuffled", "p2p-random", "p2p-summary-only",
         "p2p-retrieval-only"]


def test_registry_has_exactly_the_documented_names_in_table_order() -> None:
    assert list(METHODS) == NAMES
    assert all(cls.spec.name == name for name, cls in METHODS.items())


def test_parse_methods() -> None:
    assert parse_methods("p2p, base,base") == ["base", "p2p"]  # registry order, no repeats
    assert parse_methods("all") == NAMES
    with pytest.raises(ConfigError, match="unknown method"):
        parse_methods("base,lora")
    with pytest.raises(ConfigError):
        parse_methods(" , ")


def test_answers_made_from_profile_text_are_keyed_by_the_profile_format(monkeypatch) -> None:
    """A new profile wording must not reuse cached answers of methods that read profiles."""
    from types import SimpleNamespace

    from p2p_local.baselines import common

    env = SimpleNamespace(settings=MethodSettings(summaries=False))

    def shared_key(cls: type) -> dict:
        method = cls.__new__(cls)  # the shared part of the key (overrides add to it)
        method.env = env
        return common.Method.fingerprint(method)

    before = {name: shared_key(cls) for name, cls in METHODS.items()}
    monkeypatch.setattr(common, "PROFILE_FORMAT", common.PROFILE_FORMAT + 1)
    changed = {name for name, cls in METHODS.items() if shared_key(cls) != before[name]}
    assert changed == {"rag", "pag", "full-history", "p2p", "p2p-per-query", "p2p-shuffled",
                       "p2p-per-query-shuffled", "p2p-random", "p2p-summary-only",
                       "p2p-retrieval-only"}


def test_method_settings_validation() -> None:
    assert MethodSettings().answer_tokens("rating") == 8
    assert MethodSettings(max_tokens=3).answer_tokens("generation") == 3
    with pytest.raises(ConfigError, match="k must be"):
        MethodSettings(k=-1)
    with pytest.raises(ConfigError, match="oppu_lr"):
        MethodSettings(oppu_lr=0)
    with pytest.raises(ConfigError, match="repeat_penalty must be in 1..2"):
        MethodSettings(repeat_penalty=0.9)
    for bad in (0, 4.5, True):
        with pytest.raises(ConfigError, match=r"adapter_scale must be in \(0, 4\]"):
            MethodSettings(adapter_scale=bad)


def _user(items: list[HistoryItem]) -> UserRecord:
    return UserRecord("u1", "T", items, [Query("q1", "question", "5")])


def test_oppu_examples_for_lamp_records() -> None:
    rating = TaskSpec("LaMP_3", "rate", "rating", ("1", "2", "3", "4", "5"))
    ex = user_examples(rating, _user([HistoryItem(text="Nice kettle.", score=4.0,
                                                  kind="rating")]))
    assert [(e.target, "Nice kettle." in e.prompt) for e in ex] == [("4", True)]

    tags = TaskSpec("LaMP_2", "tag", "classification", ("comedy", "drama"))
    ex = user_examples(tags, _user([HistoryItem(text="Two friends.", label="comedy",
                                                kind="tag")]))
    assert ex[0].target == "comedy" and ex[0].prompt.startswith(LABEL_PROMPT.split("{")[0])

    gen = TaskSpec("LaMP_5", "titles", "generation")
    paper = HistoryItem(text="Old paper\nWe study graphs.", meta={
        "lamp": {"title": "Old paper", "abstract": "We study graphs."}})
    tweet = HistoryItem(text="Loving the sun today")
    ex = user_examples(gen, _user([paper, tweet]))
    assert [e.target for e in ex] == ["Old paper", "Loving the sun today"]
    assert ex[0].prompt == TITLE_PROMPT.format(text="We study graphs.")
    assert ex[1].prompt == STYLE_PROMPT
