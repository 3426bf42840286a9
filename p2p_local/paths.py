"""Where p2p-local keeps its files.

Owns the data directory (vaults, server token) and the cache directory (fetched model and
data packages). ``P2P_LOCAL_HOME`` overrides both: data in ``$P2P_LOCAL_HOME``, cache in
``$P2P_LOCAL_HOME/cache`` (unless ``P2P_LOCAL_CACHE`` names another one).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import platformdirs

from p2p_local.errors import InputError

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
