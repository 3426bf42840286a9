"""Fixtures for the ``benchmarks/`` scripts' tests.

The scripts import each other as top-level modules (``from bench_paired import ...``), so the
``benchmarks/`` folder goes on ``sys.path``. ``cache``: an empty package cache
(``P2P_LOCAL_CACHE``) per test. ``write_run``: writes cached answers into it the way
``bench_quality.py`` leaves them and returns the matching results file's dict (the keys of
``EvalReport.to_dict`` the scripts read), each figure computed by ``p2p_local.eval.metrics``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

Row = tuple[str, str, str | None, str]  # query id, user id, prediction, gold
WriteRun = Callable[..., dict[str, Any]]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty package cache for one test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("P2P_LOCAL_CACHE", str(path))
    return path


@pytest.fixture
def write_run(cache: Path) -> WriteRun:
    """``write_run(methods, users, *, task, split, kind, held_out)``: each method's rows (any
    users) cached as ``<method>-fp-<method>.jsonl``; the figures cover ``users``' rows only."""
    from p2p_local.eval.metrics import score
    from p2p_local.eval.paired import MAIN_METRIC

    def write(methods: dict[str, list[Row]], users: list[str], *, task: str = "office",
              split: str = "random", kind: str = "generation",
              held_out: str = "test") -> dict[str, Any]:
        name = f"{task}-{split}" + ("-val" if held_out == "val" else "")
        folder = cache / "eval" / name / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        metric = MAIN_METRIC[kind][0]
        figures = {}
        for method, rows in methods.items():
            lines = [json.dumps({"query_id": q, "user_id": u, "prediction": p, "gold": g})
                     for q, u, p, g in rows]
            (folder / f"{method}-fp-{method}.jsonl").write_text("\n".join(lines) + "\n")
            kept = [r for r in rows if r[1] in users]
            scores = score(kind, [r[2] for r in kept], [r[3] for r in kept])
            figures[method] = {"n": len(kept), metric: scores.metrics[metric]}
        return {"task": task, "split": split, "kind": kind,
                "meta": {"user_ids": list(users), "settings": {"held_out": held_out}},
                "methods": {m: {"fingerprint": f"fp-{m}"} for m in methods},
                "results": figures}

    return write
