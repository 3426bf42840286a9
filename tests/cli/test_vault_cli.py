"""The vault commands through the real typer app: init, ingest, history, export-data, passwd,
forget, users, and their error exits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from p2p_local.cli.main import app
from typer.testing import CliRunner

PASS = "cli test passphrase"
SAMPLE = Path(__file__).resolve().parents[2] / "p2p_local" / "data" / "sample_history.jsonl"
RECOVERY = re.compile(r"\b([A-Z2-7]{4}(?:-[A-Z2-7]{4}){7})\b")


@pytest.fixture
def cli(home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("P2P_LOCAL_PASSPHRASE", PASS)
    runner = CliRunner()

    def run(*args: str, code: int = 0, **env: str):
        result = runner.invoke(app, list(args), env=env or None)
        assert result.exit_code == code, (result.exit_code, result.output, result.exception)
        assert "Traceback" not in result.output
        return result

    return run


def init(cli, user: str = "default") -> str:
    out = cli("init", "--user", user).stdout
    match = RECOVERY.search(out)
    assert match, out
    return match.group(1)


def test_init_ingest_sample_and_count(cli) -> None:
    code = init(cli, "maya")
    assert cli("users").stdout.split() == ["maya"]
    out = cli("ingest", str(SAMPLE), "--user", "maya").stdout
    assert "added 40, duplicates 0, rejected 0" in out
    assert cli("history", "count", "--user", "maya").stdout == "40\n"
    again = cli("ingest", str(SAMPLE), "--user", "maya").stdout
    assert "added 0, duplicates 40, rejected 0" in again
    assert cli("history", "count", "--user", "maya").stdout == "40\n"
    # The recovery code opens the vault too (and is shown only by init).
    assert code not in cli("history", "list", "--user", "maya").stdout


def test_init_twice_and_missing_vault_are_one_line_errors(cli) -> None:
    init(cli)
    err = cli("init", code=3).stderr
    assert "already exists" in err and len(err.strip().splitlines()) == 1
    err = cli("history", "count", "--user", "nobody", code=3).stderr
    assert "p2p-local init --user nobody" in err


def test_wrong_passphrase_exits_3_with_one_line(cli) -> None:
    init(cli)
    res = cli("history", "count", code=3, P2P_LOCAL_PASSPHRASE="not the passphrase")
    assert "wrong passphrase" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_passphrase_file_option(cli, tmp_path: Path) -> None:
    pf = tmp_path / "pass.txt"
    pf.write_text(PASS + "\nignored second line\n")
    init(cli)
    assert (
        cli("history", "count", "--passphrase-file", str(pf), P2P_LOCAL_PASSPHRASE="").stdout
        == "0\n"
    )


def test_bad_lines_are_listed_and_exit_nonzero(cli, tmp_path: Path) -> None:
    init(cli)
    f = tmp_path / "h.jsonl"
    f.write_bytes(b'{"text": "ok 1"}\n{oops\n{"text": "ok 2"}\n\xff\n')
    res = cli("ingest", str(f), code=2)
    assert "added 2, duplicates 0, rejected 2" in res.stdout
    assert f"{f}:2: invalid JSON" in res.stderr and f"{f}:4: invalid UTF-8" in res.stderr
    assert cli("history", "count").stdout == "2\n"
    data = json.loads(cli("ingest", str(f), "--json", code=2).stdout)
    assert (data["added"], data["duplicates"], data["rejected"]) == (0, 2, 2)
    assert [e["line"] for e in data["errors"]] == [2, 4]


def test_strict_is_all_or_nothing(cli, tmp_path: Path) -> None:
    init(cli)
    f = tmp_path / "h.jsonl"
    f.write_text('{"text": "ok"}\n{"text": NaN}\n')
    res = cli("ingest", str(f), "--strict", code=2)
    assert "nothing was stored" in res.stderr
    assert cli("history", "count").stdout == "0\n"


def test_ingest_help_says_what_strict_does_with_several_user_ids(cli) -> None:
    text = " ".join(cli("ingest", "--help").stdout.split())
    assert "validates the whole file before anything is stored" in text
    assert "spanning several user_ids is stored vault by vault" in text


def test_history_list_show_search(cli) -> None:
    init(cli)
    cli("ingest", str(SAMPLE))
    listed = cli("history", "list", "--limit", "3").stdout.splitlines()
    assert len(listed) == 3 and "rye loaf" in listed[0]
    items = json.loads(cli("history", "list", "--json", "--offset", "2", "--limit", "2").stdout)
    assert [i["row"] for i in items] == [2, 3]
    shown = json.loads(cli("history", "show", items[0]["id"], "--json").stdout)
    assert shown["item"]["input"].startswith("A friend asks")
    text = cli("history", "show", items[0]["id"][:6]).stdout
    assert "output: Feed it" in text
    found = json.loads(cli("history", "search", "Biscuit DOG", "--json").stdout)
    assert found and all("biscuit" in f["item"]["text"].lower() for f in found)
    assert cli("history", "search", "no-such-word-anywhere").stdout == ""
    cli("history", "show", "zz", code=2)


def test_history_count_and_stats(cli) -> None:
    init(cli)
    cli("ingest", str(SAMPLE))
    assert json.loads(cli("history", "count", "--json").stdout) == {"count": 40}
    stats = json.loads(cli("history", "stats", "--json").stdout)
    assert stats["items"] == 40 and sum(stats["kinds"].values()) == 40
    assert set(stats["kinds"]) == {"text", "pair", "rating", "tag"}
    assert sum(stats["sources"].values()) == 40 and stats["disk_bytes"] > 0
    lines = cli("history", "stats").stdout.splitlines()
    assert lines[0].split() == ["items:", "40"]
    assert lines[1].startswith("kinds:") and "pair" in lines[1]
    assert lines[-1].startswith("disk:") and "B" in lines[-1]


def test_export_data_is_plaintext_private_and_reingestable(cli, tmp_path: Path) -> None:
    init(cli)
    cli("ingest", str(SAMPLE))
    out = tmp_path / "mine.jsonl"
    res = cli("export-data", "--out", str(out))
    assert "wrote 40 items" in res.stdout and "NOT encrypted" in res.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    assert len(out.read_text().splitlines()) == 40
    cli("export-data", "--out", str(out), code=2)  # exists
    cli("export-data", "--out", str(out), "--force")
    init(cli, "copy")
    assert "added 40" in cli("ingest", str(out), "--user", "copy").stdout
    assert "added 0, duplicates 40" in cli("ingest", str(out)).stdout


def test_export_data_into_a_folder_that_cannot_exist_is_a_one_line_error(
    cli, tmp_path: Path
) -> None:
    init(cli)
    cli("ingest", str(SAMPLE))
    work = tmp_path / "out"
    work.mkdir()
    blocker = work / "not-a-folder"
    blocker.write_text("")
    err = cli("export-data", "--out", str(blocker / "x.jsonl"), code=2).stderr
    assert "does not exist" in err and "not writable" in err
    assert len(err.strip().splitlines()) == 1
    err = cli("export-data", "--out", str(work), "--force", code=2).stderr
    assert "is a folder" in err
    assert [p.name for p in work.iterdir()] == ["not-a-folder"]  # no temp file left behind


def test_passwd_and_recovery(cli, tmp_path: Path) -> None:
    code = init(cli)
    cli("passwd", P2P_LOCAL_NEW_PASSPHRASE="second passphrase")
    cli("history", "count", code=3)
    assert cli("history", "count", P2P_LOCAL_PASSPHRASE="second passphrase").stdout == "0\n"
    res = cli(
        "passwd",
        "--recovery",
        "--new-recovery-code",
        P2P_LOCAL_RECOVERY_CODE=code,
        P2P_LOCAL_NEW_PASSPHRASE="third passphrase",
    )
    new_code = RECOVERY.search(res.stdout).group(1)
    assert new_code != code
    cli(
        "passwd",
        "--recovery",
        code=3,
        P2P_LOCAL_RECOVERY_CODE=code,
        P2P_LOCAL_NEW_PASSPHRASE="fourth passphrase",
    )
    assert cli("history", "count", P2P_LOCAL_PASSPHRASE="third passphrase").stdout == "0\n"
    cli("passwd", code=2, P2P_LOCAL_PASSPHRASE="third passphrase", P2P_LOCAL_NEW_PASSPHRASE="short")


def test_forget_needs_yes_and_destroys_everything(cli, home: Path) -> None:
    init(cli, "gone")
    cli("ingest", str(SAMPLE), "--user", "gone")
    cli("forget", "--user", "gone", code=2)
    assert cli("users").stdout == "gone\n"
    cli("forget", "--user", "gone", "--yes")
    assert cli("users").stdout == ""
    assert not (home / "users" / "gone").exists()
    cli("history", "count", "--user", "gone", code=3)
    cli("forget", "--user", "gone", "--yes", code=2)


def test_lamp_file_with_user_ids_makes_one_vault_per_user(cli, tmp_path: Path) -> None:
    init(cli, "lamp")
    f = tmp_path / "questions.json"
    f.write_text(
        json.dumps(
            [
                {
                    "id": "1",
                    "user_id": "310",
                    "input": "?",
                    "profile": [{"text": "a", "score": "4"}],
                },
                {
                    "id": "2",
                    "user_id": "u/7",
                    "input": "?",
                    "profile": [{"text": "b"}, {"text": "c"}],
                },
                {
                    "id": "3",
                    "user_id": "310",
                    "input": "?",
                    "profile": [{"text": "d", "score": "1"}],
                },
            ]
        )
    )
    data = json.loads(cli("ingest", str(f), "--user", "lamp", "--json").stdout)
    assert data["format"] == "lamp" and data["added"] == 4
    names = sorted(data["created"])
    assert names[0] == "lamp.310" and names[1].startswith("lamp.u_7-")
    assert cli("users").stdout.split() == ["lamp", *names]
    assert cli("history", "count", "--user", "lamp.310").stdout == "2\n"
    assert cli("history", "count", "--user", names[1]).stdout == "2\n"


def test_keychain_request_without_a_keychain_falls_back_to_the_passphrase(cli) -> None:
    import keyring

    if "fail" not in type(keyring.get_keyring()).__module__:
        pytest.skip("a keyring backend is available here")
    res = cli("init", "--keychain")
    assert "no OS keychain" in res.stderr and "passphrase only" in res.stderr
    assert RECOVERY.search(res.stdout)
    assert cli("history", "count").stdout == "0\n"


def test_vault_commands_do_not_import_heavy_libraries(home: Path) -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from p2p_local.cli.main import app; "
        "r = CliRunner(); r.invoke(app, ['init']); r.invoke(app, ['history', 'count']); "
        "r.invoke(app, ['users']); "
        "heavy = [m for m in ('torch', 'transformers', 'llama_cpp') if m in sys.modules]; "
        "print(heavy)"
    )
    env = {**os.environ, "P2P_LOCAL_PASSPHRASE": PASS}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_large_files_get_a_progress_bar_on_a_terminal(cli, monkeypatch, tmp_path: Path) -> None:
    import io

    import p2p_local.cli.vault as vault_cli
    from rich.console import Console

    init(cli)
    f = tmp_path / "h.jsonl"
    f.write_text("".join(json.dumps({"text": f"line {i}"}) + "\n" for i in range(12_000)))
    screen = io.StringIO()
    monkeypatch.setattr(vault_cli, "err_console", Console(file=screen, force_terminal=True))
    monkeypatch.setattr(vault_cli, "PROGRESS_MIN_BYTES", 1024)
    assert "added 12000" in cli("ingest", str(f)).stdout
    assert "━" in screen.getvalue()  # the bar was drawn
