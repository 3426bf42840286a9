"""The distribution ships every subpackage, and the layout keeps its one-way imports."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _importable_folders(source: Path, package: str) -> set[str]:
    """Dotted names of `source` and every folder below it that setuptools would import."""
    names = {package}
    for path in source.rglob("*"):
        parts = path.relative_to(source).parts
        if not path.is_dir() or "__pycache__" in parts:
            continue
        if all(part.isidentifier() for part in parts):
            names.add(".".join((package, *parts)))
    return names


def test_every_subpackage_and_data_folder_is_listed_in_pyproject() -> None:
    config = _setuptools_config()
    listed = set(config["packages"])
    found: set[str] = set()
    for package, folder in config["package-dir"].items():
        found |= _importable_folders(ROOT / folder, package)
    missing = found - listed
    assert not missing, f"add these to [tool.setuptools] packages: {sorted(missing)}"


def test_every_listed_package_exists() -> None:
    config = _setuptools_config()
    mapped = config["package-dir"]
    for package in config["packages"]:
        parts = package.split(".")
        for depth in range(len(parts), 0, -1):
            root = ".".join(parts[:depth])
            if root in mapped:
                folder = ROOT / mapped[root] / Path(*parts[depth:])
                break
        assert folder.is_dir(), f"{package} is listed but {folder} does not exist"
