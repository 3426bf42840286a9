"""The shared prompt: context layout and fitting into the window (word-count tokenizer)."""

from __future__ import annotations

import pytest

from p2p_local.baselines.prompts import Context, build_messages, cut_text, prompt_budget
from p2p_local.errors import ConfigError


def words(messages: list[dict]) -> int:
    """A stand-in tokenizer: one token per word, plus 2 per message for the template."""
    return sum(len(m["content"].split()) + 2 for m in messages)


QUERY = "Rate this movie from 1 to 5: Alien (1979)"


def test_no_context_is_the_query_alone() -> None:
    p = build_messages(QUERY, None, count_prompt=words, budget=100)
    assert p.messages == [{"role": "user", "content": QUERY}]
    assert p.tokens == len(QUERY.split()) + 2 and not p.truncated


def test_context_layout_and_system_message() -> None:
    ctx = Context(fixed=("## User Profile: likes sci-fi",), items=("Aliens (rating 5)",
                                                                    "Heat (rating 2)"))
    p = build_messages(QUERY, ctx, count_prompt=words, budget=100, system="Be brief.")
    assert p.messages[0] == {"role": "system", "content": "Be brief."}
    assert p.messages[1]["content"] == (
        "## User Profile: likes sci-fi\n\n## User History:\n- Aliens (rating 5)\n"
        "- Heat (rating 2)\n\n" + QUERY
    )
    assert (p.items_used, p.items_total) == (2, 2)


def test_items_are_dropped_from_the_end_of_the_priority_order() -> None:
    items = tuple(f"item{i} " + "w " * 9 for i in range(10))  # 10 words each
    ctx = Context(items=items)
    full = build_messages(QUERY, ctx, count_prompt=words, budget=1000)
    budget = full.tokens - 25  # room for 7 of the 10 items (each line costs 11 words)
    p = build_messages(QUERY, ctx, count_prompt=words, budget=budget)
    assert p.items_used == 7 and p.truncated and p.tokens <= budget
    text = p.messages[-1]["content"]
    assert "item6" in text and "item7" not in text
    # "reversed": the kept (newest-first) items are shown oldest first
    r = build_messages(QUERY, Context(items=items, show="reversed"), count_prompt=words,
                       budget=budget)
    body = r.messages[-1]["content"]
    assert r.items_used == 7 and body.index("item6") < body.index("item0")


def test_long_fixed_sections_and_long_query_are_cut() -> None:
    ctx = Context(fixed=("## User Profile: " + "long " * 300,), items=("x",))
    p = build_messages(QUERY, ctx, count_prompt=words, budget=60)
    assert p.tokens <= 60 and QUERY in p.messages[-1]["content"]
    q = "start " + "middle " * 500 + "end"
    p = build_messages(q, ctx, count_prompt=words, budget=50)
    content = p.messages[-1]["content"]
    assert p.tokens <= 50 and content.startswith("start") and content.endswith("end")
    assert " ... " in content and p.items_used == 0


def test_budget_and_cut_text() -> None:
    assert prompt_budget(2048, 8) == 2048 - 8 - 8
    with pytest.raises(ConfigError):
        build_messages(QUERY, None, count_prompt=words, budget=4)
    assert cut_text("a  b\n c", 100) == "a b c"
    cut = cut_text("word " * 50, 40)
    assert len(cut) <= 40 and cut.endswith(" ...")
