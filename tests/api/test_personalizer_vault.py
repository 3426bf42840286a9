"""The Personalizer facade's vault methods (what apps and the CLI call)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2p_local import Personalizer, api
from p2p_local.errors import AuthenticationError, InputError, VaultNotFoundError
from p2p_local.store.records import HistoryItem

PASS = "facade test passphrase"
SAMPLE = Path(api.__file__).parent / "data" / "sample_history.jsonl"


def test_create_ingest_stats_and_reopen(home: Path) -> None:
    p = Personalizer.create("maya", PASS)
    assert p.recovery_code and p.path == home / "users" / "maya"
    report = p.ingest_file(SAMPLE)
    assert (report.added, report.rejected, report.users) == (40, 0, {"maya": report.users["maya"]})
    stats = p.stats()
    assert stats.items == 40 and sum(stats.kinds.values()) == 40
    assert set(stats.kinds) == {"text", "pair", "rating", "tag"}
    p.close()
    with Personalizer("maya", passphrase=PASS) as again:
        assert again.recovery_code is None
        assert again.count() == 40
        page = again.history(limit=5, offset=10)
        assert [s.row for s in page] == list(range(10, 15))
        assert again.get_item(page[0].short_id) == page[0]
        hits = again.search_history("biscuit")
        assert hits and all("biscuit" in s.item.text.lower() for s in hits)
        assert again.history_digest() == again.vault.history_digest()
    assert Personalizer.list_users() == ["maya"] and Personalizer.exists("maya")
    assert not Personalizer.has_keychain_slot("maya")


def test_opening_needs_a_secret_and_an_existing_user(home: Path) -> None:
    with pytest.raises(VaultNotFoundError, match="p2p-local init --user ghost"):
        Personalizer("ghost", passphrase=PASS)
    Personalizer.create("u", PASS).close()
    with pytest.raises(InputError, match="needs the passphrase"):
        Personalizer("u")
    with pytest.raises(AuthenticationError):
        Personalizer("u", passphrase="wrong passphrase")
    with pytest.raises(InputError, match="invalid user name"):
        Personalizer("../etc", passphrase=PASS)


def test_export_round_trip_and_key_changes(home: Path, tmp_path: Path) -> None:
    p = Personalizer.create("k", PASS)
    p.add_items([HistoryItem(text="one"), HistoryItem(text="two", meta={"x": [1]})])
    out = p.export_data(tmp_path / "export.jsonl")
    assert out.items == 2 and (out.path.stat().st_mode & 0o777) == 0o600
    assert [json.loads(x)["text"] for x in out.path.read_text().splitlines()] == ["one", "two"]
    with pytest.raises(InputError, match="exists"):
        p.export_data(out.path)
    assert p.ingest_file(out.path).duplicates == 2
    p.change_passphrase("another passphrase")
    code = p.reset_recovery_code()
    p.close()
    with Personalizer("k", recovery_code=code) as q:
        assert q.count() == 2
    with Personalizer("k", passphrase="another passphrase") as q:
        q.forget()
    assert Personalizer.list_users() == []
    assert Personalizer.destroy("k") is False


def test_lamp_user_name() -> None:
    assert api.lamp_user_name("lamp3", "310") == "lamp3.310"
    odd = api.lamp_user_name("lamp3", "user/310 x")
    assert odd.startswith("lamp3.user_310_x-") and len(odd) <= 64
    assert api.lamp_user_name("b", "a/b") != api.lamp_user_name("b", "a_b")
    long_id = "x" * 200
    assert len(api.lamp_user_name("base", long_id)) <= 64


def test_lamp_siblings_are_created_reopened_and_evicted(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "_OPEN_VAULTS_WHILE_INGESTING", 2)
    questions = [
        {
            "id": str(i),
            "user_id": f"u{i % 5}",
            "input": "?",
            "profile": [{"text": f"item {i}"}, {"text": f"shared {i % 5}"}],
        }
        for i in range(20)
    ]
    f = tmp_path / "q.json"
    f.write_text(json.dumps(questions))
    p = Personalizer.create("lamp", PASS)
    report = p.ingest_file(f)
    assert sorted(report.created) == [f"lamp.u{k}" for k in range(5)]
    assert report.added == 20 + 5 and report.duplicates == 15
    assert {k: v.added for k, v in report.users.items()} == {f"lamp.u{k}": 5 for k in range(5)}
    again = p.ingest_file(f)
    assert (again.added, again.created) == (0, {})
    p.close()
    for k in range(5):
        with Personalizer(f"lamp.u{k}", passphrase=PASS) as s:
            assert s.count() == 5
    code = Personalizer.create("r", PASS).recovery_code
    with Personalizer("r", recovery_code=code) as r:
        with pytest.raises(InputError, match="passphrase"):
            r.ingest_file(f)
