"""The summary: context-window policy, output cleaning, and the real default model's summary."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from p2p_local.errors import ConfigError, EmptyHistoryError
from p2p_local.profile.summarize import (
    INSTRUCTION,
    SYSTEM_PROMPT,
    SummarySettings,
    build_messages,
    clean_summary,
    history_entities,
    recency_order,
    select_items,
    summarize,
)
from p2p_local.store.records import HistoryItem

DATA = Path(__file__).parent / "data"


def _items(name: str) -> list[HistoryItem]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [HistoryItem.from_dict(json.loads(line)) for line in lines if line.strip()]


def words(text: str) -> int:
    """A simple token counter: one token per whitespace-separated word."""
    return len(text.split())


# --- fitting the history into the window ------------------------------------------------------


def test_recency_follows_times_when_all_parse_else_insertion_order() -> None:
    timed = [
        HistoryItem(text="b", time="2024-03-01T10:00:00Z"),
        HistoryItem(text="a", time=1_600_000_000),
        HistoryItem(text="c", time="2024-05-01"),
    ]
    assert recency_order(timed) == [1, 0, 2]
    untimed = [*timed, HistoryItem(text="d", time="last tuesday")]
    assert recency_order(untimed) == [0, 1, 2, 3]



@pytest.fixture
def far_east_clock(monkeypatch: pytest.MonkeyPatch):
    """The process's local time zone at UTC+9 (a POSIX rule: no time-zone database needed)."""
    monkeypatch.setenv("TZ", "JST-9")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_naive_times_are_utc_whatever_the_local_zone(far_east_clock) -> None:
    items = [
        HistoryItem(text="naive noon", time="2024-01-01T12:00:00"),
        HistoryItem(text="aware morning", time="2024-01-01T06:00:00+00:00"),
    ]
    assert recency_order(items) == [1, 0]  # 12:00 UTC is after 06:00 UTC (03:00 if local)

def test_selection_takes_the_newest_then_the_most_different_older_items() -> None:
    coffee = [HistoryItem(text=f"espresso coffee beans roast review number {i}") for i in range(20)]
    odd = HistoryItem(text="violin lesson practice scales tonight")
    recent = [HistoryItem(text=f"recent note about the garden shed {i}") for i in range(3)]
    items = [odd, *coffee, *recent]  # oldest first: the odd one is the oldest
    settings = SummarySettings(recent_fraction=0.3, item_max_tokens=16)
    sel = select_items(items, budget=60, count_tokens=words, settings=settings)
    assert sel.tokens <= 60
    assert {21, 22} <= set(sel.positions)  # newest first
    assert 0 in sel.positions  # the only item unlike the others, despite being the oldest
    assert sel.positions == sorted(sel.positions)  # shown oldest first
    assert len(sel.lines) == len(sel.positions)


def test_selection_respects_the_budget_and_cuts_long_items() -> None:
    long_item = HistoryItem(text=" ".join(f"word{i}" for i in range(500)), score=4)
    items = [long_item, HistoryItem(text="short one")]
    settings = SummarySettings(item_max_tokens=20)
    sel = select_items(items, budget=40, count_tokens=words, settings=settings)
    assert set(sel.positions) == {0, 1}
    assert all(words(line) <= 20 for line in sel.lines)
    assert sel.lines[0].endswith(" ...")
    everything = select_items(_items("reviews.jsonl"), 10_000, words, SummarySettings())
    assert len(everything.positions) == 12
    assert "(rating 4, label kitchen)" in everything.lines[0]


def test_settings_are_validated_with_the_field_named() -> None:
    with pytest.raises(ConfigError, match="max_tokens must be an integer in 16..512, got 4"):
        SummarySettings(max_tokens=4)
    with pytest.raises(ConfigError, match="recent_fraction"):
        SummarySettings(recent_fraction=1.5)


# --- cleaning -----------------------------------------------------------------------------------


PROMPT = "\n".join(m["content"] for m in build_messages(["a line of history"], "Chat."))


def test_cleaning_removes_headers_lists_emphasis_and_labels() -> None:
    raw = (
        "## User Profile\n"
        "Summary: **This user** writes short reviews.\n"
        "Their habits are:\n"
        "- checks durability first\n"
        "* rates harshly when a product fails early\n"
    )
    out = clean_summary(raw, PROMPT, words, 100)
    assert out == (
        "This user writes short reviews. checks durability first. "
        "rates harshly when a product fails early."
    )
    assert "#" not in out and "*" not in out and "\n" not in out


