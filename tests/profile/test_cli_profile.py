"""`p2p-local profile show / refresh` through the real CLI app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from p2p_local.cli.main import app
from typer.testing import CliRunner

from p2p_local.api import Personalizer
from p2p_local.store.records import HistoryItem

DATA = Path(__file__).parent / "data"
PASSPHRASE = "heron in the pond at dusk"


def _items(name: str) -> list[HistoryItem]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [HistoryItem.from_dict(json.loads(line)) for line in lines if line.strip()]


@pytest.fixture
def runner(home: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("P2P_LOCAL_PASSPHRASE", PASSPHRASE)
    return CliRunner()


@pytest.mark.real_model
def test_show_json_contract_and_refresh(runner: CliRunner, base_gguf, embedding_dir) -> None:
    with Personalizer.create("carol", PASSPHRASE) as p:
        p.add_items(_items("notes.jsonl")[:5])
    result = runner.invoke(
        app, ["profile", "show", "--user", "carol", "--query", "writing group feedback", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data["summary"], str) and data["summary"]
    assert data["statistics"] is None  # plain notes: no ratings, no labels
    assert [set(r) >= {"id", "text", "score"} for r in data["retrieved"]] == [True, True]
    assert data["retrieved"][0]["text"].startswith("I keep rewriting the opening line")
    assert data["retrieved"][0]["score"] > data["retrieved"][1]["score"]
    assert len(data["retrieved"][0]["id"]) == 12
    assert data["embedding_dim"] == 384
    assert data["embedding_model"].startswith("all-minilm-l6-v2@")

    refreshed = runner.invoke(app, ["profile", "refresh", "--user", "carol", "--json"])
    assert refreshed.exit_code == 0, refreshed.output
    info = json.loads(refreshed.stdout)
    assert info["summary"] and info["items_used"] == 5
    assert info["model"].startswith("smollm2-135m-instruct-q4_1@")

    shown = runner.invoke(app, ["profile", "show", "--user", "carol"])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("## User Profile: ")
    assert info["summary"][:40] in " ".join(shown.stdout.split())  # the refreshed one, cached
    assert "384 dims" in shown.stdout



@pytest.mark.real_model
def test_show_task_reaches_the_json(runner: CliRunner, base_gguf, embedding_dir) -> None:
    task = "Predict the star rating the user gives a product."
    with Personalizer.create("erin", PASSPHRASE) as p:
        p.add_items(_items("notes.jsonl")[:3])
    result = runner.invoke(app, ["profile", "show", "--user", "erin", "--task", task, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["task"] == task
    assert f"Task: {task}" in data["text"]  # the embedding instruction names it
    assert data["summary"] and data["embedding_dim"] == 384
    with Personalizer("erin", passphrase=PASSPHRASE) as p:  # the summary is cached per task
        assert p.profiler().cached(task=task) is not None
        assert p.profiler().cached() is None

def test_empty_history_is_a_clear_error(runner: CliRunner) -> None:
    Personalizer.create("dave", PASSPHRASE).close()
    result = runner.invoke(app, ["profile", "show", "--user", "dave", "--json"])
    assert result.exit_code == 5
    assert "ingest first: p2p-local ingest FILE" in result.output
    result = runner.invoke(app, ["profile", "refresh", "--user", "dave"])
    assert result.exit_code == 5


def test_unknown_user_is_a_clear_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["profile", "show", "--user", "nobody"])
    assert result.exit_code == 3
    assert "p2p-local init --user nobody" in result.output
