"""``p2p-local eval``: the --json shape, the table, resuming, and errors (real base model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from p2p_local.cli.main import app
from typer.testing import CliRunner

runner = CliRunner()


@pytest.mark.real_model
def test_eval_json_shape_and_resume(home: Path, tmp_path: Path,
                                    lamp_generation_files: Path) -> None:
    out = tmp_path / "out"
    args = ["eval", "--data", str(lamp_generation_files), "--methods", "base,rag",
            "--max-tokens", "8", "--out", str(out), "--no-progress", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert set(data) == {"task", "split", "n_users", "n_queries", "results"}
    assert (data["task"], data["split"], data["n_users"], data["n_queries"]) == (
        "LaMP_5", "all", 2, 2)
    assert list(data["results"]) == ["base", "rag"]
    for r in data["results"].values():
        assert 0.0 <= r["rouge1"] <= 1.0 and 0.0 <= r["rougeL"] <= 1.0
        assert r["n"] == 2 and r["seconds_per_query"] > 0
    files = sorted((out / "predictions").iterdir())
    sizes = [p.stat().st_size for p in files]
    assert len(files) == 2 and all(len(p.read_text().splitlines()) == 2 for p in files)

    # the same command again answers from the cache: same numbers, nothing appended
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["results"] == data["results"]
    assert [p.stat().st_size for p in sorted((out / "predictions").iterdir())] == sizes

    table = runner.invoke(app, args[:-1])  # without --json: the Markdown table
    assert table.exit_code == 0, table.output
    assert "| base |" in table.stdout and "ROUGE-1 ↑" in table.stdout
    assert (out / "results.md").is_file() and (out / "results.json").is_file()


def test_eval_rejects_unknown_methods_and_missing_data(home: Path, tmp_path: Path) -> None:
    bad = runner.invoke(app, ["eval", "--data", "movielens", "--methods", "base,gpt"])
    assert bad.exit_code == 2 and "unknown method" in bad.output
    missing = runner.invoke(app, ["eval", "--data", str(tmp_path / "nope.json"),
                                  "--out", str(tmp_path / "o")])
    assert missing.exit_code == 7 and "neither a built-in task" in missing.output
    no_gold = tmp_path / "q.json"
    no_gold.write_text("[]")
    result = runner.invoke(app, ["eval", "--data", str(no_gold), "--out", str(tmp_path / "o")])
    assert result.exit_code == 7 and "--outputs" in result.output


@pytest.mark.real_model
def test_eval_p2p_without_a_checkpoint_fails_before_answering(
        home: Path, tmp_path: Path, lamp_rating_files: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", "--data", str(lamp_rating_files), "--methods",
                                 "base,p2p", "--checkpoint", str(tmp_path / "missing"),
                                 "--out", str(out), "--no-progress"])
    assert result.exit_code == 6 and "no hypernetwork checkpoint" in result.output
    assert not (out / "predictions").exists()  # nothing was answered


def test_default_queries_match_the_shipped_recipes() -> None:
    """Evaluation holds out as many queries per user as training did, so the profiles come
    from the same history and a recomputed OOD split is training's."""
    import inspect

    from p2p_local.cli.eval import evaluate

    from p2p_local.eval.harness import EvalSettings
    from p2p_local.train.config import TrainConfig

    configs = Path(__file__).resolve().parents[2] / "models" / "hypernets" / "configs"
    shipped = {TrainConfig.load(configs / name).data.max_queries
               for name in ("cpu_default.toml", "cpu_ood.toml")}
    cli_default = inspect.signature(evaluate).parameters["queries"].default
    assert shipped == {EvalSettings(data="movielens").queries} == {cli_default}
