"""Vault behaviour: create/open, dedupe, reading, blobs, key slots, locking, files, forget."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from p2p_local.errors import (
    AuthenticationError,
    InputError,
    VaultExistsError,
    VaultLockedError,
    VaultNotFoundError,
)
from p2p_local.store._crypto import KdfParams
from p2p_local.store.records import HistoryItem
from p2p_local.store.vault import Vault

PASS = "vault test passphrase"
CHEAP = KdfParams(memory_kib=64, iterations=1, lanes=1)


def items(n: int, prefix: str = "item") -> list[HistoryItem]:
    return [HistoryItem(text=f"{prefix} {i}", source="test") for i in range(n)]


@pytest.fixture
def vault_dir(tmp_path: Path) -> Path:
    return tmp_path / "users" / "alice"


@pytest.fixture
def vault(vault_dir: Path):
    v = Vault.create(vault_dir, PASS, kdf=CHEAP).vault
    yield v
    v.close()


def test_add_dedupes_by_content_and_keeps_order(vault: Vault) -> None:
    first = vault.add(items(5) + [HistoryItem(text="item 2", source="test")])
    assert (first.added, first.duplicates) == (5, 1)
    again = vault.add(items(7))
    assert (again.added, again.duplicates) == (2, 5)
    assert vault.count() == 7
    assert [s.item.text for s in vault.iter_items()] == [f"item {i}" for i in range(7)]
    assert [s.row for s in vault.iter_items()] == list(range(7))
    # A different field is different content.
    assert vault.add([HistoryItem(text="item 0", source="other")]).added == 1


def test_items_round_trip_exactly(vault: Vault) -> None:
    rich = HistoryItem(
        text="q\na",
        input="q",
        output="a",
        kind="pair",
        label="x",
        score=4.5,
        time="2025-01-01",
        source="s",
        id="7",
        meta={"nested": {"l": [1, None, True]}, "é": "🚲"},
    )
    vault.add([rich])
    (stored,) = list(vault.iter_items())
    assert stored.item == rich
    assert stored.digest == rich.content_hash()
    assert vault.get(stored.short_id).item == rich


def test_get_by_prefix(vault: Vault) -> None:
    vault.add(items(40))
    target = list(vault.iter_items())[17]
    assert vault.get(target.digest[:10].upper()).row == 17
    with pytest.raises(InputError, match="at least 4 hex"):
        vault.get("ab")
    with pytest.raises(InputError, match="no history item"):
        vault.get("0000000000000000")
    # Two items whose ids share their first 4 hex digits: a 4-digit prefix is ambiguous.
    seen: dict[str, HistoryItem] = {}
    for i in range(5000):
        it = HistoryItem(text=f"collide {i}")
        prefix = it.content_hash()[:4]
        if prefix in seen:
            vault.add([seen[prefix], it])
            break
        seen[prefix] = it
    with pytest.raises(InputError, match="give more digits"):
        vault.get(prefix)
    assert vault.get(it.content_hash()[:12]).item == it


def test_writer_transaction_is_all_or_nothing(vault: Vault) -> None:
    vault.add(items(3))
    digest = vault.history_digest()
    with pytest.raises(RuntimeError):
        with vault.writer() as w:
            assert w.add(items(10, "batch")).added == 10
            raise RuntimeError("crash in the middle")
    assert vault.count() == 3
    assert vault.history_digest() == digest
    assert vault.verify().items == 3
    with vault.writer() as w:
        w.add(items(2, "a"))
        w.add(items(2, "b"))
    assert vault.count() == 7


def test_history_digest_tracks_the_set_of_items(vault: Vault) -> None:
    d0 = vault.history_digest()
    vault.add(items(2))
    d1 = vault.history_digest()
    assert d1 != d0
    vault.add(items(2))  # duplicates only
    vault.put_blob("cache", b"derived")
    assert vault.history_digest() == d1
    vault.add(items(3))
    assert vault.history_digest() not in (d0, d1)


def test_blobs_are_encrypted_named_and_replaceable(vault: Vault, vault_dir: Path) -> None:
    assert vault.get_blob("profile/summary") is None
    vault.put_blob("profile/summary", b"BLOBCANARY one")
    vault.put_blob("profile/summary", b"BLOBCANARY two")
    vault.put_blob("adapter/x", bytes(range(256)) * 100)
    assert vault.get_blob("profile/summary") == b"BLOBCANARY two"
    assert vault.get_blob("adapter/x") == bytes(range(256)) * 100
    assert vault.delete_blob("profile/summary") is True
    assert vault.delete_blob("profile/summary") is False
    assert vault.get_blob("profile/summary") is None
    with pytest.raises(InputError):
        vault.put_blob("", b"x")
    assert vault.verify().blobs == 1


def test_swapped_blobs_fail_authentication(vault: Vault, vault_dir: Path) -> None:
    import sqlite3

    vault.put_blob("a", b"value a")
    vault.put_blob("b", b"value b")
    vault.close()
    with sqlite3.connect(vault_dir / "vault.db") as db:
        (ka, ba), (kb, bb) = db.execute("SELECT nkey, blob FROM blobs").fetchall()
        db.execute("UPDATE blobs SET blob = ? WHERE nkey = ?", (bb, ka))
        db.execute("UPDATE blobs SET blob = ? WHERE nkey = ?", (ba, kb))
    with Vault.open(vault_dir, passphrase=PASS) as v:
        with pytest.raises(AuthenticationError):
            v.get_blob("a")


def test_open_create_errors(vault: Vault, vault_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(VaultExistsError):
        Vault.create(vault_dir, PASS, kdf=CHEAP)
    with pytest.raises(VaultNotFoundError, match="p2p-local init"):
        Vault.open(tmp_path / "nobody", passphrase=PASS)
    with pytest.raises(InputError, match="at least 8"):
        Vault.create(tmp_path / "short", "short", kdf=CHEAP)
    with pytest.raises(InputError, match="exactly one"):
        Vault.open(vault_dir)


def test_key_slots_passphrase_recovery_and_rotation(vault_dir: Path) -> None:
    created = Vault.create(vault_dir, PASS, kdf=CHEAP)
    created.vault.add(items(3))
    created.vault.close()
    with pytest.raises(AuthenticationError, match="wrong passphrase"):
        Vault.open(vault_dir, passphrase=PASS + "x")
    with Vault.open(vault_dir, recovery_code=created.recovery_code) as v:
        assert v.count() == 3
        v.change_passphrase("a brand new passphrase")
        new_code = v.reset_recovery_code()
    with pytest.raises(AuthenticationError):
        Vault.open(vault_dir, passphrase=PASS)
    with pytest.raises(AuthenticationError, match="wrong recovery code"):
        Vault.open(vault_dir, recovery_code=created.recovery_code)
    with Vault.open(vault_dir, passphrase="a brand new passphrase") as v:
        assert v.count() == 3
        assert v.kdf_params == CHEAP
    with Vault.open(vault_dir, recovery_code=new_code) as v:
        assert [s.item.text for s in v.iter_items()] == ["item 0", "item 1", "item 2"]
    # The key file was replaced atomically: no temp files are left.
    assert sorted(p.name for p in vault_dir.iterdir()) == ["vault.db", "vault.key", "vault.lock"]


def test_files_are_private(vault: Vault, vault_dir: Path) -> None:
    vault.add(items(50))
    vault.put_blob("b", b"x")
    names = {p.name for p in vault_dir.iterdir()}
    assert {"vault.db", "vault.db-wal", "vault.db-shm", "vault.key", "vault.lock"} <= names
    assert stat.S_IMODE(vault_dir.stat().st_mode) == 0o700
    for p in vault_dir.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name


def test_a_second_writer_waits_then_gets_a_clear_locked_error(vault_dir: Path) -> None:
    a = Vault.create(vault_dir, PASS, kdf=CHEAP).vault
    b = Vault.open(vault_dir, passphrase=PASS, lock_timeout=0.2)
    try:
        with a.writer() as w:
            w.add(items(2))
            with pytest.raises(VaultLockedError, match="another p2p-local process"):
                b.add(items(1, "other"))
        assert b.add(items(1, "other")).added == 1  # free again
        assert a.count() == b.count() == 3
        assert b.verify().items == 3
    finally:
        a.close()
        b.close()


def test_threads_sharing_a_vault_serialize(vault: Vault) -> None:
    def work(k: int) -> None:
        for j in range(5):
            vault.add(items(20, f"t{k}-{j}"))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert vault.count() == 4 * 5 * 20
    assert vault.verify().items == 400


def test_stats(vault: Vault) -> None:
    vault.add(items(3) + [HistoryItem(text="r", kind="rating", score=3, source="lamp")])
    vault.put_blob("x", b"1")
    s = vault.stats()
    assert (s.items, s.kinds, s.sources, s.blobs) == (
        4,
        {"text": 3, "rating": 1},
        {"test": 3, "lamp": 1},
        1,
    )
    assert s.disk_bytes > 0


def test_forget_leaves_nothing_decryptable(tmp_path: Path) -> None:
    home = tmp_path / "home"
    vault_dir = home / "users" / "bob"
    created = Vault.create(vault_dir, PASS, kdf=CHEAP)
    v = created.vault
    v.add(items(20, "FORGETCANARY"))
    v.put_blob("adapter", b"weights")
    dek = v._dek  # the secret that crypto-shredding must make unrecoverable
    keyfile = (vault_dir / "vault.key").read_bytes()
    v.close()
    stolen_db = tmp_path / "stolen.db"  # what a thief copied before the forget
    stolen_db.write_bytes((vault_dir / "vault.db").read_bytes())
    assert Vault.destroy(vault_dir) is True
    assert not vault_dir.exists()
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert dek not in data and keyfile[:64] not in data, path
    with pytest.raises(VaultNotFoundError):
        Vault.open(vault_dir, passphrase=PASS)
    with pytest.raises(VaultNotFoundError):
        Vault.open(vault_dir, recovery_code=created.recovery_code)
    # The copied database alone cannot be opened: its key file is gone.
    (tmp_path / "thief").mkdir()
    (tmp_path / "thief" / "vault.db").write_bytes(stolen_db.read_bytes())
    with pytest.raises(VaultNotFoundError):
        Vault.open(tmp_path / "thief", passphrase=PASS)
    assert Vault.destroy(vault_dir) is False
