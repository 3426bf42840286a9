"""Reading tensor files safely: safetensors only, header checked before anything is allocated.

Owns :func:`read_safetensors` / :func:`check_safetensors_header`: refuses pickle-based files
(``torch.save`` zips, raw pickles) outright, and checks a safetensors header (length, JSON,
dtypes, shapes, byte ranges that tile the data section exactly, expected names and shapes)
before any tensor is created. Used for hypernetwork checkpoints, cached adapters and imported
PEFT adapters. Does not know what the tensors mean.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2p_local.errors import P2PError

_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
MAX_HEADER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class TensorHeader:
    """A checked safetensors header: tensor shapes/dtypes and the free-form metadata."""

    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    metadata: dict[str, str]


@dataclass(frozen=True)
class TensorFile:
    """Tensors (float32) and metadata read from a checked safetensors file."""

    tensors: dict[str, Any]
    metadata: dict[str, str]


def refuse_pickle(head: bytes, what: str, error: type[P2PError]) -> None:
    """Raise ``error`` if ``head`` (the first bytes of a file) looks like a pickle or torch zip."""
    if (
        head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
        or head[:4] == b"PK\x03\x04"
    ):
        raise error(
            f"{what} is a pickle/torch.save file: refusing to load it (pickle can run code). "
            "Only safetensors files are accepted; convert it with safetensors.torch.save_file."
        )


def check_safetensors_header(
    data: bytes,
    what: str,
    error: type[P2PError],
    *,
    expected: dict[str, tuple[int, ...]] | None = None,
) -> TensorHeader:
    """Validate the header of safetensors ``data`` without creating any tensor."""
    refuse_pickle(data[:8], what, error)
    if len(data) < 8:
        raise error(f"{what} is truncated ({len(data)} bytes): export it again")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise error(f"{what} has an invalid safetensors header length {n}: the file is corrupt")
    try:
        header: Any = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(
            f"{what} has an unreadable safetensors header ({exc}): the file is corrupt"
        ) from None
    if not isinstance(header, dict):
        raise error(f"{what} has a malformed safetensors header: the file is corrupt")
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise error(f"{what} has malformed safetensors metadata: the file is corrupt")

    body = len(data) - 8 - n
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    spans: list[tuple[int, int]] = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise error(f"{what}: tensor {name!r} has a malformed entry: the file is corrupt")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _ITEMSIZE:
            raise error(
                f"{what}: tensor {name!r} has dtype {dtype!r}; only float tensors are allowed"
            )
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise error(f"{what}: tensor {name!r} has an invalid shape {shape!r}")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= body
        ):
            raise error(
                f"{what}: tensor {name!r} points outside the file: it is truncated or corrupt"
            )
        count = 1
        for d in shape:
            count *= d
        if offsets[1] - offsets[0] != count * _ITEMSIZE[dtype]:
            raise error(f"{what}: tensor {name!r} size does not match its shape {shape}")
        shapes[name] = tuple(shape)
        dtypes[name] = dtype
        spans.append((offsets[0], offsets[1]))
    spans.sort()
    end = 0
    for start, stop in spans:
        if start != end:
            raise error(f"{what}: tensor data overlaps or has gaps: the file is corrupt")
        end = stop
    if end != body:
        raise error(f"{what}: {body - end} stray bytes after the tensors: the file is corrupt")

    if expected is not None:
        if set(shapes) != set(expected):
            missing = sorted(set(expected) - set(shapes))[:3]
            extra = sorted(set(shapes) - set(expected))[:3]
            raise error(f"{what} has the wrong tensors (missing {missing}, unexpected {extra})")
        for name, shape in expected.items():
            if shapes[name] != tuple(shape):
                raise error(
                    f"{what}: tensor {name!r} has shape {shapes[name]}, expected {tuple(shape)}"
                )
    return TensorHeader(shapes, dtypes, dict(metadata))


def read_safetensors(
    source: bytes | Path,
    what: str,
    error: type[P2PError],
    *,
    expected: dict[str, tuple[int, ...]] | None = None,
    max_bytes: int = 1 << 30,
) -> TensorFile:
    """The float32 torch tensors and metadata of a safetensors file or byte string, checked."""
    from safetensors.torch import load

    if isinstance(source, Path):
        try:
            size = source.stat().st_size
            if size > max_bytes:
                raise error(f"{what} is {size} bytes, more than the {max_bytes} allowed")
            data = source.read_bytes()
        except FileNotFoundError:
            raise error(f"{what} not found at {source}") from None
        except OSError as exc:
            raise error(f"cannot read {what} at {source}: {exc.strerror}") from None
    else:
        data = source
        if len(data) > max_bytes:
            raise error(f"{what} is {len(data)} bytes, more than the {max_bytes} allowed")
    header = check_safetensors_header(data, what, error, expected=expected)
    tensors = {k: v.float() for k, v in load(data).items()}
    return TensorFile(tensors, header.metadata)
