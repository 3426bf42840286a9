"""The vault's cryptographic primitives: KDF vectors, caps, AEAD, recovery codes, keychain."""

from __future__ import annotations

import pytest

from p2p_local.errors import AuthenticationError, ConfigError, KeychainUnavailableError
from p2p_local.store import _crypto as C
from p2p_local.store.vault import Vault


def test_argon2id_matches_rfc9106_test_vector() -> None:
    # RFC 9106 section 5.3 (Argon2id, version 0x13).
    tag = C.argon2id_raw(
        bytes([1]) * 32,
        bytes([2]) * 16,
        memory_kib=32,
        iterations=3,
        lanes=4,
        length=32,
        secret=bytes([3]) * 8,
        ad=bytes([4]) * 12,
    )
    assert tag.hex() == "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"


def test_scrypt_fallback_matches_rfc7914_test_vector() -> None:
    # RFC 7914 section 12: P="password", S="NaCl", N=1024, r=8, p=16 (first 32 of 64 bytes).
    params = C.KdfParams(algorithm="scrypt", memory_kib=1024, iterations=1, lanes=16)
    key = C.derive_key(b"password", b"NaCl", params)
    assert key.hex() == "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"


def test_argon2id_through_derive_key_is_deterministic_and_salted() -> None:
    params = C.KdfParams(memory_kib=64, iterations=1, lanes=1)
    a = C.derive_key(b"pw", b"s" * 16, params)
    assert a == C.derive_key(b"pw", b"s" * 16, params)
    assert a != C.derive_key(b"pw", b"t" * 16, params)
    assert a != C.derive_key(b"pw", b"s" * 16, C.KdfParams(memory_kib=64, iterations=2, lanes=1))


def test_defaults_are_the_strong_design_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(C.KDF_ENV, raising=False)
    assert C.KdfParams() == C.KdfParams("argon2id", 64 * 1024, 3, 4)
    assert C.argon2_available()
    assert C.KdfParams.default() == C.KdfParams()


def test_scrypt_is_the_fallback_without_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(C.KDF_ENV, raising=False)
    monkeypatch.setattr(C, "argon2_available", lambda: False)
    params = C.KdfParams.default()
    assert params.algorithm == "scrypt" and params.memory_kib == 64 * 1024


def test_vault_with_scrypt_slot_opens(tmp_path) -> None:
    kdf = C.KdfParams(algorithm="scrypt", memory_kib=16, iterations=1, lanes=1)
    Vault.create(tmp_path / "v", "scrypt passphrase", kdf=kdf).vault.close()
    with Vault.open(tmp_path / "v", passphrase="scrypt passphrase") as v:
        assert v.kdf_params == kdf
    with pytest.raises(AuthenticationError):
        Vault.open(tmp_path / "v", passphrase="scrypt passphrasf")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"memory_kib": C.MAX_MEMORY_KIB + 1},
        {"iterations": C.MAX_ITERATIONS + 1},
        {"lanes": C.MAX_LANES + 1},
        {"memory_kib": 0},
        {"iterations": True},
        {"memory_kib": 16, "lanes": 4},  # argon2 needs m >= 8 * p
        {"algorithm": "pbkdf2"},
        {"algorithm": "scrypt", "memory_kib": 1000, "iterations": 1},  # N not a power of two
        {"algorithm": "scrypt", "memory_kib": 1024, "iterations": 2},
    ],
)
def test_kdf_params_outside_caps_are_refused(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        C.KdfParams(**kwargs)


def test_kdf_env_override_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(C.KDF_ENV, "argon2id:m=512,t=2,p=2")
    assert C.KdfParams.default() == C.KdfParams("argon2id", 512, 2, 2)
    monkeypatch.setenv(C.KDF_ENV, "scrypt:m=1024,p=1")
    assert C.KdfParams.default() == C.KdfParams("scrypt", 1024, 1, 1)
    monkeypatch.setenv(C.KDF_ENV, "argon2id:m=lots")
    with pytest.raises(ConfigError, match="P2P_LOCAL_KDF"):
        C.KdfParams.default()


def test_aead_detects_every_flipped_byte_and_wrong_aad() -> None:
    aead = C.Aead(b"k" * 32)
    blob = aead.seal(b"secret history item", b"aad")
    assert aead.open(blob, b"aad", what="x") == b"secret history item"
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(AuthenticationError):
            aead.open(bytes(bad), b"aad", what="x")
    with pytest.raises(AuthenticationError):
        aead.open(blob, b"aae", what="x")
    with pytest.raises(AuthenticationError):
        C.Aead(b"j" * 32).open(blob, b"aad", what="x")
    assert aead.seal(b"same", b"") != aead.seal(b"same", b"")  # fresh nonce each time


def test_recovery_codes_normalize_and_reject_garbage() -> None:
    code = C.new_recovery_code()
    assert len(code) == 39 and code.count("-") == 7
    raw = C.normalize_recovery_code(code)
    assert len(raw) == C.RECOVERY_BYTES
    assert C.normalize_recovery_code(code.lower().replace("-", " ")) == raw
    with pytest.raises(AuthenticationError):
        C.normalize_recovery_code("not-a-code")


def test_no_real_keychain_here_means_a_clear_error_and_no_vault(tmp_path) -> None:
    import keyring

    backend = keyring.get_keyring()
    if getattr(backend, "priority", 0) > 0 and "fail" not in type(backend).__module__:
        pytest.skip(f"a keyring backend is available here: {backend}")
    with pytest.raises(KeychainUnavailableError, match="no OS keychain"):
        C.keychain_backend()
    with pytest.raises(KeychainUnavailableError):
        Vault.create(tmp_path / "v", "passphrase here", use_keychain=True)
    assert not Vault.exists(tmp_path / "v")
    assert not (tmp_path / "v").exists()


class _MemoryKeyring:
    """A minimal in-process keyring backend: this machine has no OS keychain to test against."""

    def __init__(self) -> None:
        from keyring.backend import KeyringBackend

        class Backend(KeyringBackend):
            priority = 1  # type: ignore[assignment]
            store: dict[tuple[str, str], str] = {}

            def get_password(self, service: str, username: str) -> str | None:
                return self.store.get((service, username))

            def set_password(self, service: str, username: str, password: str) -> None:
                self.store[(service, username)] = password

            def delete_password(self, service: str, username: str) -> None:
                from keyring.errors import PasswordDeleteError

                if self.store.pop((service, username), None) is None:
                    raise PasswordDeleteError(username)

        self.backend = Backend()


def test_keychain_slot_opens_without_passphrase_and_forget_removes_it(tmp_path) -> None:
    import keyring

    mem = _MemoryKeyring().backend
    previous = keyring.get_keyring()
    keyring.set_keyring(mem)
    try:
        created = Vault.create(tmp_path / "v", "passphrase here", use_keychain=True)
        created.vault.close()
        assert len(mem.store) == 1
        (secret,) = mem.store.values()
        assert secret.encode() not in (tmp_path / "v" / "vault.key").read_bytes()
        with Vault.open(tmp_path / "v", use_keychain=True) as v:
            assert v.has_keychain_slot
        mem.store[next(iter(mem.store))] = C.b64e(b"x" * 32)  # a wrong key in the keychain
        with pytest.raises(AuthenticationError):
            Vault.open(tmp_path / "v", use_keychain=True)
        assert Vault.destroy(tmp_path / "v")
        assert mem.store == {}
    finally:
        keyring.set_keyring(previous)
