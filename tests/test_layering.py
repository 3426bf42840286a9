"""The data path runs one way: each stage imports only the stages before it.

Order (README, "Architecture"): store -> registry -> runtime -> embedding -> profile ->
hypernet -> adapter -> export -> engine -> api -> server. The side branches (datasets, train,
eval, baselines) read the stages; nothing in the path imports them. ``errors``, ``paths``
and ``progress`` are the foundation everyone may use.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "p2p_local"
FOUNDATION = {"errors", "paths", "progress"}
PATH_ORDER = [
    "store",
    "registry",
    "runtime",
    "embedding",
    "profile",
    "hypernet",
    "adapter",
    "export",
    "engine",
    "api",
    "server",
]
SIDE_BRANCHES = {"datasets", "train", "eval", "baselines"}


def _stage_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imported_stages(path: Path) -> set[str]:
    """Every p2p_local stage a module imports, at top level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    stages: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "p2p_local" and len(parts) > 1:
                stages.add(parts[1])
    return stages


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if _stage_of(p) in PATH_ORDER)


@pytest.mark.parametrize("module", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_path_stage_imports_only_earlier_stages(module: Path) -> None:
    stage = _stage_of(module)
    allowed = FOUNDATION | set(PATH_ORDER[: PATH_ORDER.index(stage) + 1])
    bad = _imported_stages(module) - allowed
    assert not bad, f"{module.relative_to(PACKAGE)} ({stage}) must not import {sorted(bad)}"


def test_every_module_belongs_to_a_known_stage() -> None:
    known = FOUNDATION | set(PATH_ORDER) | SIDE_BRANCHES | {"__init__", "data", "models"}
    stages = {_stage_of(p) for p in PACKAGE.rglob("*.py")}
    assert stages <= known, f"place these in the layering: {sorted(stages - known)}"
