"""Ingest: JSONL schema and bad-line handling, LaMP and ChatGPT files, strict mode, streaming."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p_local.errors import InputError
from p2p_local.store._crypto import KdfParams
from p2p_local.store.ingest import (
    IngestSettings,
    Parsed,
    Rejection,
    _iter_array,
    detect_format,
    ingest_file,
    item_from_json,
    iter_records,
    lamp_profile_item,
)
from p2p_local.store.records import HistoryItem
from p2p_local.store.vault import Vault

PASS = "ingest test passphrase"


@pytest.fixture
def vault(tmp_path: Path):
    v = Vault.create(
        tmp_path / "v", PASS, kdf=KdfParams(memory_kib=64, iterations=1, lanes=1)
    ).vault
    yield v
    v.close()


def one(v: Vault):
    return lambda user: v if user is None else pytest.fail(f"unexpected user {user}")


GOOD = [b'{"text": "good one"}', b'{"input": "q", "output": "a"}', b'{"text": "rated", "score": 3}']
BAD = {
    "invalid UTF-8": b'{"text": "caf\xe9"}',
    "invalid JSON": b'{"text": "unterminated}',
    "non-object": b'["text", "array"]',
    "missing fields": b'{"kind": "text"}',
    "half pair": b'{"input": "only input"}',
    "NaN": b'{"text": "x", "score": NaN}',
    "Infinity": b'{"text": "x", "meta": {"v": -Infinity}}',
    "huge number": b'{"text": "x", "score": 1e400}',
    "lone surrogate": b'{"text": "broken \\ud800 surrogate"}',
    "wrong type": b'{"text": 42}',
    "bad kind": b'{"text": "x", "kind": "diary"}',
    "bool score": b'{"text": "x", "score": true}',
    "empty text": b'{"text": "   "}',
    "deep nesting": b'{"text": "x", "meta": ' + b"[" * 100000 + b"]" * 100000 + b"}",
    "over the cap": b'{"text": "' + b"y" * (1024 * 1024 + 10) + b'"}',
    "BOM not at start": b'\xef\xbb\xbf{"text": "bom in the middle"}',
}


def test_bad_jsonl_lines_are_reported_and_good_ones_stored(vault: Vault, tmp_path: Path) -> None:
    lines = [b"\xef\xbb\xbf" + GOOD[0]]  # a BOM at the start of the file is allowed
    expected_bad: dict[int, str] = {}
    for name, raw in BAD.items():
        lines.append(raw)
        expected_bad[len(lines)] = name
        lines.append(b"")  # blank lines are skipped silently
        lines.append(b"   \t")
    lines.append(GOOD[1])
    lines.append(GOOD[2])
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")  # CRLF line ends
    report = ingest_file(path, one(vault))
    assert (report.added, report.duplicates, report.rejected) == (3, 0, len(BAD))
    assert [e.line for e in report.errors] == list(expected_bad)
    assert all(e.reason for e in report.errors)
    assert vault.count() == 3
    texts = [s.item.text for s in vault.iter_items()]
    assert texts == ["good one", "q\na", "rated"]
    reasons = {expected_bad[e.line]: e.reason for e in report.errors}
    assert "UTF-8" in reasons["invalid UTF-8"]
    assert "invalid JSON" in reasons["invalid JSON"]
    assert "object" in reasons["non-object"]
    assert "missing 'text'" in reasons["missing fields"]
    assert "NaN" in reasons["NaN"]
    assert "surrogate" in reasons["lone surrogate"]
    assert "limit" in reasons["over the cap"]
    assert "nested" in reasons["deep nesting"]
    # Re-ingesting the same file adds nothing.
    again = ingest_file(path, one(vault))
    assert (again.added, again.duplicates, again.rejected) == (0, 3, len(BAD))
    assert vault.count() == 3


def test_strict_stores_nothing_when_a_line_is_bad(vault: Vault, tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"\n".join([GOOD[0], BAD["invalid JSON"], GOOD[1]]) + b"\n")
    report = ingest_file(path, one(vault), strict=True)
    assert (report.stored, report.added, report.rejected) == (False, 0, 1)
    assert report.errors == (Rejection(2, report.errors[0].reason),)
    assert vault.count() == 0
    path.write_bytes(b"\n".join(GOOD) + b"\n")
    report = ingest_file(path, one(vault), strict=True)
    assert (report.stored, report.added, report.rejected) == (True, 3, 0)
    assert vault.count() == 3


def test_batches_commit_as_they_go(vault: Vault, tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps({"text": f"line {i}"}) + "\n" for i in range(250)))
    seen: list[int] = []
    report = ingest_file(
        path,
        one(vault),
        settings=IngestSettings(batch_size=100, background_writer=False),
        progress=lambda done, total: seen.append(vault.count()),
    )
    assert report.added == 250
    assert seen[:2] == [100, 200] and seen[-1] == 250


def test_jsonl_schema_defaults_and_extra_keys() -> None:
    it = item_from_json({"input": "i", "output": "o", "user_id": 5, "meta": {"a": 1}})
    assert (it.kind, it.text, it.source, it.meta) == (
        "pair",
        "i\no",
        None,
        {"user_id": 5, "a": 1},
    )
    assert item_from_json({"text": "t", "score": 4}).kind == "rating"
    assert item_from_json({"text": "t", "id": 12, "label": 3}).id == "12"
    assert item_from_json({"text": "t", "source": "mine"}).source == "mine"
    with pytest.raises(InputError, match="time"):
        item_from_json({"text": "t", "time": [1]})
    with pytest.raises(InputError, match="meta"):
        item_from_json({"text": "t", "meta": "x"})


def test_export_lines_reingest_as_duplicates(vault: Vault, tmp_path: Path) -> None:
    src = tmp_path / "a.jsonl"
    src.write_text(
        '{"text": "x", "meta": {"z": [1, 2]}, "extra": true, "time": 17}\n'
        '{"input": "q", "output": "a", "kind": "chat", "score": 1.5, "label": "l"}\n'
    )
    ingest_file(src, one(vault))
    out = tmp_path / "export.jsonl"
    out.write_text("".join(json.dumps(s.item.to_dict()) + "\n" for s in vault.iter_items()))
    report = ingest_file(out, one(vault))
    assert (report.added, report.duplicates) == (0, 2)


LAMP = [
    {
        "id": "q1",
        "input": "Which category...",
        "user_id": "u1",
        "profile": [
            {"id": "p1", "text": "Article body", "title": "Headline", "date": "2020-01-01"},
            {"id": "p2", "text": "Story", "title": "T", "category": "sports"},
            {"id": "p3", "title": "Paper", "abstract": "We study..."},
            {"id": "p4", "description": "A heist film", "tag": "crime"},
            {"id": "p5", "text": "Great blender", "score": "5"},
            {"id": "p6", "text": "a tweet"},
            {"id": "p7", "score": "3"},
            "not an object",
        ],
    },
    {"id": "q2", "input": "...", "user_id": 42, "profile": [{"text": "u42 item"}]},
    {"id": "q3", "input": "no profile"},
    {"id": "q4", "input": "...", "profile": [{"text": "no user id"}]},
]


def test_lamp_profile_items_map_to_kinds() -> None:
    items = [lamp_profile_item(p) for p in LAMP[0]["profile"][:6]]
    assert [i.kind for i in items] == ["pair", "tag", "pair", "tag", "rating", "text"]
    assert (items[0].input, items[0].output, items[0].time) == (
        "Article body",
        "Headline",
        "2020-01-01",
    )
    assert items[1].label == "sports" and items[3].label == "crime"
    assert (items[2].input, items[2].output) == ("We study...", "Paper")
    assert items[4].score == 5.0 and all(i.source == "lamp" for i in items)
    assert [i.id for i in items] == ["p1", "p2", "p3", "p4", "p5", "p6"]


def test_lamp_file_routes_items_by_user_id(vault: Vault, tmp_path: Path) -> None:
    path = tmp_path / "questions.json"
    path.write_text(json.dumps(LAMP, indent=2))
    assert detect_format(path) == "lamp"
    others: dict[str, list[HistoryItem]] = {}

    class Sink:
        def __init__(self, user: str) -> None:
            self.user = user

        def add(self, items):
            from p2p_local.store.vault import AddResult

            others.setdefault(self.user, []).extend(items)
            return AddResult(len(items), 0)

    report = ingest_file(path, lambda u: vault if u is None else Sink(u))
    assert [len(others["u1"]), len(others["42"])] == [6, 1]
    assert vault.count() == 1
    assert report.added == 8 and report.rejected == 3
    assert set(report.users) == {None, "u1", "42"}
    reasons = sorted(e.reason for e in report.errors)
    assert any("profile entry 6" in r and "no text" in r for r in reasons)
    assert any("profile entry 7" in r for r in reasons)
    assert any("question 2" in r and "no 'profile'" in r for r in reasons)


def chatgpt_export() -> list[dict]:
    def node(nid, parent, role, parts, t, **extra):
        return {
            "id": nid,
            "parent": parent,
            "children": [],
            "message": {
                "id": nid,
                "author": {"role": role},
                "create_time": t,
                "content": {"content_type": "text", "parts": parts},
                **extra,
            },
        }

    mapping = {
        "root": {"id": "root", "parent": None, "children": ["s"], "message": None},
        "s": node("s", "root", "system", [""], None),
        "u2": node("u2", "a1", "user", ["second question"], 20.0),
        "u1": node("u1", "s", "user", ["first question", {"image": "x"}, "more"], 10.0),
        "a1": node("a1", "u1", "assistant", ["an answer"], 15.0),
        "img": node("img", "a1", "user", [{"asset_pointer": "file"}], 25.0),
        "hid": node(
            "hid",
            "a1",
            "user",
            ["hidden context"],
            26.0,
            metadata={"is_visually_hidden_from_conversation": True},
        ),
        "bad": {"id": "bad", "message": {"author": {"role": "user"}, "content": {}}},
    }
    return [
        {"title": "Bread talk", "create_time": 5.0, "mapping": mapping},
        {"title": "Broken", "create_time": 6.0},
    ]


def test_chatgpt_export_keeps_the_users_own_turns(vault: Vault, tmp_path: Path) -> None:
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(chatgpt_export()))
    assert detect_format(path) == "chatgpt"
    report = ingest_file(path, one(vault))
    assert (report.added, report.rejected) == (2, 2)
    got = [s.item for s in vault.iter_items()]
    assert [i.text for i in got] == ["first question\nmore", "second question"]
    assert all(i.kind == "chat" and i.source == "chatgpt" for i in got)
    assert got[0].meta == {"conversation": "Bread talk"} and got[0].time == 10.0


def test_detect_format(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('[{"foo": 1}]')
    with pytest.raises(InputError, match="--format"):
        detect_format(tmp_path / "x.json")
    (tmp_path / "y.txt").write_text('{"text": "a"}\n')
    assert detect_format(tmp_path / "y.txt") == "jsonl"
    (tmp_path / "z.jsonl").write_text("[]")
    assert detect_format(tmp_path / "z.jsonl") == "jsonl"


def test_broken_json_arrays_are_reported_per_element(tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    good = json.dumps({"profile": [{"text": "ok"}]})
    path.write_text(f'[\n{good},\n{{bad json}},\n 7,\n{good[:-1]}, "x": 1}}\n]\njunk')
    recs = list(iter_records(path, "lamp"))
    kinds = [type(r).__name__ for r in recs]
    assert kinds == ["Parsed", "Rejection", "Rejection", "Parsed", "Rejection"]
    assert [r.line for r in recs] == [2, 3, 4, 5, 7]
    assert "after the end" in recs[-1].reason
    path.write_text(f"[{good}, {good[:20]}")
    recs = list(iter_records(path, "lamp"))
    assert isinstance(recs[-1], Rejection) and "truncated" in recs[-1].reason
    path.write_text("")
    with pytest.raises(InputError, match="empty"):
        list(iter_records(path, "lamp"))
    path.write_text('{"profile": []}')
    with pytest.raises(InputError, match="not a JSON array"):
        list(iter_records(path, "lamp"))


def test_oversized_elements_are_skipped_without_stopping(tmp_path: Path) -> None:
    big = {"profile": [{"text": "z" * 5000}]}
    small = {"profile": [{"text": "small"}]}
    path = tmp_path / "q.json"
    path.write_text(json.dumps([small, big, small | {"user_id": "b"}]))
    recs = list(iter_records(path, "lamp", IngestSettings(max_element_bytes=1000)))
    assert [type(r) for r in recs] == [Parsed, Rejection, Parsed]
    assert "limit" in recs[1].reason


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    elements=st.lists(json_values, max_size=6),
    indent=st.sampled_from([None, 0, 2]),
    ascii_only=st.booleans(),
    chunk=st.integers(min_value=1, max_value=64),
)
def test_array_scanner_splits_any_json_array(elements, indent, ascii_only, chunk) -> None:
    data = json.dumps(elements, indent=indent, ensure_ascii=ascii_only).encode("utf-8")
    got = list(_iter_array(io.BytesIO(data), 1 << 20, chunk))
    assert all(e.error is None for e in got)
    assert [json.loads(e.data) for e in got] == elements
