"""BM25 retrieval: tokenization, ranking on real text, k bounds, ties, the digest cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2p_local.errors import ConfigError
from p2p_local.profile.retrieval import (
    STOPWORDS,
    BM25Index,
    DigestCache,
    RetrievalSettings,
    tokenize,
)

DATA = Path(__file__).parent / "data"


def _texts(name: str) -> list[str]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


# --- tokenization ------------------------------------------------------------------------


def test_tokenize_lowercases_splits_on_punctuation_and_drops_stopwords() -> None:
    assert tokenize("The Cast-Iron skillet, and THE knife!") == ["cast", "iron", "skillet", "knife"]


def test_tokenize_keeps_digits_and_unicode_letters() -> None:
    assert tokenize("Über 20 Crème-brûlée recipes_2024") == [
        "über", "20", "crème", "brûlée", "recipes", "2024"
    ]


def test_tokenize_casefolds_and_drops_contraction_fragments() -> None:
    assert tokenize("STRASSE straße") == ["strasse", "strasse"]
    assert tokenize("I don't think it's broken") == ["don", "think", "broken"]


def test_tokenize_of_only_stopwords_or_punctuation_is_empty() -> None:
    assert tokenize("the and of, to!") == []
    assert tokenize("  ... --- ") == []
    assert {"the", "and", "a"} <= STOPWORDS


# --- ranking on a real-text fixture --------------------------------------------------------


@pytest.fixture(scope="module")
def reviews_index() -> BM25Index:
    return BM25Index(_texts("reviews.jsonl"))


@pytest.mark.parametrize(
    ("query", "expected_start"),
    [
        ("which skillet is good for searing steak in the oven?", "Solid cast iron skillet"),
        ("my tent leaks when it rains", "Tent leaked at the seams"),
        ("lights for cycling to work in winter", "Bike lights are bright"),
        ("is this grinder noisy for espresso", "The espresso grinder"),
        ("trekking poles that do not collapse on descents", "Hiking poles collapsed"),
    ],
)
def test_bm25_ranks_the_relevant_item_first(
    reviews_index: BM25Index, query: str, expected_start: str
) -> None:
    hits = reviews_index.search(query, k=3)
    assert hits[0].text.startswith(expected_start)
    assert hits[0].score > hits[1].score  # a real win, not a tie broken by recency
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_k_zero_retrieves_nothing(reviews_index: BM25Index) -> None:
    assert reviews_index.search("cast iron skillet", k=0) == []


def test_k_is_capped_by_history_size_and_bounded() -> None:
    index = BM25Index(["one apple", "two pears"])
    assert len(index.search("apple", k=32)) == 2
    for bad in (-1, 33, 2.5):
        with pytest.raises(ConfigError, match="k must be"):
            index.search("apple", k=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="got 40"):
        RetrievalSettings(k=40)


def test_ids_and_positions_are_reported() -> None:
    index = BM25Index(["red bicycle", "green kayak", "blue bicycle helmet"], ids=["a", "b", "c"])
    hits = index.search("kayak", k=1)
    assert (hits[0].id, hits[0].position) == ("b", 1)
    with pytest.raises(ConfigError, match="ids has 1 entries"):
        BM25Index(["x", "y"], ids=["only-one"])


def test_ties_go_to_the_most_recent_item() -> None:
    index = BM25Index(["garden notes", "kitchen notes", "garage notes"])
    # No item shares a word with the query: all score 0, newest first.
    assert [h.position for h in index.search("violin", k=3)] == [2, 1, 0]
    # An empty query behaves the same.
    assert [h.position for h in index.search("the of and", k=2)] == [2, 1]


def test_tiny_histories_never_rank_a_match_below_a_non_match() -> None:
    # "coffee" is in 2 of 3 items: plain BM25Okapi IDF would go negative here.
    index = BM25Index(["coffee beans", "coffee grinder", "tea kettle"])
    hits = index.search("coffee", k=3)
    assert {h.position for h in hits[:2]} == {0, 1}
    assert hits[0].score > 0 and hits[2].score == 0


def test_history_of_only_stopwords_still_answers() -> None:
    index = BM25Index(["the", "and of"])
    assert [h.score for h in index.search("the", k=2)] == [0.0, 0.0]


# --- the digest cache ---------------------------------------------------------------------


def test_digest_cache_builds_once_per_digest_and_evicts_oldest() -> None:
    cache: DigestCache[BM25Index] = DigestCache(max_entries=2)
    builds: list[str] = []

    def builder(tag: str):
        def build() -> BM25Index:
            builds.append(tag)
            return BM25Index([f"{tag} text"])

        return build

    first = cache.get_or_build("d1", builder("d1"))
    assert cache.get_or_build("d1", builder("d1")) is first
    cache.get_or_build("d2", builder("d2"))
    cache.get_or_build("d3", builder("d3"))  # evicts d1
    assert cache.get("d1") is None and len(cache) == 2
    cache.get_or_build("d1", builder("d1"))
    assert builds == ["d1", "d2", "d3", "d1"]
    with pytest.raises(ConfigError, match="max_entries"):
        DigestCache(max_entries=0)
