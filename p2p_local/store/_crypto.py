"""The vault's cryptography, behind a tiny API (private to ``p2p_local.store``).

Owns: key derivation from passphrases (Argon2id, scrypt fallback) with parameter caps checked
before any work, HKDF subkeys, AES-256-GCM sealing with one error for every authentication
failure, HMACs, recovery codes, and the OS-keychain check. Does not own file formats: those
live in ``vault.py`` and ``sealed.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from p2p_local.errors import AuthenticationError, ConfigError, KeychainUnavailableError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SALT_BYTES = 16

# Caps on what a key file (possibly hostile) may ask the KDF for: checked before deriving.
MAX_MEMORY_KIB = 1024 * 1024  # 1 GiB
MAX_ITERATIONS = 16
MAX_LANES = 16
KDF_ENV = "P2P_LOCAL_KDF"
ALGORITHMS = ("argon2id", "scrypt")


def argon2_available() -> bool:
    """Whether the installed ``cryptography``/OpenSSL can run Argon2id."""
    try:
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

        Argon2id(salt=b"\0" * 8, length=32, iterations=1, lanes=1, memory_cost=8).derive(b"x")
    except (ImportError, UnsupportedAlgorithm):
        return False
    return True


@dataclass(frozen=True)
class KdfParams:
    """How a passphrase becomes a key-encryption key.

    algorithm:  "argon2id" (default) or "scrypt" (fallback where Argon2id is unavailable).
    memory_kib: argon2id: memory cost m in KiB; scrypt: 128 * r * N bytes with r = 8
                (so N = memory_kib / 1 KiB must be a power of two).
    iterations: argon2id: passes t; scrypt: must be 1.
    lanes:      argon2id: parallelism p; scrypt: p.
    Defaults follow the design notes: Argon2id, 64 MiB, t=3, p=4 (~0.2 s on a 2-core machine).
    """

    algorithm: str = "argon2id"
    memory_kib: int = 64 * 1024
    iterations: int = 3
    lanes: int = 4

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"kdf algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        for name, value, cap in (
            ("memory_kib", self.memory_kib, MAX_MEMORY_KIB),
            ("iterations", self.iterations, MAX_ITERATIONS),
            ("lanes", self.lanes, MAX_LANES),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"kdf {name} must be a positive integer, got {value!r}")
            if value > cap:
                raise ConfigError(f"kdf {name}={value} is above the cap {cap}: refusing to derive")
        if self.algorithm == "argon2id" and self.memory_kib < 8 * self.lanes:
            raise ConfigError(
                f"kdf memory_kib must be >= 8 * lanes for argon2id, got {self.memory_kib}"
            )
        if self.algorithm == "scrypt":
            if self.iterations != 1:
                raise ConfigError(f"kdf iterations must be 1 for scrypt, got {self.iterations}")
            n = self.memory_kib
            if n < 2 or n & (n - 1):
                raise ConfigError(
                    f"kdf memory_kib must be a power of two >= 2 for scrypt, got {self.memory_kib}"
                )

    @classmethod
    def default(cls) -> KdfParams:
        """Strong defaults, or the override in ``P2P_LOCAL_KDF`` (tests, very slow devices).

        The override reads like ``argon2id:m=65536,t=3,p=4`` or ``scrypt:m=65536,p=1``.
        Without Argon2id in the installed library, scrypt with 64 MiB is used.
        """
        spec = os.environ.get(KDF_ENV)
        if spec:
            return cls.parse(spec)
        if argon2_available():
            return cls()
        return cls(algorithm="scrypt", memory_kib=64 * 1024, iterations=1, lanes=1)

    @classmethod
    def parse(cls, spec: str) -> KdfParams:
        """Parse ``algorithm:m=KIB,t=N,p=N`` (fields optional)."""
        algorithm, _, rest = spec.strip().partition(":")
        fields = {"m": "memory_kib", "t": "iterations", "p": "lanes"}
        values: dict[str, int] = {}
        if algorithm == "scrypt":
            values["iterations"] = 1
        for part in filter(None, rest.split(",")):
            key, _, val = part.partition("=")
            if key.strip() not in fields or not val.strip().isdigit():
                raise ConfigError(
                    f"{KDF_ENV}: cannot read {part!r}; write e.g. argon2id:m=65536,t=3,p=4"
                )
            values[fields[key.strip()]] = int(val)
        return cls(algorithm=algorithm, **values)

    def to_json(self) -> dict[str, object]:
        return {
            "algorithm": self.algorithm,
            "memory_kib": self.memory_kib,
            "iterations": self.iterations,
            "lanes": self.lanes,
        }

    @classmethod
    def from_json(cls, data: object) -> KdfParams:
        """Parse stored parameters; raises :class:`ConfigError` for unknown or capped values."""
        if not isinstance(data, dict):
            raise ConfigError("kdf parameters must be an object")
        return cls(
            algorithm=data.get("algorithm"),  # type: ignore[arg-type]
            memory_kib=data.get("memory_kib"),  # type: ignore[arg-type]
            iterations=data.get("iterations"),  # type: ignore[arg-type]
            lanes=data.get("lanes"),  # type: ignore[arg-type]
        )


def argon2id_raw(
    password: bytes,
    salt: bytes,
    *,
    memory_kib: int,
    iterations: int,
    lanes: int,
    length: int = KEY_BYTES,
    secret: bytes | None = None,
    ad: bytes | None = None,
) -> bytes:
    """Argon2id as specified by RFC 9106 (``secret``/``ad`` exist for its test vectors)."""
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    return Argon2id(
        salt=salt,
        length=length,
        iterations=iterations,
        lanes=lanes,
        memory_cost=memory_kib,
        ad=ad,
        secret=secret,
    ).derive(password)


def derive_key(secret: bytes, salt: bytes, params: KdfParams) -> bytes:
    """A 32-byte key from a passphrase. ``params`` were validated (caps) when constructed."""
    if params.algorithm == "argon2id":
        return argon2id_raw(
            secret,
            salt,
            memory_kib=params.memory_kib,
            iterations=params.iterations,
            lanes=params.lanes,
        )
    return Scrypt(salt=salt, length=KEY_BYTES, n=params.memory_kib, r=8, p=params.lanes).derive(
        secret
    )


def hkdf(key: bytes, info: bytes, *, salt: bytes | None = None, length: int = KEY_BYTES) -> bytes:
    """A subkey of ``key`` for one purpose (``info`` names it)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


