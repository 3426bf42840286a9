"""``p2p-local train`` end to end on the tiny model, through typer's CliRunner."""

from __future__ import annotations

import json

from conftest import tiny_config
from p2p_local.cli.main import app
from typer.testing import CliRunner


def _code(result) -> int:
    """The exit code the error mapping chose (carried by its Exit exception, or the status)."""
    return getattr(result.exception, "exit_code", None) or result.exit_code


def test_train_command_runs_stops_and_resumes(tmp_path, tiny_data_dir, tiny_base_dir) -> None:
    cfg = tiny_config(tmp_path / "unused", tiny_data_dir, tiny_base_dir, max_steps=50,
                      checkpoint_every=2)
    config_file = tmp_path / "train.toml"
    config_file.write_text(cfg.to_toml())
    out = tmp_path / "run"
    runner = CliRunner()
    args = ["train", "--config", str(config_file), "--out", str(out), "--max-steps", "4"]
    first = runner.invoke(app, [*args, "--stop-after", "3"])
    assert first.exit_code == 0, first.output
    assert "stopped early" in first.output and "step 3" in first.output

    again = runner.invoke(app, args)  # without --resume the earlier run is protected
    assert _code(again) == 8, (again.output, repr(again.exception))

    done = runner.invoke(app, [*args, "--resume", "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["steps"] == 4 and result["completed"] is True
    assert result["result_path"] == str(out / "hypernet")
    assert json.loads((out / "training.json").read_text())["max_steps"] == 4


def test_train_command_reports_config_errors(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[run]\nmode = "nope"\n')
    result = CliRunner().invoke(app, ["train", "--config", str(bad)])
    assert _code(result) == 2, (result.output, repr(result.exception))
