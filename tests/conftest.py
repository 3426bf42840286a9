"""Shared fixtures.

- ``home``: an empty data dir (``P2P_LOCAL_HOME``) per test; the model/data cache stays shared
  (``P2P_LOCAL_CACHE``, default ``~/.cache/p2p-local``) so real models are fetched once.
- Real-model fixtures are session-scoped: each model loads once per test run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep the fetched models between test runs, independent of each test's data dir.
os.environ.setdefault("P2P_LOCAL_CACHE", str(Path.home() / ".cache" / "p2p-local"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty p2p-local data dir for one test."""
    data = tmp_path / "p2p-home"
    monkeypatch.setenv("P2P_LOCAL_HOME", str(data))
    monkeypatch.delenv("P2P_LOCAL_PASSPHRASE", raising=False)
    monkeypatch.delenv("P2P_LOCAL_USER", raising=False)
    return data