def mac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def mac_ok(key: bytes, data: bytes, tag: bytes) -> bool:
    return hmac.compare_digest(mac(key, data), tag)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def random_bytes(n: int) -> bytes:
    return secrets.token_bytes(n)


class Aead:
    """AES-256-GCM with a random 96-bit nonce per message; output is ``nonce || ct || tag``."""

    __slots__ = ("_gcm", "_hint")

    def __init__(self, key: bytes, *, hint: str = "") -> None:
        """``hint``: what to do when authentication fails, appended to the error."""
        if len(key) != KEY_BYTES:
            raise ValueError("AES-256-GCM needs a 32-byte key")
        self._gcm = AESGCM(key)
        self._hint = hint

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._gcm.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes, *, what: str) -> bytes:
        """Decrypt or raise :class:`AuthenticationError` (``what`` says what failed)."""
        message = f"{what} failed authentication" + (f": {self._hint}" if self._hint else "")
        if not isinstance(blob, bytes) or len(blob) < NONCE_BYTES + TAG_BYTES:
            raise AuthenticationError(message)
        try:
            return self._gcm.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise AuthenticationError(message) from None

    def encrypt_with_nonce(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt under a caller-built nonce (the chunked stream format builds its own)."""
        return self._gcm.encrypt(nonce, plaintext, aad)

    def decrypt_with_nonce(self, nonce: bytes, data: bytes, aad: bytes, *, what: str) -> bytes:
        try:
            return self._gcm.decrypt(nonce, data, aad)
        except InvalidTag:
            raise AuthenticationError(f"{what} failed authentication") from None


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: object, *, size: int | None = None) -> bytes:
    """Decode base64 or raise ``ValueError`` (also when ``size`` does not match)."""
    if not isinstance(text, str):
        raise ValueError("expected a base64 string")
    data = base64.b64decode(text.encode("ascii"), validate=True)
    # One encoding per value: unused padding bits that are set would let a changed file
    # decode to the same bytes (and so go unnoticed).
    if base64.b64encode(data).decode("ascii") != text:
        raise ValueError("non-canonical base64")
    if size is not None and len(data) != size:
        raise ValueError(f"expected {size} bytes, got {len(data)}")
    return data


# --- recovery codes -------------------------------------------------------------------------

RECOVERY_BYTES = 20  # 160 bits, written as 32 base32 characters in 8 groups of 4
_RECOVERY_RE = re.compile(r"^[A-Z2-7]{32}$")


def new_recovery_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(RECOVERY_BYTES)).decode("ascii")
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def normalize_recovery_code(code: str) -> bytes:
    """The code's bytes; spaces, dashes and case do not matter."""
    text = re.sub(r"[\s-]", "", code or "").upper()
    if not _RECOVERY_RE.match(text):
        raise AuthenticationError(
            "that is not a recovery code: it has 32 letters and digits in groups of 4, "
            "like ABCD-EFGH-..."
        )
    return base64.b32decode(text)


# --- OS keychain --------------------------------------------------------------------------

KEYRING_SERVICE = "p2p-local"
_FAKE_BACKENDS = ("keyring.backends.fail", "keyring.backends.null", "keyrings.alt")


def keychain_backend() -> object:
    """The active keyring backend if it is a real OS keychain, else raise.

    Rejects the fail/null backends and the plaintext/obfuscated file backends of
    ``keyrings.alt``: the vault never falls back to storing a key in plaintext.
    """
    hint = "use the passphrase instead (leave out --keychain)"
    try:
        import keyring
        from keyring.backends import chainer
    except ImportError as exc:
        raise KeychainUnavailableError(f"the 'keyring' package is not installed: {hint}") from exc
    backend = keyring.get_keyring()
    backends = list(backend.backends) if isinstance(backend, chainer.ChainerBackend) else [backend]
    real = [
        b
        for b in backends
        if not type(b).__module__.startswith(_FAKE_BACKENDS) and getattr(b, "priority", 0) > 0
    ]
    if not real:
        name = f"{type(backend).__module__}.{type(backend).__name__}"
        raise KeychainUnavailableError(
            f"no OS keychain is available here (keyring backend: {name}; on Linux it needs a "
            f"running Secret Service over D-Bus): {hint}"
        )
    return backend


def keychain_set(account: str, secret: str) -> None:
    import keyring
    from keyring.errors import KeyringError

    keychain_backend()
    try:
        keyring.set_password(KEYRING_SERVICE, account, secret)
    except KeyringError as exc:
        raise KeychainUnavailableError(f"the OS keychain refused to store the key: {exc}") from exc


def keychain_get(account: str) -> str | None:
    import keyring
    from keyring.errors import KeyringError

    keychain_backend()
    try:
        return keyring.get_password(KEYRING_SERVICE, account)
    except KeyringError as exc:
        raise KeychainUnavailableError(f"the OS keychain cannot be read: {exc}") from exc


def keychain_delete(account: str) -> bool:
    """Remove the entry; False when there was none or no keychain can be reached."""
    try:
        import keyring
        from keyring.errors import KeyringError, PasswordDeleteError

        keychain_backend()
        keyring.delete_password(KEYRING_SERVICE, account)
    except (KeychainUnavailableError, ImportError):
        return False
    except (PasswordDeleteError, KeyringError):
        return False
    return True
