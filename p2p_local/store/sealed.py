"""Passphrase-encrypted, authenticated, chunked files (used for encrypted exports).

Owns the ``P2PSEAL`` stream format. Layout::

    magic "P2PSEAL\\x01" | u32 header length | header JSON (kdf, salt, chunk size, nonce prefix)
    chunk 0 | chunk 1 | ... | final chunk

Every chunk is AES-256-GCM over ``chunk_size`` plaintext bytes (the final one over 0..chunk_size)
with nonce = 7-byte random prefix || u32 chunk counter || final flag, and the magic + header as
associated data (the STREAM construction). So a modified header, reordered, dropped, duplicated
or appended chunks, and a file cut at any point all fail authentication. Memory use is one chunk.

Plaintext is written to ``dst`` as each chunk authenticates, so on an error the partial output
must be discarded: :func:`open_sealed_file` does that for you (temp file, rename on success).
Does not own what is inside a sealed file.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import BinaryIO

from p2p_local.errors import AuthenticationError, ConfigError, InputError
from p2p_local.paths import atomic_write_with
from p2p_local.store import _crypto as C

MAGIC = b"P2PSEAL\x01"
DEFAULT_CHUNK = 64 * 1024
MIN_CHUNK = 16
MAX_CHUNK = 16 * 1024 * 1024
MAX_HEADER = 4096
_PREFIX_BYTES = 7


def _nonce(prefix: bytes, index: int, final: bool) -> bytes:
    if index >= 2**32:
        raise InputError("a sealed file holds at most 2**32 chunks: use a larger chunk size")
    return prefix + struct.pack(">IB", index, 1 if final else 0)


def _stream_key(passphrase: str, salt: bytes, kdf: C.KdfParams, prefix: bytes) -> C.Aead:
    if not isinstance(passphrase, str) or not passphrase:
        raise InputError("a sealed file needs a non-empty passphrase")
    kek = C.derive_key(passphrase.encode("utf-8"), salt, kdf)
    return C.Aead(C.hkdf(kek, b"p2p-local/sealed/v1", salt=prefix))


def _read_full(src: BinaryIO, n: int) -> bytes:
    """Read up to ``n`` bytes, looping over short reads; fewer only at end of file."""
    parts = []
    while n > 0:
        data = src.read(n)
        if not data:
            break
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def seal_stream(
    src: BinaryIO,
    dst: BinaryIO,
    passphrase: str,
    *,
    kdf: C.KdfParams | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> int:
    """Encrypt ``src`` to ``dst``; returns the plaintext byte count."""
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ConfigError(f"chunk_size must be in {MIN_CHUNK}..{MAX_CHUNK}, got {chunk_size}")
    kdf = kdf or C.KdfParams.default()
    salt = C.random_bytes(C.SALT_BYTES)
    prefix = C.random_bytes(_PREFIX_BYTES)
    header = json.dumps(
        {
            "kdf": kdf.to_json(),
            "salt": C.b64e(salt),
            "chunk_size": chunk_size,
            "nonce_prefix": C.b64e(prefix),
        },
        sort_keys=True,
    ).encode("utf-8")
    aad = MAGIC + header
    aead = _stream_key(passphrase, salt, kdf, prefix)
    dst.write(MAGIC + struct.pack(">I", len(header)) + header)
    total = 0
    index = 0
    current = _read_full(src, chunk_size)
    while True:
        following = _read_full(src, chunk_size)
        final = not following
        dst.write(aead.encrypt_with_nonce(_nonce(prefix, index, final), current, aad))
        total += len(current)
        if final:
            return total
        current = following
        index += 1


def open_sealed(src: BinaryIO, dst: BinaryIO, passphrase: str) -> int:
    """Decrypt and authenticate ``src`` into ``dst``; returns the plaintext byte count.

    Raises :class:`AuthenticationError` for a wrong passphrase or any modification,
    reordering or truncation, and :class:`InputError` for a file that is not in this format.
    """
    start = _read_full(src, len(MAGIC) + 4)
    if len(start) != len(MAGIC) + 4 or start[: len(MAGIC)] != MAGIC:
        raise InputError("not a p2p-local sealed file (bad magic bytes)")
    (hlen,) = struct.unpack(">I", start[len(MAGIC) :])
    if hlen > MAX_HEADER:
        raise AuthenticationError("the sealed file's header is damaged (too large)")
    header = _read_full(src, hlen)
    try:
        meta = json.loads(header)
        kdf = C.KdfParams.from_json(meta["kdf"])
        salt = C.b64d(meta["salt"], size=C.SALT_BYTES)
        prefix = C.b64d(meta["nonce_prefix"], size=_PREFIX_BYTES)
        chunk_size = meta["chunk_size"]
        if not isinstance(chunk_size, int) or not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk_size {chunk_size!r} out of range")
    except (ValueError, KeyError, TypeError, ConfigError) as exc:
        raise AuthenticationError(
            f"the sealed file's header is damaged or refused ({exc}): it cannot be opened"
        ) from None
    aad = MAGIC + header
    aead = _stream_key(passphrase, salt, kdf, prefix)
    block = chunk_size + C.TAG_BYTES
    total = 0
    index = 0
    current = _read_full(src, block)
    what = "the sealed file (wrong passphrase, or the file was modified or truncated)"
    while True:
        following = _read_full(src, block)
        final = not following
        if len(current) < C.TAG_BYTES:
            raise AuthenticationError(f"{what} failed authentication")
        plain = aead.decrypt_with_nonce(_nonce(prefix, index, final), current, aad, what=what)
        dst.write(plain)
        total += len(plain)
        if final:
            return total
        current = following
        index += 1


def seal_bytes(data: bytes, passphrase: str, *, kdf: C.KdfParams | None = None) -> bytes:
    out = io.BytesIO()
    seal_stream(io.BytesIO(data), out, passphrase, kdf=kdf)
    return out.getvalue()


def open_sealed_bytes(data: bytes, passphrase: str) -> bytes:
    out = io.BytesIO()
    open_sealed(io.BytesIO(data), out, passphrase)
    return out.getvalue()


def seal_file(src: Path, dst: Path, passphrase: str, *, kdf: C.KdfParams | None = None) -> int:
    """Encrypt file ``src`` to ``dst`` (0600, written atomically)."""
    with open(src, "rb") as fin:
        return atomic_write_with(dst, lambda fh: seal_stream(fin, fh, passphrase, kdf=kdf))


def open_sealed_file(src: Path, dst: Path, passphrase: str) -> int:
    """Decrypt ``src`` to ``dst`` (0600); ``dst`` appears only if all of it authenticated."""
    with open(src, "rb") as fin:
        return atomic_write_with(dst, lambda fh: open_sealed(fin, fh, passphrase))
