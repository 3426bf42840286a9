"""The tamper/fault matrix: every modification of a closed vault gives a clean vault error,
never altered data."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from p2p_local.errors import AuthenticationError, IntegrityError, VaultError
from p2p_local.store import _crypto as C
from p2p_local.store._crypto import KdfParams
from p2p_local.store.records import HistoryItem
from p2p_local.store.vault import Vault

PASS = "tamper test passphrase"
CHEAP = KdfParams(memory_kib=64, iterations=1, lanes=1)
ITEMS = [
    HistoryItem(text="alpha " * 10),
    HistoryItem(text="beta", input="b-in", output="b-out", kind="pair"),
    HistoryItem(text="gamma", kind="rating", score=2),
    HistoryItem(text="delta", meta={"k": "v"}),
]
BLOB = b"derived summary " * 8


def make(path: Path, items: list[HistoryItem] = ITEMS) -> Path:
    v = Vault.create(path, PASS, kdf=CHEAP).vault
    v.add(items)
    v.put_blob("summary", BLOB)
    v.close()
    assert not (path / "vault.db-wal").exists()  # checkpointed: the db file holds everything
    return path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make(tmp_path_factory.mktemp("pristine") / "v")


def read_all(path: Path) -> tuple[list[HistoryItem], bytes | None]:
    with Vault.open(path, passphrase=PASS) as v:
        got = [s.item for s in v.iter_items()]
        blob = v.get_blob("summary")
        v.verify()
    return got, blob


def copy(pristine: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(pristine, dst)
    return dst


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def clean_error_or_original(path: Path) -> bool:
    """True when opening/reading raised a VaultError; fails the test on altered data."""
    try:
        got, blob = read_all(path)
    except VaultError:
        return True
    assert got == ITEMS and blob == BLOB, "tampering changed the data that was returned"
    return False


def test_pristine_copy_reads_back(pristine: Path, tmp_path: Path) -> None:
    assert read_all(copy(pristine, tmp_path / "c")) == (ITEMS, BLOB)


def test_every_flipped_key_file_byte_is_refused(pristine: Path, tmp_path: Path) -> None:
    size = (pristine / "vault.key").stat().st_size
    for offset in range(size):
        work = copy(pristine, tmp_path / "c")
        flip(work / "vault.key", offset)
        assert clean_error_or_original(work), f"key file byte {offset} flipped went unnoticed"


def _stored_values(db: Path) -> list[bytes]:
    with sqlite3.connect(db) as conn:
        values = [r[0] for r in conn.execute("SELECT blob FROM items")]
        values += [r[0] for r in conn.execute("SELECT dkey FROM items")]
        values += [r[0] for r in conn.execute("SELECT blob FROM blobs")]
        values += [r[0] for r in conn.execute("SELECT value FROM meta")]
    conn.close()
    return values


def test_every_flipped_byte_of_rows_header_seal_and_blobs_is_detected(
    pristine: Path, tmp_path: Path
) -> None:
    raw = (pristine / "vault.db").read_bytes()
    checked = 0
    for value in _stored_values(pristine / "vault.db"):
        # A dedupe key is stored twice (row and unique index); other values once.
        starts = [i for i in range(len(raw)) if raw.startswith(value, i)]
        assert 1 <= len(starts) <= 2
        for pos in range(len(value)):
            refused = []
            for start in starts:
                work = copy(pristine, tmp_path / "c")
                flip(work / "vault.db", start + pos)
                refused.append(clean_error_or_original(work))
                checked += 1
            # The row's own copy is authenticated; a damaged index copy only affects dedupe.
            assert any(refused), f"byte {pos} of a stored value flipped went unnoticed"
    assert checked > 600


def test_flipped_bytes_anywhere_in_the_database_never_alter_data(
    pristine: Path, tmp_path: Path
) -> None:
    size = (pristine / "vault.db").stat().st_size
    refused = 0
    offsets = range(0, size, 29)
    for offset in offsets:
        work = copy(pristine, tmp_path / "c")
        flip(work / "vault.db", offset, 0x10)
        refused += clean_error_or_original(work)
    assert refused > 0  # sqlite structure, rows and seal do get hit by the stride


def _exec(db: Path, *statements: tuple[str, tuple]) -> None:
    conn = sqlite3.connect(db)
    with conn:
        for sql, args in statements:
            conn.execute(sql, args)
    conn.close()


def _rows(db: Path) -> list[tuple[int, bytes, bytes]]:
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT row, dkey, blob FROM items ORDER BY row").fetchall()
    conn.close()
    return rows


def test_swapped_rows_are_detected(pristine: Path, tmp_path: Path) -> None:
    work = copy(pristine, tmp_path / "c")
    rows = _rows(work / "vault.db")
    _exec(
        work / "vault.db",
        ("UPDATE items SET dkey = ?, blob = ? WHERE row = 1", (b"tmp", rows[2][2])),
        ("UPDATE items SET dkey = ?, blob = ? WHERE row = 2", (rows[1][1], rows[1][2])),
        ("UPDATE items SET dkey = ? WHERE row = 1", (rows[2][1],)),
    )
    with pytest.raises(IntegrityError, match="does not match its seal"):
        Vault.open(work, passphrase=PASS)


def test_a_changed_row_ciphertext_fails_authentication_with_a_next_step(
    pristine: Path, tmp_path: Path
) -> None:
    # Flip a ciphertext byte but keep the tag: the seal (a chain of tags) still matches.
    work = copy(pristine, tmp_path / "c")
    blob = bytearray(_rows(work / "vault.db")[1][2])
    blob[C.NONCE_BYTES] ^= 0x01
    _exec(work / "vault.db", ("UPDATE items SET blob = ? WHERE row = 1", (bytes(blob),)))
    with pytest.raises(AuthenticationError, match="row 1 of the vault") as info:
        read_all(work)
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith("nothing was changed; restore the vault directory from a backup")


def test_swapped_ciphertexts_fail_authentication_even_with_a_matching_chain(
    pristine: Path, tmp_path: Path
) -> None:
    # Swapping only the row numbers of two rows keeps the multiset of tags but not the order.
    work = copy(pristine, tmp_path / "c")
    _exec(
        work / "vault.db",
        ("UPDATE items SET row = 100 WHERE row = 0", ()),
        ("UPDATE items SET row = 0 WHERE row = 3", ()),
        ("UPDATE items SET row = 3 WHERE row = 100", ()),
    )
    with pytest.raises(IntegrityError):
        Vault.open(work, passphrase=PASS)


@pytest.mark.parametrize("where", ["row = 1", "row = 3", "1 = 1"], ids=["middle", "last", "all"])
def test_deleted_or_truncated_rows_break_the_seal(pristine: Path, tmp_path: Path, where) -> None:
    work = copy(pristine, tmp_path / "c")
    _exec(work / "vault.db", (f"DELETE FROM items WHERE {where}", ()))
    with pytest.raises(IntegrityError, match="does not match its seal"):
        Vault.open(work, passphrase=PASS)


def test_rows_from_another_vault_are_detected(pristine: Path, tmp_path: Path) -> None:
    other = make(tmp_path / "other", [HistoryItem(text=f"foreign {i}") for i in range(6)])
    foreign = _rows(other / "vault.db")
    replaced = copy(pristine, tmp_path / "replaced")
    _exec(
        replaced / "vault.db", ("UPDATE items SET dkey = ?, blob = ? WHERE row = 1", foreign[1][1:])
    )
    appended = copy(pristine, tmp_path / "appended")
    _exec(appended / "vault.db", ("INSERT INTO items VALUES (4, ?, ?)", foreign[4][1:]))
    for work in (replaced, appended):
        with pytest.raises(IntegrityError):
            Vault.open(work, passphrase=PASS)
    # A whole database from another vault (same passphrase) under this key file.
    swapped = copy(pristine, tmp_path / "swapped")
    shutil.copy(other / "vault.db", swapped / "vault.db")
    with pytest.raises(IntegrityError, match="does not belong"):
        Vault.open(swapped, passphrase=PASS)
    # Another vault's key file with this database: the passphrase works, the header does not.
    keyswap = copy(pristine, tmp_path / "keyswap")
    shutil.copy(other / "vault.key", keyswap / "vault.key")
    with pytest.raises(IntegrityError):
        Vault.open(keyswap, passphrase=PASS)


def test_an_old_seal_with_current_rows_is_detected(pristine: Path, tmp_path: Path) -> None:
    work = copy(pristine, tmp_path / "c")
    conn = sqlite3.connect(work / "vault.db")
    (old_seal,) = conn.execute("SELECT value FROM meta WHERE key = 'seal'").fetchone()
    conn.close()
    with Vault.open(work, passphrase=PASS) as v:
        v.add([HistoryItem(text="newer item")])
    _exec(work / "vault.db", ("UPDATE meta SET value = ? WHERE key = 'seal'", (old_seal,)))
    with pytest.raises(IntegrityError):
        Vault.open(work, passphrase=PASS)


def test_known_limit_a_whole_old_copy_rolls_back_undetected(pristine: Path, tmp_path: Path) -> None:
    """Documented limit: an older copy of the whole directory is itself a valid vault."""
    old = copy(pristine, tmp_path / "old")
    work = copy(pristine, tmp_path / "c")
    with Vault.open(work, passphrase=PASS) as v:
        v.add([HistoryItem(text="newer item")])
    shutil.rmtree(work)
    shutil.copytree(old, work)
    assert read_all(work)[0] == ITEMS


def _edit_keyfile(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "field,value",
    [("memory_kib", 2**30), ("iterations", 10**6), ("lanes", 10**4), ("algorithm", "bcrypt")],
)
def test_kdf_parameters_above_caps_are_refused_before_deriving(
    pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value
) -> None:
    work = copy(pristine, tmp_path / "c")

    def edit(data: dict) -> None:
        slot = next(s for s in data["slots"] if s["type"] == "passphrase")
        slot["kdf"][field] = value

    _edit_keyfile(work / "vault.key", edit)

    def no_derivation(*args, **kwargs):
        raise AssertionError("the KDF ran with refused parameters")

    monkeypatch.setattr(C, "derive_key", no_derivation)
    with pytest.raises(IntegrityError, match="refuses"):
        Vault.open(work, passphrase=PASS)


def test_damaged_files_give_clean_errors(pristine: Path, tmp_path: Path) -> None:
    cases = {
        "garbage db": lambda w: (w / "vault.db").write_bytes(b"\x00garbage" * 500),
        "empty db": lambda w: (w / "vault.db").write_bytes(b""),
        "missing db": lambda w: (w / "vault.db").unlink(),
        "truncated db": lambda w: (w / "vault.db").write_bytes(
            (w / "vault.db").read_bytes()[:4096]
        ),
        "empty key file": lambda w: (w / "vault.key").write_bytes(b""),
        "huge key file": lambda w: (w / "vault.key").write_bytes(b" " * (1 << 20)),
        "key file not json": lambda w: (w / "vault.key").write_bytes(b"\xff\xfe"),
        "no passphrase slot": lambda w: _edit_keyfile(
            w / "vault.key", lambda d: d.update(slots=[])
        ),
    }
    for name, damage in cases.items():
        work = copy(pristine, tmp_path / "c")
        damage(work)
        with pytest.raises(VaultError):
            read_all(work)
        assert name


def test_wrong_passphrase_is_an_authentication_error(pristine: Path, tmp_path: Path) -> None:
    work = copy(pristine, tmp_path / "c")
    for wrong in ("", "tamper test passphrasE", PASS + " "):
        with pytest.raises(AuthenticationError, match="wrong passphrase"):
            Vault.open(work, passphrase=wrong)


def test_base64_with_padding_bits_set_is_refused() -> None:
    from p2p_local.store import _crypto as C

    canonical = C.b64e(bytes(32))  # "AAAA...AAA=": the last "A" carries 2 unused bits
    assert C.b64d(canonical, size=32) == bytes(32)
    with pytest.raises(ValueError, match="non-canonical"):
        C.b64d(canonical[:-2] + "B=", size=32)
