"""The encrypted per-user vault: history items and derived blobs at rest.

Owns the on-disk format of one user's vault directory and every read and write of it:

- ``vault.key`` (its format and slots live in ``_keyfile.py``): a random 32-byte data key (DEK)
  wrapped under each key slot: passphrase (Argon2id or scrypt), recovery code, optional OS
  keychain; an HMAC under a DEK subkey covers the file. Replaced atomically.
- ``vault.db``: sqlite3 (WAL, synchronous=FULL, secure_delete=ON). Each history item is one
  AES-256-GCM row whose associated data binds the store id, the schema version, the row index
  and its keyed dedupe hash; a seal (item count + a hash chain of the rows' GCM tags, under an
  HMAC) detects deleted, truncated, reordered or foreign rows. Derived data (summaries,
  embeddings, adapters) lives in encrypted named blobs.
- ``vault.lock``: an ``fcntl`` lock that serializes writers across processes.

Does not own parsing of input files (``ingest.py``) or the export stream format (``sealed.py``).
Known limit: restoring an older copy of the whole directory (rollback) cannot be detected from
inside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2p_local.errors import (
    InputError,
    IntegrityError,
    VaultError,
    VaultExistsError,
    VaultLockedError,
)
from p2p_local.store import _crypto as C
from p2p_local.store import _keyfile as K
from p2p_local.store._keyfile import (
    KEYFILE_NAME,
    LOCK_NAME,
    MAX_KEYFILE_BYTES,
    SCHEMA_VERSION,
)
from p2p_local.store.records import HistoryItem, StoredItem

DB_NAME = "vault.db"
DB_FORMAT = "p2p-local-vault-db"
_BATCH = 1000  # rows per executemany
_PAGE = 512  # rows per read query
_SEAL_BYTES = 8 + 32 + 32  # count, chain head, HMAC
DKEY_BYTES = 16  # keyed content hash used for dedupe (truncated HMAC-SHA256)
_LEGACY_DKEY_BYTES = 32  # databases whose header does not name dkey_bytes (early v1 builds)
# Appended to "... failed authentication" for stored data (reading never writes).
_RESTORE_HINT = "nothing was changed; restore the vault directory from a backup"


@dataclass(frozen=True)
class AddResult:
    """What one ``add`` did: new items stored and items already present (same content)."""

    added: int
    duplicates: int


@dataclass(frozen=True)
class CreatedVault:
    """A freshly created, open vault and its recovery code (shown to the user once)."""

    vault: Vault
    recovery_code: str


@dataclass(frozen=True)
class VerifyReport:
    """A full check: every row and blob decrypted and the seal recomputed."""

    items: int
    blobs: int


@dataclass(frozen=True)
class VaultStats:
    """Counts a person can look at; computed by decrypting every row in memory."""

    items: int
    kinds: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    blobs: int = 0
    disk_bytes: int = 0


@contextlib.contextmanager
def _db_errors(directory: Path) -> Iterator[None]:
    """Turn sqlite errors into vault errors with a next step."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise VaultLockedError(
                f"the vault database in {directory} is busy ({text}): try again in a moment"
            ) from None
        if "disk is full" in text or "I/O" in text:
            raise VaultError(
                f"cannot write the vault in {directory} ({text}): free some disk space"
            ) from None
        raise IntegrityError(
            f"the vault database in {directory} is damaged ({text}): restore the directory "
            "from a backup"
        ) from None


KdfParams = C.KdfParams


