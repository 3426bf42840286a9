"""The vault's key file, its key slots, and the file helpers the vault shares.

Owns ``vault.key``: a JSON file holding the data key (DEK) wrapped with AES-256-GCM under each
slot (passphrase via Argon2id/scrypt, recovery code via HKDF, OS keychain via a random key
kept there), with associated data binding the store id, schema and slot settings, and an HMAC
over the whole file under a DEK subkey. Replaced atomically (temp file, fsync, rename, fsync of
the directory). Also owns the cross-process writer lock. Private to ``p2p_local.store``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from p2p_local.errors import (
    AuthenticationError,
    ConfigError,
    InputError,
    IntegrityError,
    KeychainUnavailableError,
    VaultLockedError,
    VaultNotFoundError,
)
from p2p_local.paths import atomic_write, fsync_dir  # noqa: F401 (used by vault.py)
from p2p_local.store import _crypto as C

SCHEMA_VERSION = 1
KEYFILE_NAME = "vault.key"
LOCK_NAME = "vault.lock"
KEYFILE_FORMAT = "p2p-local-vault-key"
MAX_KEYFILE_BYTES = 64 * 1024
MIN_PASSPHRASE_CHARS = 8


def canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


class WriterLock:
    """An exclusive ``flock`` on ``vault.lock``, polled until a timeout."""

    def __init__(self, path: Path) -> None:
        self._path = path

    @contextlib.contextmanager
    def held(self, timeout: float) -> Iterator[None]:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            delay = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise VaultLockedError(
                            f"the vault in {self._path.parent} is busy: another p2p-local process "
                            f"is writing to it (waited {timeout:g} s); wait for it to finish and "
                            "try again"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.1)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def slot_aad(store_id: bytes, slot: dict[str, Any]) -> bytes:
    bound = {k: v for k, v in slot.items() if k != "wrapped"}
    return b"p2p-local/slot\0" + store_id + SCHEMA_VERSION.to_bytes(2, "big") + canonical(bound)


def wrap_slot(store_id: bytes, dek: bytes, kek: bytes, slot: dict[str, Any]) -> dict[str, Any]:
    slot = dict(slot)
    slot["wrapped"] = C.b64e(C.Aead(kek).seal(dek, slot_aad(store_id, slot)))
    return slot


def passphrase_slot(store_id: bytes, dek: bytes, passphrase: str, kdf: C.KdfParams) -> dict:
    salt = C.random_bytes(C.SALT_BYTES)
    kek = C.derive_key(passphrase.encode("utf-8", "surrogatepass"), salt, kdf)
    slot = {"type": "passphrase", "kdf": kdf.to_json(), "salt": C.b64e(salt)}
    return wrap_slot(store_id, dek, kek, slot)


def recovery_kek(code: bytes, salt: bytes) -> bytes:
    # 160 random bits need no slow KDF.
    return C.hkdf(code, b"p2p-local/recovery/v1", salt=salt)


def recovery_slot(store_id: bytes, dek: bytes) -> tuple[dict[str, Any], str]:
    code = C.new_recovery_code()
    salt = C.random_bytes(C.SALT_BYTES)
    kek = recovery_kek(C.normalize_recovery_code(code), salt)
    return wrap_slot(store_id, dek, kek, {"type": "recovery", "salt": C.b64e(salt)}), code


def keychain_slot(store_id: bytes, dek: bytes) -> dict[str, Any]:
    kek = C.random_bytes(C.KEY_BYTES)
    account = f"vault-{store_id.hex()}"
    C.keychain_set(account, C.b64e(kek))
    return wrap_slot(store_id, dek, kek, {"type": "keychain", "account": account})


def validate_passphrase(passphrase: str) -> None:
    if not isinstance(passphrase, str) or len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise InputError(
            f"the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters: choose a "
            "longer one"
        )


def read(directory: Path) -> dict[str, Any]:
    """The key file's JSON, structurally checked (not yet authenticated: see check_mac)."""
    path = directory / KEYFILE_NAME
    if not path.is_file():
        raise VaultNotFoundError(f"no vault in {directory}: create one with `p2p-local init`")
    damaged = f"the key file {path} is damaged"
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_KEYFILE_BYTES + 1)
        if len(raw) > MAX_KEYFILE_BYTES:
            raise ValueError("too large")
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or data.get("format") != KEYFILE_FORMAT:
            raise ValueError("not a p2p-local key file")
        if data.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"unknown schema {data.get('schema')!r}")
        if not isinstance(data.get("store_id"), str) or len(bytes.fromhex(data["store_id"])) != 16:
            raise ValueError("bad store id")
        slots = data.get("slots")
        if not isinstance(slots, list) or not all(isinstance(s, dict) for s in slots):
            raise ValueError("bad slots")
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise IntegrityError(f"{damaged} ({exc}): restore it from a backup") from None
    return data


