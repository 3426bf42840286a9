"""`p2p-local chat` through the CLI, on the real default model (llama.cpp)."""

from __future__ import annotations

from pathlib import Path

import pytest
from p2p_local.cli.main import app
from typer.testing import CliRunner

pytestmark = pytest.mark.real_model

PASS = "chat passphrase 1"
runner = CliRunner()
QUESTION = "Name the capital city of France."


@pytest.fixture
def vault_user(home: Path, monkeypatch: pytest.MonkeyPatch, base_gguf: Path) -> str:
    from p2p_local.api import Personalizer
    from p2p_local.store._crypto import KdfParams

    monkeypatch.setenv("P2P_LOCAL_PASSPHRASE", PASS)
    Personalizer.create("ann", PASS, kdf=KdfParams(memory_kib=64, iterations=1, lanes=1)).close()
    return "ann"


def _count(user: str) -> int:
    from p2p_local.api import Personalizer

    with Personalizer(user, passphrase=PASS) as p:
        return p.count()


def test_once_without_a_vault_answers_with_the_base_model(home: Path, base_gguf: Path) -> None:
    result = runner.invoke(app, ["chat", "--once", QUESTION, "--temperature", "0",
                                 "--max-tokens", "24"])
    assert result.exit_code == 0, result.output
    assert "Paris" in result.output


def test_repl_streams_resets_and_exits(home: Path, base_gguf: Path) -> None:
    script = f"{QUESTION}\n/reset\n/adapter on\n/bogus\n{QUESTION}\n/exit\nnever sent\n"
    result = runner.invoke(app, ["chat", "--no-adapter", "-t", "0", "--max-tokens", "16"],
                           input=script)
    assert result.exit_code == 0, result.output
    assert result.output.count("Paris") == 2
    assert "new conversation" in result.output
    assert "only the base model" in result.output  # /adapter on without a vault
    assert "commands:" in result.output  # /bogus shows the help


def test_remember_stores_only_the_users_turns(vault_user: str) -> None:
    result = runner.invoke(app, ["chat", "--user", vault_user, "--once", QUESTION, "-t", "0",
                                 "--max-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert _count(vault_user) == 0  # nothing stored by default
    result = runner.invoke(app, ["chat", "--user", vault_user, "--remember", "-t", "0",
                                 "--max-tokens", "8"], input="I grow tomatoes.\nHi again.\n")
    assert result.exit_code == 0, result.output
    from p2p_local.api import Personalizer

    with Personalizer(vault_user, passphrase=PASS) as p:
        texts = sorted(s.item.text for s in p.iter_history())
        kinds = {s.item.kind for s in p.iter_history()}
    assert texts == ["Hi again.", "I grow tomatoes."] and kinds == {"chat"}


def test_bad_options_fail_cleanly(home: Path) -> None:
    result = runner.invoke(app, ["chat", "--backend", "vllm", "--once", "hi"])
    assert result.exit_code == 2 and "--backend must be one of" in result.output
    result = runner.invoke(app, ["chat", "--once", "hi", "--max-tokens", "0", "--no-adapter"])
    assert result.exit_code == 2 and "max_tokens" in result.output
    result = runner.invoke(app, ["chat", "--once", "hi", "--repeat-penalty", "3", "--no-adapter"])
    assert result.exit_code == 2 and "--repeat-penalty" in result.output
    result = runner.invoke(app, ["chat", "--remember", "--once", "hi"])
    assert result.exit_code == 3 and "no vault" in result.output


def test_chat_uses_the_users_adapter_and_adapter_off_is_the_base_model(vault_user: str) -> None:
    from p2p_local.adapter import USER_ADAPTER_BLOB
    from p2p_local.api import Personalizer
    from p2p_local.store.records import HistoryItem

    with Personalizer(vault_user, passphrase=PASS) as p:
        p.add_items([HistoryItem(text=f"Rated a film {s} of 5.", kind="rating", score=float(s))
                     for s in (5, 4, 5, 3, 5)])
        assert p.vault.get_blob(USER_ADAPTER_BLOB) is None
    opts = ["-t", "0", "--max-tokens", "12"]
    base = runner.invoke(app, ["chat", "--user", vault_user, "--no-adapter", "--once", QUESTION,
                               *opts])
    assert base.exit_code == 0, base.output
    script = f"{QUESTION}\n/adapter off\n{QUESTION}\n/adapter on\n{QUESTION}\n/exit\n"
    result = runner.invoke(app, ["chat", "--user", vault_user, *opts], input=script)
    assert result.exit_code == 0, result.output
    assert "adapter off; new conversation" in result.output
    assert "adapter on; new conversation" in result.output
    replies = [line for line in result.output.splitlines()
               if line.strip() and "new conversation" not in line]
    assert len(replies) == 3, result.output
    assert replies[1] == base.output.strip()  # adapter off: exactly the base model
    assert replies[0] == replies[2]  # adapter on again: the same reply as at the start
    with Personalizer(vault_user, passphrase=PASS) as p:  # the default chat built her adapter
        assert p.vault.get_blob(USER_ADAPTER_BLOB) is not None
