"""Where p2p-local keeps its files.

Owns the data directory (vaults, server token) and the cache directory (fetched model and
data packages). ``P2P_LOCAL_HOME`` overrides both: data in ``$P2P_LOCAL_HOME``, cache in
``$P2P_LOCAL_HOME/cache`` (unless ``P2P_LOCAL_CACHE`` names another one).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import platformdirs

from p2p_local.errors import InputError

T = TypeVar("T")

APP_NAME = "p2p-local"
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def data_dir() -> Path:
    """The root of the user's data (created 0700 when missing)."""
    home = os.environ.get("P2P_LOCAL_HOME")
    path = Path(home).expanduser() if home else Path(platformdirs.user_data_dir(APP_NAME))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def cache_dir() -> Path:
    """Fetched packages, models and datasets: nothing personal ever goes here."""
    explicit = os.environ.get("P2P_LOCAL_CACHE")
    if explicit:
        path = Path(explicit).expanduser()
    elif os.environ.get("P2P_LOCAL_HOME"):
        path = data_dir() / "cache"
    else:
        path = Path(platformdirs.user_cache_dir(APP_NAME))
    path.mkdir(parents=True, exist_ok=True)
    return path


def validate_user_name(name: str) -> str:
    """Return ``name`` if it is a safe user name, else raise :class:`InputError`."""
    if not _USER_NAME.match(name or ""):
        raise InputError(
            f"invalid user name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def users_dir() -> Path:
    path = data_dir() / "users"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def user_dir(user: str) -> Path:
    """The directory of one user's vault (not created here)."""
    return users_dir() / validate_user_name(user)


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry (after a rename) to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_with(path: Path, fill: Callable[[BinaryIO], T]) -> T:
    """Write ``path`` (mode 0600) through ``fill(file)`` so a crash leaves the old file or the
    new one: a temp file in the same directory, fsync, rename over ``path``, fsync of the
    directory. Returns what ``fill`` returns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            result = fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return result


def atomic_write(path: Path, data: bytes) -> None:
    """:func:`atomic_write_with` for bytes already in memory."""
    atomic_write_with(path, lambda fh: fh.write(data))
