"""The profile text without a vault: sections, per-user vs per-query, the JSON form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2p_local.errors import ConfigError, EmptyHistoryError
from p2p_local.profile.builder import (
    EMBED_INSTRUCTION,
    ProfileSettings,
    build_index,
    build_profile,
    render_profile,
)
from p2p_local.profile.statistics import compute_statistics
from p2p_local.profile.summarize import DEFAULT_TASK
from p2p_local.store.records import HistoryItem, StoredItem

DATA = Path(__file__).parent / "data"
SUMMARY = "This user writes short, practical reviews and rates durability above looks."


def _items(name: str) -> list[HistoryItem]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [HistoryItem.from_dict(json.loads(line)) for line in lines if line.strip()]


def test_per_query_profile_has_all_sections_in_order() -> None:
    items = _items("reviews.jsonl")
    prof = build_profile(items, summary=SUMMARY, query="cast iron skillet for steak")
    body = prof.body
    assert body.startswith(f"## User Profile: {SUMMARY}\n\n## User History Statistics: ")
    assert body.index("## User History Statistics:") < body.index("## User History:\n- ")
    assert len(prof.retrieved) == 2
    assert prof.retrieved[0].text.startswith("Solid cast iron skillet")
    assert "- Solid cast iron skillet" in body and "(rating 5, label kitchen)" in body
    assert prof.text == EMBED_INSTRUCTION.format(task=DEFAULT_TASK, profile=body)
    assert prof.query == "cast iron skillet for steak"


def test_per_user_profile_is_summary_and_statistics_only() -> None:
    prof = build_profile(_items("reviews.jsonl"), summary=SUMMARY)
    assert prof.retrieved == []
    assert "## User History:" not in prof.body
    assert "## User History Statistics:" in prof.body


def test_task_is_named_in_the_embedding_instruction() -> None:
    task = "Predict the star rating (1-5) the user gives a product from their review."
    prof = build_profile(_items("reviews.jsonl"), summary=SUMMARY, task=task)
    assert task in prof.text and DEFAULT_TASK not in prof.text
    assert prof.task == task


def test_profile_without_summary_or_statistics_shows_recent_items() -> None:
    items = _items("notes.jsonl")
    prof = build_profile(items)
    assert prof.summary is None and prof.statistics is None
    assert "## User Profile" not in prof.body
    assert [r.position for r in prof.retrieved] == [9, 8]  # newest first
    assert prof.body.startswith("## User History:\n- Sent the first fifty pages")


def test_recent_items_follow_summary_and_statistics_in_a_per_user_profile() -> None:
    items = _items("reviews.jsonl")
    prof = build_profile(items, summary=SUMMARY, settings=ProfileSettings(recent=3))
    body = prof.body
    assert body.index("## User Profile:") < body.index("## User History Statistics:") < (
        body.index("## User History:\n- "))
    newest_first = list(range(len(items)))[::-1][:3]
    assert [r.position for r in prof.retrieved] == newest_first
    assert body.count("\n- ") == 3
    # a per-query profile still lists what BM25 retrieves, k of them
    per_query = build_profile(items, query="skillet", settings=ProfileSettings(recent=3))
    assert len(per_query.retrieved) == 2 and per_query.retrieved[0].score > 0
    # 0 keeps the per-user profile as before: summary and statistics only
    assert build_profile(items, summary=SUMMARY, settings=ProfileSettings(recent=0)).body == (
        build_profile(items, summary=SUMMARY).body)
    for bad in (-1, 33, 2.0, True):
        with pytest.raises(ConfigError, match="recent"):
            ProfileSettings(recent=bad)  # type: ignore[arg-type]
    settings = ProfileSettings(k=4, item_chars=200, statistics=False, recent=8)
    assert ProfileSettings.from_dict(settings.to_dict()) == settings
    assert ProfileSettings.from_dict({}) == ProfileSettings()


def test_k_zero_and_items_are_cut() -> None:
    items = _items("reviews.jsonl")
    prof = build_profile(items, summary=SUMMARY, query="skillet", settings=ProfileSettings(k=0))
    assert prof.retrieved == [] and "## User History:" not in prof.body
    short = build_profile(items, query="skillet", settings=ProfileSettings(k=1, item_chars=60))
    line = short.body.split("## User History:\n- ")[1]
    assert len(line) <= 60 and line.endswith(" ...")
    with pytest.raises(ConfigError, match="item_chars"):
        ProfileSettings(item_chars=10)


def test_ids_come_from_the_vault_or_the_item() -> None:
    items = _items("reviews.jsonl")
    stored = [StoredItem(row=i, digest=it.content_hash(), item=it) for i, it in enumerate(items)]
    prof = build_profile(stored, query="tent rain")
    assert prof.retrieved[0].id == stored[5].short_id
    own = [HistoryItem(text="kayak trip", id="k1"), HistoryItem(text="piano lesson")]
    assert [r.id for r in build_profile(own, query="piano", settings=ProfileSettings(k=2))
            .retrieved] == ["1", "k1"]


def test_prebuilt_index_and_statistics_give_the_same_profile() -> None:
    items = _items("reviews.jsonl")
    fresh = build_profile(items, summary=SUMMARY, query="headphones battery")
    reused = build_profile(
        items, summary=SUMMARY, query="headphones battery",
        index=build_index(items), statistics=compute_statistics(items),
    )
    assert fresh.text == reused.text
    with pytest.raises(ConfigError, match="index has 2 items"):
        build_profile(items, query="x", index=build_index(items[:2]))


def test_statistics_can_be_left_out() -> None:
    items = _items("reviews.jsonl")
    off = build_profile(items, summary=SUMMARY, settings=ProfileSettings(statistics=False))
    assert off.statistics is None and "Statistics" not in off.body


def test_empty_history_says_to_ingest_first() -> None:
    with pytest.raises(EmptyHistoryError, match="ingest first: p2p-local ingest FILE"):
        build_profile([], summary=SUMMARY)


def test_json_form_has_the_cli_contract_fields() -> None:
    prof = build_profile(_items("reviews.jsonl"), summary=SUMMARY, query="tent")
    data = json.loads(json.dumps(prof.to_dict()))
    assert data["summary"] == SUMMARY
    assert data["statistics"]["rated"] == 12
    assert [set(r) for r in data["retrieved"]] == [{"id", "text", "score"}] * 2
    assert data["retrieved"][0]["score"] >= data["retrieved"][1]["score"]
    assert data["embedding_dim"] == 0 and data["embedding_model"] == ""  # not embedded yet


def test_render_profile_skips_empty_sections() -> None:
    assert render_profile(None, None, []) == ""
    assert render_profile("  ", None, ["one"]) == "## User History:\n- one"
