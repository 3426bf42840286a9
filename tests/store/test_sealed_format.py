"""The sealed (passphrase-encrypted, chunked) file format: round trips and every kind of damage."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest

from p2p_local.errors import AuthenticationError, InputError
from p2p_local.store import _crypto as C
from p2p_local.store import sealed
from p2p_local.store._crypto import KdfParams

PASS = "export passphrase"
CHEAP = KdfParams(memory_kib=64, iterations=1, lanes=1)
CHUNK = 32


def seal(data: bytes, chunk: int = CHUNK) -> bytes:
    out = io.BytesIO()
    assert sealed.seal_stream(io.BytesIO(data), out, PASS, kdf=CHEAP, chunk_size=chunk) == len(data)
    return out.getvalue()


def unseal(blob: bytes, passphrase: str = PASS) -> bytes:
    out = io.BytesIO()
    sealed.open_sealed(io.BytesIO(blob), out, passphrase)
    return out.getvalue()


def split(blob: bytes) -> tuple[bytes, list[bytes]]:
    """(magic + header, ciphertext chunks)."""
    (hlen,) = struct.unpack(">I", blob[8:12])
    head, body = blob[: 12 + hlen], blob[12 + hlen :]
    step = CHUNK + C.TAG_BYTES
    return head, [body[i : i + step] for i in range(0, len(body), step)]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK, 5 * CHUNK + 7])
def test_round_trip(size: int) -> None:
    data = bytes(range(256))[:size] if size <= 256 else (bytes(range(256)) * 2)[:size]
    blob = seal(data)
    assert size < 8 or data not in blob
    assert unseal(blob) == data


def test_bytes_helpers_and_default_chunking() -> None:
    data = b"adapter weights " * 10000
    assert sealed.open_sealed_bytes(sealed.seal_bytes(data, PASS, kdf=CHEAP), PASS) == data


def test_wrong_passphrase() -> None:
    with pytest.raises(AuthenticationError):
        unseal(seal(b"secret"), "export passphrasE")


def test_every_flipped_byte_is_detected() -> None:
    blob = seal(b"0123456789" * 10)
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises((AuthenticationError, InputError)):
            unseal(bytes(bad))


def test_every_truncation_is_detected() -> None:
    data = b"abcdefghij" * 10  # 3 full chunks and a partial one
    blob = seal(data)
    for cut in range(len(blob)):
        with pytest.raises((AuthenticationError, InputError)):
            unseal(blob[:cut])
    exact = seal(b"x" * (3 * CHUNK))  # ends on a chunk boundary: dropping the last chunk
    head, chunks = split(exact)
    with pytest.raises(AuthenticationError):
        unseal(head + b"".join(chunks[:-1]))


def test_reordered_dropped_duplicated_and_appended_chunks_are_detected() -> None:
    head, chunks = split(seal(b"abcdefghij" * 10))
    assert len(chunks) == 4
    variants = {
        "swap": [chunks[1], chunks[0], *chunks[2:]],
        "drop middle": [chunks[0], *chunks[2:]],
        "duplicate": [chunks[0], chunks[0], *chunks[1:]],
        "append": [*chunks, chunks[-1]],
        "garbage after": [*chunks, b"\0" * 5],
    }
    for name, parts in variants.items():
        with pytest.raises(AuthenticationError):
            unseal(head + b"".join(parts))
        assert name
    other_head, other_chunks = split(seal(b"abcdefghij" * 10))
    with pytest.raises(AuthenticationError):  # chunks of another file of the same passphrase
        unseal(head + other_chunks[0] + b"".join(chunks[1:]))


def test_not_a_sealed_file() -> None:
    with pytest.raises(InputError, match="not a p2p-local sealed file"):
        unseal(b"PK\x03\x04 a zip file")


def test_header_kdf_caps_are_checked_before_deriving(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = seal(b"secret")
    (hlen,) = struct.unpack(">I", blob[8:12])
    header = json.loads(blob[12 : 12 + hlen])
    header["kdf"]["memory_kib"] = 2**31
    raw = json.dumps(header).encode()
    forged = blob[:8] + struct.pack(">I", len(raw)) + raw + blob[12 + hlen :]

    def no_derivation(*args, **kwargs):
        raise AssertionError("the KDF ran with refused parameters")

    monkeypatch.setattr(C, "derive_key", no_derivation)
    with pytest.raises(AuthenticationError, match="refused"):
        unseal(forged)


def test_files_are_written_atomically_and_privately(tmp_path: Path) -> None:
    src = tmp_path / "adapter.bin"
    src.write_bytes(b"weights" * 1000)
    enc = tmp_path / "adapter.sealed"
    sealed.seal_file(src, enc, PASS, kdf=CHEAP)
    assert enc.stat().st_mode & 0o777 == 0o600
    out = tmp_path / "back.bin"
    assert sealed.open_sealed_file(enc, out, PASS) == 7000
    assert out.read_bytes() == src.read_bytes()
    enc.write_bytes(enc.read_bytes()[:-3])
    bad_out = tmp_path / "bad.bin"
    with pytest.raises(AuthenticationError):
        sealed.open_sealed_file(enc, bad_out, PASS)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "adapter.bin",
        "adapter.sealed",
        "back.bin",
    ]
