"""Exporting adapters as files other tools load, encrypted unless asked otherwise.

Owns the export policy: an adapter encodes its user's profile, so by default an export is one
passphrase-sealed file (``store/sealed.py``: authenticated, streamed) holding either the PEFT
directory (as a tar bundle) or the GGUF adapter; ``plaintext=True`` writes the files tools load
directly (a PEFT directory, a ``.gguf`` file). Also opening and importing: sealed files are
authenticated before anything is parsed, pickle files are refused, safetensors headers are
checked before allocating. The formats themselves live in peft.py and gguf.py.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from p2p_local.adapter import LoraAdapter
from p2p_local.errors import AdapterError, InputError
from p2p_local.hypernet.targets import TargetSpec
from p2p_local.hypernet.tensorfile import refuse_pickle
from p2p_local.paths import atomic_write

FORMATS = ("peft", "gguf")
SEALED_MAGIC = b"P2PSEAL"
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    path: Path
    format: str  # "peft" | "gguf"
    encrypted: bool
    n_bytes: int


@dataclass(frozen=True)
class OpenedExport:
    """A decrypted export: the format and its plaintext (a PEFT tar bundle or GGUF bytes)."""

    format: str
    data: bytes


def export_adapter(
    adapter: LoraAdapter,
    format: str,
    out: Path,
    *,
    passphrase: str | None = None,
    plaintext: bool = False,
    base_model_name: str | None = None,
) -> ExportResult:
    """Write ``adapter`` as ``format`` to ``out``: sealed with ``passphrase`` unless ``plaintext``.

    Plaintext PEFT writes a directory; everything else writes one file.
    """
    from p2p_local.export.gguf import gguf_adapter_bytes, save_gguf
    from p2p_local.export.peft import peft_bundle, save_peft

    if format not in FORMATS:
        raise InputError(f"unknown export format {format!r}: use one of {', '.join(FORMATS)}")
    out = Path(out)
    if plaintext:
        if format == "peft":
            save_peft(adapter, out, base_model_name)
            size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
        else:
            _refuse_dir(out)
            save_gguf(adapter, out)
            size = out.stat().st_size
        return ExportResult(out, format, False, size)

    if not passphrase:
        raise InputError(
            "an encrypted export needs a passphrase (or pass plaintext=True / --plaintext to "
            "write files other tools load directly)"
        )
    from p2p_local.store.sealed import seal_bytes

    _refuse_dir(out)
    data = (
        peft_bundle(adapter, base_model_name) if format == "peft" else gguf_adapter_bytes(adapter)
    )
    sealed = seal_bytes(data, passphrase)
    atomic_write(out, sealed)
    return ExportResult(out, format, True, len(sealed))


def open_export(path: Path, passphrase: str) -> OpenedExport:
    """Authenticate and decrypt a sealed export (any change or truncation is refused)."""
    from p2p_local.errors import AuthenticationError
    from p2p_local.store.sealed import open_sealed_bytes

    path = Path(path)
    data = _read_file(path)
    if not data.startswith(SEALED_MAGIC):
        refuse_pickle(data[:8], str(path), AdapterError)
        raise AdapterError(f"{path} is not an encrypted p2p-local export")
    try:
        plain = open_sealed_bytes(data, passphrase)
    except AuthenticationError as exc:
        raise AdapterError(
            f"cannot open {path}: wrong passphrase, or the file was modified or truncated ({exc})"
        ) from None
    except InputError as exc:
        raise AdapterError(f"cannot open {path}: {exc}") from None
    if plain.startswith(GGUF_MAGIC):
        return OpenedExport("gguf", plain)
    if _is_tar(plain):
        return OpenedExport("peft", plain)
    raise AdapterError(f"{path} decrypted to neither a PEFT bundle nor a GGUF adapter")


def decrypt_export(path: Path, out: Path, passphrase: str) -> ExportResult:
    """Turn a sealed export into the plaintext files tools load (PEFT directory or .gguf)."""
    from p2p_local.export.peft import CONFIG_NAME, WEIGHTS_NAME, load_peft_bundle

    opened = open_export(path, passphrase)
    out = Path(out)
    if opened.format == "gguf":
        _refuse_dir(out)
        atomic_write(out, opened.data)
        return ExportResult(out, "gguf", False, len(opened.data))
    load_peft_bundle(opened.data)  # validates names, config and tensors before writing
    _refuse_file(out)
    out.mkdir(parents=True, exist_ok=True)
    size = 0
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        member = _bundle_member(opened.data, name)
        atomic_write(out / name, member)
        size += len(member)
    return ExportResult(out, "peft", False, size)


def import_adapter(
    path: Path, *, passphrase: str | None = None, targets: TargetSpec | None = None
) -> LoraAdapter:
    """Load an adapter from a PEFT directory or a sealed PEFT export.

    Pickle files are refused; safetensors headers are checked before any tensor is allocated;
    with ``targets`` the tensors must match the base model's layout exactly.
    """
    from p2p_local.export.peft import load_peft, load_peft_bundle

    path = Path(path)
    if path.is_dir():
        return load_peft(path, targets)
    head = _read_head(path)
    refuse_pickle(head, str(path), AdapterError)
    if head.startswith(SEALED_MAGIC):
        if not passphrase:
            raise InputError(f"{path} is encrypted: give the passphrase it was exported with")
        opened = open_export(path, passphrase)
        if opened.format != "peft":
            raise AdapterError(
                f"{path} holds a GGUF adapter: load it in llama.cpp (decrypt it first), or "
                "export the adapter as PEFT to import it here"
            )
        return load_peft_bundle(opened.data, targets)
    if head.startswith(GGUF_MAGIC):
        raise AdapterError(
            f"{path} is a GGUF adapter: load it with llama.cpp (--lora), or import a PEFT export"
        )
    raise AdapterError(f"{path} is not a PEFT adapter directory or an encrypted p2p-local export")


# --- helpers -------------------------------------------------------------------------------

_MAX_EXPORT_BYTES = 1 << 30


def _is_tar(data: bytes) -> bool:
    return len(data) > 262 and data[257:262] == b"ustar"


def _bundle_member(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        fh = tar.extractfile(name)
        assert fh is not None
        return fh.read()


def _refuse_dir(out: Path) -> None:
    if out.is_dir():
        raise InputError(f"{out} is a directory: give a file name for this export")


def _refuse_file(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file: give a directory name for a PEFT export")


def _read_head(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(8)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def _read_file(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > _MAX_EXPORT_BYTES:
            raise AdapterError(f"{path} is {size} bytes: too large for an adapter export")
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