def find_slot(keyfile: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((s for s in keyfile["slots"] if s.get("type") == kind), None)


def _unwrap(directory: Path, store_id: bytes, slot: dict[str, Any], kek: bytes, what: str) -> bytes:
    try:
        wrapped = C.b64d(slot.get("wrapped"))
    except ValueError:
        wrapped = b""
    dek = C.Aead(kek).open(wrapped, slot_aad(store_id, slot), what=what)
    if len(dek) != C.KEY_BYTES:
        raise IntegrityError(f"the key file {directory / KEYFILE_NAME} is damaged")
    return dek


def unwrap_passphrase(
    directory: Path, keyfile: dict[str, Any], store_id: bytes, passphrase: str
) -> bytes:
    """The data key from the passphrase slot; KDF settings are checked before deriving."""
    slot = find_slot(keyfile, "passphrase")
    keypath = directory / KEYFILE_NAME
    if slot is None:
        raise IntegrityError(f"the key file {keypath} has no passphrase slot")
    try:
        kdf = C.KdfParams.from_json(slot.get("kdf"))
        salt = C.b64d(slot.get("salt"), size=C.SALT_BYTES)
    except (ConfigError, ValueError) as exc:
        raise IntegrityError(
            f"the key file {keypath} asks for key-derivation settings this library refuses "
            f"({exc}); it is damaged or was tampered with: restore it from a backup"
        ) from None
    kek = C.derive_key(passphrase.encode("utf-8", "surrogatepass"), salt, kdf)
    try:
        return _unwrap(directory, store_id, slot, kek, "passphrase")
    except AuthenticationError:
        raise AuthenticationError(
            f"wrong passphrase for the vault in {directory}: try again, or open it with "
            "your recovery code"
        ) from None


def unwrap_recovery(directory: Path, keyfile: dict[str, Any], store_id: bytes, code: str) -> bytes:
    slot = find_slot(keyfile, "recovery")
    if slot is None:
        raise IntegrityError(f"the key file {directory / KEYFILE_NAME} has no recovery slot")
    raw = C.normalize_recovery_code(code)
    try:
        salt = C.b64d(slot.get("salt"), size=C.SALT_BYTES)
    except ValueError:
        salt = b""
    try:
        return _unwrap(directory, store_id, slot, recovery_kek(raw, salt), "recovery")
    except AuthenticationError:
        raise AuthenticationError(
            f"wrong recovery code for the vault in {directory}: check it letter by letter"
        ) from None


def unwrap_keychain(directory: Path, keyfile: dict[str, Any], store_id: bytes) -> bytes:
    slot = find_slot(keyfile, "keychain")
    if slot is None:
        raise KeychainUnavailableError(
            f"the vault in {directory} has no keychain slot: open it with the passphrase"
        )
    secret = C.keychain_get(str(slot.get("account")))
    if secret is None:
        raise KeychainUnavailableError(
            f"the OS keychain has no key for the vault in {directory}: open it with the passphrase"
        )
    try:
        kek = C.b64d(secret, size=C.KEY_BYTES)
    except ValueError:
        kek = b"\0" * C.KEY_BYTES
    return _unwrap(directory, store_id, slot, kek, "the keychain key")


def check_mac(directory: Path, keyfile: dict[str, Any], key: bytes) -> None:
    """Raise unless the key file's HMAC (under a data-key subkey) matches its content."""
    body = {k: v for k, v in keyfile.items() if k != "mac"}
    try:
        tag = C.b64d(keyfile.get("mac"), size=32)
    except ValueError:
        tag = b""
    if not C.mac_ok(key, canonical(body), tag):
        raise IntegrityError(
            f"the key file {directory / KEYFILE_NAME} was modified: restore it from a backup"
        )


def write(directory: Path, keyfile: dict[str, Any], key: bytes) -> dict[str, Any]:
    """Write the key file with a fresh HMAC, atomically; returns what was written."""
    body = {k: v for k, v in keyfile.items() if k != "mac"}
    body["mac"] = C.b64e(C.mac(key, canonical(body)))
    atomic_write(directory / KEYFILE_NAME, json.dumps(body, indent=1).encode("utf-8"))
    return body