class Vault:
    """One user's encrypted vault. Open with :meth:`open`, make one with :meth:`create`.

    Thread-safe within a process (one internal lock); writers in different processes are
    serialized by the ``vault.lock`` file lock (``VaultLockedError`` after ``lock_timeout``).
    """

    def __init__(
        self,
        directory: Path,
        store_id: bytes,
        dek: bytes,
        keyfile: dict[str, Any],
        *,
        lock_timeout: float,
    ) -> None:
        self._dir = directory
        self._store_id = store_id
        self._dek = dek
        self._keyfile = keyfile
        self._lock_timeout = lock_timeout
        self._lock = K.WriterLock(directory / LOCK_NAME)
        self._mutex = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._dkey_bytes = DKEY_BYTES  # read from the database header on open

        def sub(purpose: str) -> bytes:
            return C.hkdf(dek, b"p2p-local/v1/" + purpose.encode(), salt=store_id)

        self._rows = C.Aead(sub("rows"), hint=_RESTORE_HINT)
        self._blobs = C.Aead(sub("blobs"), hint=_RESTORE_HINT)
        self._k_dedupe = sub("dedupe")
        self._k_seal = sub("seal")
        self._k_header = sub("header")
        self._k_keyfile = sub("keyfile")
        self._k_blobname = sub("blob-names")
        self._k_digest = sub("digest")
        schema = SCHEMA_VERSION.to_bytes(2, "big")
        self._row_aad = b"p2p-local/row\0" + store_id + schema
        self._blob_aad = b"p2p-local/blob\0" + store_id + schema
        self._chain0 = C.sha256(b"p2p-local/chain/v1\0" + store_id)

    # --- construction ------------------------------------------------------------------

    @staticmethod
    def exists(directory: Path | str) -> bool:
        return (Path(directory) / KEYFILE_NAME).is_file()

    @classmethod
    def create(
        cls,
        directory: Path | str,
        passphrase: str,
        *,
        kdf: KdfParams | None = None,
        use_keychain: bool = False,
        lock_timeout: float = 30.0,
    ) -> CreatedVault:
        """Create a new vault in ``directory``; the recovery code is returned once."""
        directory = Path(directory)
        K.validate_passphrase(passphrase)
        kdf = kdf or KdfParams.default()
        if cls.exists(directory):
            raise VaultExistsError(
                f"a vault already exists in {directory}: open it, or remove it with "
                "`p2p-local forget`"
            )
        if use_keychain:
            C.keychain_backend()  # fail before anything is written
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        store_id = C.random_bytes(16)
        dek = C.random_bytes(C.KEY_BYTES)
        with K.WriterLock(directory / LOCK_NAME).held(lock_timeout):
            if cls.exists(directory):
                raise VaultExistsError(
                    f"a vault was just created in {directory} by another process"
                )
            for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
                with contextlib.suppress(FileNotFoundError):  # leftovers of a crashed create
                    (directory / name).unlink()
            slots = [K.passphrase_slot(store_id, dek, passphrase, kdf)]
            recovery, code = K.recovery_slot(store_id, dek)
            slots.append(recovery)
            if use_keychain:
                slots.append(K.keychain_slot(store_id, dek))
            keyfile = {
                "format": K.KEYFILE_FORMAT,
                "schema": SCHEMA_VERSION,
                "store_id": store_id.hex(),
                "slots": slots,
            }
            vault = cls(directory, store_id, dek, keyfile, lock_timeout=lock_timeout)
            vault._init_db()
            # Last: a crash before this line leaves no vault behind.
            vault._keyfile = K.write(directory, keyfile, vault._k_keyfile)
        vault._connect()
        return CreatedVault(vault=vault, recovery_code=code)

    @classmethod
    def open(
        cls,
        directory: Path | str,
        *,
        passphrase: str | None = None,
        recovery_code: str | None = None,
        use_keychain: bool = False,
        lock_timeout: float = 30.0,
    ) -> Vault:
        """Open with exactly one of: ``passphrase``, ``recovery_code``, ``use_keychain``."""
        directory = Path(directory)
        if sum((passphrase is not None, recovery_code is not None, bool(use_keychain))) != 1:
            raise InputError(
                "open a vault with exactly one of: passphrase, recovery code, keychain"
            )
        keyfile = K.read(directory)
        store_id = bytes.fromhex(keyfile["store_id"])
        if passphrase is not None:
            dek = K.unwrap_passphrase(directory, keyfile, store_id, passphrase)
        elif recovery_code is not None:
            dek = K.unwrap_recovery(directory, keyfile, store_id, recovery_code)
        else:
            dek = K.unwrap_keychain(directory, keyfile, store_id)
        vault = cls(directory, store_id, dek, keyfile, lock_timeout=lock_timeout)
        K.check_mac(directory, keyfile, vault._k_keyfile)
        if not (directory / DB_NAME).is_file():
            raise IntegrityError(
                f"the vault database {directory / DB_NAME} is missing: restore it from a backup"
            )
        vault._connect()
        try:
            vault._check_header()
            vault._verify_chain()
        except BaseException:
            vault.close()
            raise
        return vault

    # --- database --------------------------------------------------------------------------

    def _connect(self) -> None:
        db = self._dir / DB_NAME
        fd = os.open(db, os.O_RDWR | os.O_CREAT, 0o600)  # sqlite gives -wal/-shm the same mode
        os.close(fd)
        for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", KEYFILE_NAME):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(self._dir / name, 0o600)
        with _db_errors(self._dir):
            conn = sqlite3.connect(
                db, isolation_level=None, check_same_thread=False, timeout=self._lock_timeout
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA secure_delete=ON")
                conn.execute("PRAGMA temp_store=MEMORY")
                conn.execute("PRAGMA cell_size_check=ON")
            except BaseException:
                conn.close()
                raise
        self._conn = conn

    def _init_db(self) -> None:
        self._connect()
        header = K.canonical(
            {
                "format": DB_FORMAT,
                "schema": SCHEMA_VERSION,
                "store_id": self._store_id.hex(),
                "dkey_bytes": DKEY_BYTES,
            }
        )
        with _db_errors(self._dir):
            c = self._db
            c.execute("BEGIN IMMEDIATE")
            c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
            c.execute(
                "CREATE TABLE items (row INTEGER PRIMARY KEY, dkey BLOB NOT NULL UNIQUE, "
                "blob BLOB NOT NULL)"
            )
            c.execute(
                "CREATE TABLE blobs (nkey BLOB PRIMARY KEY, blob BLOB NOT NULL) WITHOUT ROWID"
            )
            c.execute("INSERT INTO meta VALUES ('header', ?)", (header,))
            c.execute("INSERT INTO meta VALUES ('header_mac', ?)", (C.mac(self._k_header, header),))
            self._write_seal(0, self._chain0)
            c.execute("COMMIT")
        self.close()

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise VaultError("the vault is closed: open it again")
        return self._conn

    def _meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row is not None and isinstance(row[0], bytes) else None

    def _check_header(self) -> None:
        with self._mutex, _db_errors(self._dir):
            header = self._meta("header")
            tag = self._meta("header_mac")
        if header is None or tag is None or not C.mac_ok(self._k_header, header, tag):
            raise IntegrityError(
                f"the vault database in {self._dir} does not belong to this key file (its "
                "header failed authentication): restore the directory from a backup"
            )
        try:
            data = json.loads(header)
        except ValueError:
            data = {}
        if data.get("store_id") != self._store_id.hex() or data.get("schema") != SCHEMA_VERSION:
            raise IntegrityError(f"the vault database in {self._dir} has a foreign header")
        dkey_bytes = data.get("dkey_bytes", _LEGACY_DKEY_BYTES)
        if dkey_bytes not in (DKEY_BYTES, _LEGACY_DKEY_BYTES):
            raise IntegrityError(f"the vault database in {self._dir} has an unknown key size")
        self._dkey_bytes = dkey_bytes

    def _seal_payload(self, count: int, chain: bytes) -> bytes:
        return count.to_bytes(8, "big") + chain

    def _write_seal(self, count: int, chain: bytes) -> None:
        payload = self._seal_payload(count, chain)
        tag = C.mac(self._k_seal, b"seal\0" + self._store_id + payload)
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('seal', ?)", (payload + tag,))

    def _read_seal(self) -> tuple[int, bytes]:
        value = self._meta("seal")
        if (
            value is None
            or len(value) != _SEAL_BYTES
            or not C.mac_ok(self._k_seal, b"seal\0" + self._store_id + value[:40], value[40:])
        ):
            raise IntegrityError(
                f"the seal of the vault in {self._dir} failed authentication: restore the "
                "directory from a backup"
            )
        return int.from_bytes(value[:8], "big"), value[8:40]

    def _seal_broken(self) -> IntegrityError:
        return IntegrityError(
            f"the vault in {self._dir} does not match its seal (rows deleted, truncated, "
            "reordered or copied from another vault): restore the directory from a backup"
        )

    def _verify_chain(self) -> int:
        """Recompute the hash chain of row tags against the seal; returns the count."""
        with self._mutex, _db_errors(self._dir):
            count, chain = self._read_seal()
            expect = 0
            h = self._chain0
            cur = self._db.execute("SELECT row, substr(blob, -16, 16) FROM items ORDER BY row")
            for row, tag in cur:
                if row != expect or not isinstance(tag, bytes):
                    raise self._seal_broken()
                h = C.sha256(h + tag)
                expect += 1
        if expect != count or h != chain:
            raise self._seal_broken()
        return count

    # --- writing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self) -> Iterator[VaultWriter]:
        """One write transaction under the writer lock: everything added commits or nothing."""
        with self._mutex, self._lock.held(self._lock_timeout):
            conn = self._db
            with _db_errors(self._dir):
                conn.execute("BEGIN IMMEDIATE")
            try:
                with _db_errors(self._dir):
                    count, chain = self._read_seal()
                    (nxt,) = conn.execute("SELECT coalesce(max(row) + 1, 0) FROM items").fetchone()
                if nxt != count:
                    raise self._seal_broken()
                w = VaultWriter(self, count, chain)
                yield w
                w._done = True
                with _db_errors(self._dir):
                    if w.count != count:
                        self._write_seal(w.count, w.chain)
                    conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    def add(self, items: Iterable[HistoryItem]) -> AddResult:
        """Store the items not yet present (content-hash dedupe), in one transaction."""
        with self.writer() as w:
            return w.add(items)

    def put_blob(self, name: str, data: bytes) -> None:
        """Store encrypted derived data under ``name`` (replacing any previous value)."""
        nkey = self._blob_key(name)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InputError(f"blob {name!r} must be bytes, got {type(data).__name__}")
        blob = self._blobs.seal(bytes(data), self._blob_aad + nkey)
        with self._mutex, self._lock.held(self._lock_timeout), _db_errors(self._dir):
            self._db.execute("INSERT OR REPLACE INTO blobs VALUES (?, ?)", (nkey, blob))

    def get_blob(self, name: str) -> bytes | None:
        nkey = self._blob_key(name)
        with self._mutex, _db_errors(self._dir):
            row = self._db.execute("SELECT blob FROM blobs WHERE nkey = ?", (nkey,)).fetchone()
        if row is None:
            return None
        return self._blobs.open(row[0], self._blob_aad + nkey, what=f"vault blob {name!r}")

    def delete_blob(self, name: str) -> bool:
        """Remove a blob; True when there was one."""
        nkey = self._blob_key(name)
        with self._mutex, self._lock.held(self._lock_timeout), _db_errors(self._dir):
            cur = self._db.execute("DELETE FROM blobs WHERE nkey = ?", (nkey,))
            return cur.rowcount > 0

    def _dedupe_key(self, content_sha256: bytes) -> bytes:
        return C.mac(self._k_dedupe, content_sha256)[: self._dkey_bytes]

    def _blob_key(self, name: str) -> bytes:
        if not isinstance(name, str) or not name or len(name) > 512:
            raise InputError(f"blob name must be a non-empty string of <= 512 chars, got {name!r}")
        return C.mac(self._k_blobname, name.encode("utf-8"))

    # --- reading -------------------------------------------------------------------------------

    def count(self) -> int:
        """How many items the vault holds (from the authenticated seal)."""
        with self._mutex, _db_errors(self._dir), self._snapshot():
            count, _ = self._read_seal()
            (nxt,) = self._db.execute("SELECT coalesce(max(row) + 1, 0) FROM items").fetchone()
        if nxt != count:
            raise self._seal_broken()
        return count

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One read transaction, so reads see a single commit of a concurrent writer."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    def iter_items(self) -> Iterator[StoredItem]:
        """Every item in insertion order, each authenticated; the seal is checked at the end."""
        with self._mutex, _db_errors(self._dir):
            count, chain = self._read_seal()
        h = self._chain0
        row = 0
        while row < count:
            with self._mutex, _db_errors(self._dir):
                page = self._db.execute(
                    "SELECT row, dkey, blob FROM items WHERE row >= ? AND row < ? ORDER BY row "
                    "LIMIT ?",
                    (row, count, _PAGE),
                ).fetchall()
            if not page:
                raise self._seal_broken()
            for r, dkey, blob in page:
                if r != row:
                    raise self._seal_broken()
                stored = self._decrypt_row(r, dkey, blob)
                h = C.sha256(h + blob[-C.TAG_BYTES :])
                row += 1
                yield stored
        if h != chain:
            raise self._seal_broken()

    def _decrypt_row(self, row: int, dkey: object, blob: object) -> StoredItem:
        if not isinstance(dkey, bytes) or not isinstance(blob, bytes):
            raise IntegrityError(f"row {row} of the vault in {self._dir} is damaged")
        what = f"row {row} of the vault in {self._dir}"
        pt = self._rows.open(blob, self._row_aad + row.to_bytes(8, "big") + dkey, what=what)
        digest = C.sha256(pt)
        try:
            item = HistoryItem.from_dict(json.loads(pt))
        except (ValueError, TypeError) as exc:  # authentic but unreadable: a format bug
            raise IntegrityError(f"{what} cannot be decoded ({exc})") from None
        return StoredItem(row=row, digest=digest.hex(), item=item)

    def get(self, id_prefix: str) -> StoredItem:
        """The item whose id (content hash hex) starts with ``id_prefix`` (>= 4 hex digits)."""
        prefix = (id_prefix or "").strip().lower()
        if len(prefix) < 4 or any(ch not in "0123456789abcdef" for ch in prefix):
            raise InputError(
                f"item id {id_prefix!r} must be at least 4 hex digits: copy it from "
                "`p2p-local history list`"
            )
        found: list[StoredItem] = []
        for stored in self.iter_items():
            if stored.digest.startswith(prefix):
                found.append(stored)
        if not found:
            raise InputError(f"no history item has an id starting with {prefix!r}")
        if len(found) > 1:
            raise InputError(
                f"{len(found)} history items have ids starting with {prefix!r}: give more digits"
            )
        return found[0]

    def history_digest(self) -> str:
        """A keyed digest that changes whenever the set of items changes (an O(1) read).

        Items are only ever appended, so the seal's count and chain head identify the set.
        """
        with self._mutex, _db_errors(self._dir):
            count, chain = self._read_seal()
        return C.mac(self._k_digest, self._seal_payload(count, chain)).hex()

    def verify(self) -> VerifyReport:
        """Decrypt every row and blob and recompute the seal; raise on any mismatch."""
        self._check_header()
        n = 0
        for stored in self.iter_items():
            with self._mutex:
                (dkey,) = self._db.execute(
                    "SELECT dkey FROM items WHERE row = ?", (stored.row,)
                ).fetchone()
            if dkey != self._dedupe_key(bytes.fromhex(stored.digest)):
                raise IntegrityError(f"row {stored.row} of the vault in {self._dir} is damaged")
            n += 1
        with self._mutex, _db_errors(self._dir):
            blobs = self._db.execute("SELECT nkey, blob FROM blobs").fetchall()
        for nkey, blob in blobs:
            self._blobs.open(
                blob, self._blob_aad + nkey, what=f"a blob of the vault in {self._dir}"
            )
        return VerifyReport(items=n, blobs=len(blobs))

    def stats(self) -> VaultStats:
        kinds: Counter[str] = Counter()
        sources: Counter[str] = Counter()
        n = 0
        for stored in self.iter_items():
            n += 1
            kinds[stored.item.kind] += 1
            sources[stored.item.source or "unknown"] += 1
        with self._mutex, _db_errors(self._dir):
            (blobs,) = self._db.execute("SELECT count(*) FROM blobs").fetchone()
        disk = sum(p.stat().st_size for p in self._dir.iterdir() if p.is_file())
        return VaultStats(
            items=n, kinds=dict(kinds), sources=dict(sources), blobs=blobs, disk_bytes=disk
        )

    # --- key slots ---------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def kdf_params(self) -> KdfParams:
        """The passphrase slot's key-derivation settings."""
        slot = K.find_slot(self._keyfile, "passphrase")
        return KdfParams.from_json(slot["kdf"]) if slot else KdfParams.default()

    @property
    def has_keychain_slot(self) -> bool:
        return K.find_slot(self._keyfile, "keychain") is not None

    def _replace_slot(self, kind: str, slot: dict[str, Any]) -> None:
        with self._mutex, self._lock.held(self._lock_timeout):
            slots = [s for s in self._keyfile["slots"] if s.get("type") != kind] + [slot]
            self._keyfile = {**self._keyfile, "slots": slots}
            self._keyfile = K.write(self._dir, self._keyfile, self._k_keyfile)

    def change_passphrase(self, new_passphrase: str, *, kdf: KdfParams | None = None) -> None:
        """Rewrap the data key under a new passphrase (fresh salt); data is not re-encrypted."""
        K.validate_passphrase(new_passphrase)
        slot = K.passphrase_slot(self._store_id, self._dek, new_passphrase, kdf or self.kdf_params)
        self._replace_slot("passphrase", slot)

    def reset_recovery_code(self) -> str:
        """Replace the recovery slot; the old code stops working. Returns the new code (once)."""
        slot, code = K.recovery_slot(self._store_id, self._dek)
        self._replace_slot("recovery", slot)
        return code

    # --- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def destroy(directory: Path | str, *, lock_timeout: float = 30.0) -> bool:
        """Crypto-shred a vault: destroy every key slot, then delete the data. No key needed.

        The key file is overwritten with random bytes and synced before anything is deleted, so
        the data key cannot be recovered from this directory afterwards (copies made elsewhere,
        such as backups of the key file, are outside its reach). Returns False when no vault
        was there.
        """
        directory = Path(directory)
        if not directory.exists():
            return False
        keypath = directory / KEYFILE_NAME
        with K.WriterLock(directory / LOCK_NAME).held(lock_timeout):
            account = None
            if keypath.is_file():
                with contextlib.suppress(ValueError, OSError):
                    data = json.loads(keypath.read_bytes()[:MAX_KEYFILE_BYTES])
                    account = next(
                        (
                            s.get("account")
                            for s in data.get("slots", [])
                            if isinstance(s, dict) and s.get("type") == "keychain"
                        ),
                        None,
                    )
                size = keypath.stat().st_size
                with open(keypath, "r+b") as fh:
                    fh.write(C.random_bytes(max(size, 1)))
                    fh.flush()
                    os.fsync(fh.fileno())
                keypath.unlink()
                K.fsync_dir(directory)
            if isinstance(account, str):
                C.keychain_delete(account)
            for path in directory.iterdir():
                if path.name != LOCK_NAME:
                    if path.is_dir():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
        shutil.rmtree(directory, ignore_errors=True)
        return True


class VaultWriter:
    """Adds items inside one :meth:`Vault.writer` transaction."""

    def __init__(self, vault: Vault, count: int, chain: bytes) -> None:
        self._vault = vault
        self.count = count
        self.chain = chain
        self._done = False

    def add(self, items: Iterable[HistoryItem]) -> AddResult:
        if self._done:
            raise VaultError("this vault transaction is finished: start a new one")
        added = dups = 0
        batch: list[HistoryItem] = []
        for item in items:
            batch.append(item)
            if len(batch) >= _BATCH:
                a, d = self._add_batch(batch)
                added, dups, batch = added + a, dups + d, []
        if batch:
            a, d = self._add_batch(batch)
            added, dups = added + a, dups + d
        return AddResult(added=added, duplicates=dups)

    def _add_batch(self, batch: list[HistoryItem]) -> tuple[int, int]:
        v = self._vault
        dedupe_key, sha256 = v._dedupe_key, hashlib.sha256
        prepared: list[tuple[bytes, bytes]] = []
        seen: set[bytes] = set()
        dups = 0
        for item in batch:
            if not isinstance(item, HistoryItem):
                raise InputError(f"vault items must be HistoryItem, got {type(item).__name__}")
            try:
                pt = item.canonical_json()
            except UnicodeEncodeError:
                raise InputError(
                    "a history item contains an unpaired UTF-16 surrogate (like \\ud800): fix "
                    "the text's encoding"
                ) from None
            dkey = dedupe_key(sha256(pt).digest())
            if dkey in seen:
                dups += 1
                continue
            seen.add(dkey)
            prepared.append((dkey, pt))
        conn = v._db
        existing: set[bytes] = set()
        with _db_errors(v._dir):
            for i in range(0, len(prepared), 900):
                part = [d for d, _ in prepared[i : i + 900]]
                marks = ",".join("?" * len(part))
                sql = f"SELECT dkey FROM items WHERE dkey IN ({marks})"
                existing.update(r[0] for r in conn.execute(sql, part))
        rows = []
        encrypt, aad, chain, row = v._rows.encrypt_with_nonce, v._row_aad, self.chain, self.count
        nonces = C.random_bytes(C.NONCE_BYTES * len(prepared))  # one syscall per batch
        n = C.NONCE_BYTES
        for i, (dkey, pt) in enumerate(prepared):
            if dkey in existing:
                dups += 1
                continue
            nonce = nonces[i * n : i * n + n]
            blob = nonce + encrypt(nonce, pt, aad + row.to_bytes(8, "big") + dkey)
            chain = sha256(chain + blob[-C.TAG_BYTES :]).digest()
            rows.append((row, dkey, blob))
            row += 1
        with _db_errors(v._dir):
            conn.executemany("INSERT INTO items (row, dkey, blob) VALUES (?, ?, ?)", rows)
        self.chain, self.count = chain, row
        return len(rows), dups
