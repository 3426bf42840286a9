from __future__ import annotations

from pathlib import Path

from p2p_local.datasets import fortunes
from p2p_local.datasets.base import ConvertSettings, TaskDataset, validate_dataset


def test_authors_with_five_quotes(fortunes_ds: TaskDataset) -> None:
    assert len(fortunes_ds) == 240
    assert fortunes_ds.sources == (
        "fortunes==1:1.99.1-7.3",
        "fortunes-min==1:1.99.1-7.3",
        "fortune-anarchism==1.8.0-1",
    )
    validate_dataset(fortunes_ds)
    names = {u.meta["name"] for u in fortunes_ds.users}
    assert {"Oscar Wilde", "Mark Twain", "Emma Goldman", "Larry Wall"} <= names
    assert not any(n.lower().startswith(("anonymous", "unknown", "seen")) for n in names)
    for user in fortunes_ds.users:
        assert user.meta["quotes"] >= 5
        assert 1 <= len(user.queries) <= 3
        assert len(user.history) + len(user.queries) == user.meta["quotes"]
        history_ids = {h.id for h in user.history}
        history_texts = {h.text for h in user.history}
        for q in user.queries:
            assert q.meta["item_id"] not in history_ids
            assert q.output and q.output.strip() and q.meta["prefix"] in q.input
            # The held-out quote is prefix + rest; it is not in the history.
            assert not any(q.meta["prefix"] in t and q.output in t for t in history_texts)
            assert len(q.meta["prefix"].split()) >= 2 and len(q.output.split()) >= 2


def test_query_choice_is_seeded(fortune_dirs: list[Path], fortunes_ds: TaskDataset) -> None:
    again = fortunes.convert(fortune_dirs)
    other = fortunes.convert(fortune_dirs, ConvertSettings(seed=1))
    ids = [[q.id for q in u.queries] for u in fortunes_ds.users]
    assert ids == [[q.id for q in u.queries] for u in again.users]
    assert ids != [[q.id for q in u.queries] for u in other.users]
    assert fortunes_ds.user_ids() == other.user_ids()


def test_attribution_parsing() -> None:
    text = (
        "Be yourself; everyone else is already taken.\n\t\t-- Oscar Wilde\n%\n"
        "A line with no author.\n%\n"
        "Multi\nline quote here.\n\t-- Douglas Coupland, \"Generation X: Tales for an\n"
        "\tAccelerated Culture\"\n%\n"
        "Perl is worse than Python because people wanted it worse.\n"
        "\t\t-- Larry Wall in <1992Aug26.184221.29627@netlabs.com>\n%\n"
        "Mind your step.\n\t\t-- Anonymous\n"
    )
    cookies = fortunes.parse_cookies(text, "test")
    assert [(c.author, c.text) for c in cookies] == [
        ("Oscar Wilde", "Be yourself; everyone else is already taken."),
        ("Douglas Coupland", "Multi\nline quote here."),
        ("Larry Wall", "Perl is worse than Python because people wanted it worse."),
    ]
    assert fortunes.author_of("Honor'\x08e de Balzac") == "Honore de Balzac"
    assert fortunes.author_of("Seen on #Debian") is None


def test_quote_split_prefers_sentence_ends() -> None:
    split = fortunes.split_quote("Resignation is death. Revolt is life, and life is sweet.")
    assert split is not None
    assert (split.prefix, split.rest) == (
        "Resignation is death.", "Revolt is life, and life is sweet."
    )
    plain = fortunes.split_quote("one two three four five six seven eight")
    assert plain is not None and (plain.prefix, plain.rest) == (
        "one two three four", "five six seven eight"
    )
    assert fortunes.split_quote("Too short to split.") is None
