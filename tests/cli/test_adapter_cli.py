"""`p2p-local adapter build`, `export` and `adapter decrypt` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from p2p_local.cli.main import app
from typer.testing import CliRunner

PASS = "cli passphrase 1"
runner = CliRunner()


@pytest.fixture
def user(home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from p2p_local.api import Personalizer
    from p2p_local.store._crypto import KdfParams
    from p2p_local.store.records import HistoryItem

    monkeypatch.setenv("P2P_LOCAL_PASSPHRASE", PASS)
    with Personalizer.create("bob", PASS, kdf=KdfParams(memory_kib=64, iterations=1, lanes=1)) as p:
        p.add_items(
            [
                HistoryItem(text="I review sci-fi novels; Dune is my favourite.", kind="text"),
                HistoryItem(text="Short stories beat long series for me.", kind="text"),
            ]
        )
    return "bob"


def test_build_without_hypernetwork_says_so(
    user: str, tmp_path: Path, no_hypernet_registry: Path
) -> None:
    for args in (
        ["adapter", "build", "--user", user],
        ["export", "--user", user, "--format", "gguf", "--out", str(tmp_path / "x")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 6, result.output
        assert "no trained hypernetwork is installed" in result.output
        assert "--checkpoint" in result.output
    assert not (tmp_path / "x").exists()


def test_unknown_format_refused(user: str, tmp_path: Path) -> None:
    args = ["export", "--user", user, "--format", "onnx", "--out", str(tmp_path / "x")]
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "peft, gguf" in result.output


@pytest.mark.real_model
def test_build_export_decrypt(user: str, tmp_path: Path, random_hypernet_dir: Path) -> None:
    ck = ["--checkpoint", str(random_hypernet_dir)]
    result = runner.invoke(app, ["adapter", "build", "--user", user, *ck])
    assert result.exit_code == 0, result.output
    assert "built the per-user adapter" in result.output and "generation" in result.output
    result = runner.invoke(app, ["adapter", "build", "--user", user, "--json", *ck])
    info = json.loads(result.stdout)
    assert info["cached"] is True and info["modules"] == ["q_proj", "v_proj"]
    assert info["layers"] == 30 and info["rank"] == 8

    sealed = tmp_path / "bob.peft.p2pseal"
    result = runner.invoke(
        app, ["export", "--user", user, "--format", "peft", "--out", str(sealed), *ck]
    )
    assert result.exit_code == 0, result.output
    assert "encrypted" in result.output and sealed.read_bytes().startswith(b"P2PSEAL")
    result = runner.invoke(app, ["adapter", "decrypt", str(sealed), "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "d" / "adapter_config.json").read_text())["r"] == 8

    plain = tmp_path / "bob.gguf"
    result = runner.invoke(
        app, ["export", "--user", user, "--format", "gguf", "--out", str(plain), "--plaintext", *ck]
    )
    assert result.exit_code == 0, result.output
    assert "PLAINTEXT" in result.output and plain.read_bytes().startswith(b"GGUF")

    result = runner.invoke(
        app,
        [
            "adapter",
            "build",
            "--user",
            user,
            "--per-query",
            "a novel for a train ride",
            "--json",
            *ck,
        ],
    )
    info = json.loads(result.stdout)
    assert info["kind"] == "per-query" and info["cached"] is False