def test_cleaning_drops_echoed_prompt_and_repeated_sentences() -> None:
    echoed = INSTRUCTION.format(task="Chat.").split(". ")[1]  # a sentence of the instruction
    raw = (
        f"{echoed}. This user is careful with money. They are careful with money, always. "
        "This user is careful with money. They compare options before buying."
    )
    out = clean_summary(raw, PROMPT, words, 100)
    assert out == "This user is careful with money. They compare options before buying."


def test_cleaning_keeps_whole_sentences_within_the_cap() -> None:
    raw = "One two three four five. Six seven eight nine ten. Eleven twelve thirteen"
    expected = "One two three four five. Six seven eight nine ten."
    assert clean_summary(raw, PROMPT, words, 12) == expected
    one_long = " ".join(f"w{i}" for i in range(40))
    cut = clean_summary(one_long, PROMPT, words, 10)
    assert words(cut) <= 10 and cut.endswith(" ...")
    assert clean_summary("## \n\n- \n", PROMPT, words, 10) == ""


def test_entities_are_the_names_capitalized_mid_sentence() -> None:
    lines = [
        "Sent the pages to Maria in Lisbon. She liked them.",
        "Dear diary, the Rain came. the rain stopped.",
        "I met Maria at the Dunder Mifflin office.",
    ]
    assert history_entities(lines) == {"Maria", "Lisbon", "Dunder", "Mifflin"}


def test_cleaning_drops_sentences_that_name_entities() -> None:
    entities = frozenset({"Maria", "Lisbon"})
    raw = "This user writes to Maria often. They write long, careful letters."
    assert clean_summary(raw, PROMPT, words, 100, entities) == (
        "They write long, careful letters."
    )
    only = "This user visits Maria in Lisbon every summer."
    assert clean_summary(only, PROMPT, words, 100, entities) == (
        "This user visits someone in someone every summer."
    )


def test_empty_history_is_refused() -> None:
    class NoModel:  # never called: the history check comes first
        name = "none"

    with pytest.raises(EmptyHistoryError, match="ingest first"):
        summarize([], NoModel())  # type: ignore[arg-type]


# --- the real default model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_summary(_llama_base_session):
    settings = SummarySettings(max_tokens=64)
    items = _items("reviews.jsonl")
    summary = summarize(items, _llama_base_session, settings=settings)
    # The whole history, so the copy check below covers items the budget left out too.
    messages = build_messages(
        select_items(items, 10_000, _llama_base_session.count_tokens, settings).lines,
        summary.task,
    )
    return summary, messages, settings


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = re.findall(r"\w+", text.casefold())
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


@pytest.mark.real_model
def test_real_summary_is_plain_nonempty_text_within_the_cap(real_summary, llama_base) -> None:
    summary, _, settings = real_summary
    assert summary.text.strip()
    assert len(re.findall(r"[A-Za-z]{3,}", summary.text)) >= 5  # words, not noise
    assert llama_base.count_tokens(summary.text) <= settings.max_tokens
    assert "\n" not in summary.text and "#" not in summary.text
    assert 6 <= summary.items_used <= 12 and summary.prompt_tokens > 300
    assert summary.model_id == "llamacpp:SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.real_model
def test_real_summary_does_not_echo_the_prompt(real_summary) -> None:
    summary, messages, _ = real_summary
    instructions = SYSTEM_PROMPT + "\n" + INSTRUCTION.format(task=summary.task)
    assert not _ngrams(summary.text, 6) & _ngrams(instructions, 6)
    # Nor does it copy the history: no 8 words in a row from any item.
    history = messages[1]["content"]
    assert not _ngrams(summary.text, 8) & _ngrams(history, 8)
    for opening in ("Things one person wrote", "Read the history", "You describe"):
        assert opening not in summary.text


def test_the_package_attribute_is_the_submodule_not_the_function() -> None:
    import inspect

    import p2p_local.profile as profile_pkg

    assert inspect.ismodule(profile_pkg.summarize)
    assert callable(profile_pkg.summarize.summarize)
