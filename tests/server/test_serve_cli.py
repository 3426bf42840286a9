"""``p2p-local serve``: start-up checks (before any model loads), the token, and the real
command in a subprocess answering on 127.0.0.1."""

from __future__ import annotations

import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from p2p_local.cli.main import app
from typer.testing import CliRunner

from p2p_local.errors import ConfigError
from p2p_local.server import TOKEN_ENV, ServerSettings, is_loopback, server_token

PASSPHRASE = "serve cli passphrase"
runner = CliRunner()


def make_user(name: str) -> None:
    from p2p_local.api import Personalizer

    Personalizer.create(name, PASSPHRASE).close()


def passfile(tmp_path: Path, text: str = PASSPHRASE) -> Path:
    path = tmp_path / "pass.txt"
    path.write_text(text + "\n")
    return path


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts_accepted(host: str) -> None:
    assert is_loopback(host)
    assert ServerSettings(host=host).host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.com", "10.0.0.1"])
def test_other_hosts_need_allow_remote(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ConfigError, match="--allow-remote"):
        ServerSettings(host=host)
    assert ServerSettings(host=host, allow_remote=True).allow_remote


@pytest.mark.parametrize("field, value", [("port", 70000), ("max_body_bytes", 10),
                                          ("max_tokens_limit", 0), ("default_max_tokens", 0)])
def test_settings_are_checked(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=field):
        ServerSettings(**{field: value})


def test_serve_refuses_a_public_address(home: Path) -> None:
    res = runner.invoke(app, ["serve", "--host", "0.0.0.0"])
    assert res.exit_code == 2 and "--allow-remote" in res.output


@pytest.mark.parametrize("args, code, message", [
    (["--unlock", "alice"], 2, "USER=PASSPHRASE_FILE"),
    (["--unlock", "=f"], 2, "USER=PASSPHRASE_FILE"),
    (["--unlock", "a b=f"], 2, "invalid user name"),
    (["--unlock-keychain", "base"], 2, "clashes"),
    (["--unlock", "nobody=f"], 3, "no vault for user 'nobody'"),
])
def test_serve_checks_the_users_first(home: Path, args: list[str], code: int,
                                      message: str) -> None:
    res = runner.invoke(app, ["serve", *args])
    assert res.exit_code == code, res.output
    assert message in res.output


def test_serve_refuses_a_wrong_passphrase(home: Path, tmp_path: Path) -> None:
    make_user("alice")
    wrong = passfile(tmp_path, "not the passphrase")
    res = runner.invoke(app, ["serve", "--unlock", f"alice={wrong}",
                              "--unlock", f"alice={wrong}"])
    assert res.exit_code == 2 and "named twice" in res.output
    res = runner.invoke(app, ["serve", "--unlock", f"alice={wrong}"])
    assert res.exit_code == 3, res.output
    assert not (home / "server.token").exists()  # no token made for a server that never ran


def test_token_generated_once_and_kept_private(home: Path, monkeypatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    first = server_token()
    assert first.source == "generated" and len(first.value) >= 32
    assert first.path == home / "server.token"
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert first.value not in repr(first)
    again = server_token()
    assert (again.source, again.value) == ("file", first.value)
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment-123")
    assert server_token().value == "from-the-environment-123"
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(ConfigError, match="at least 16"):
        server_token()
    monkeypatch.delenv(TOKEN_ENV)
    first.path.chmod(0o644)
    with pytest.raises(ConfigError, match="other users"):
        server_token()


def test_stop_scanner_holds_back_partial_matches() -> None:
    from p2p_local.server import _StopScanner

    scan = _StopScanner(["END", "\n\n"])
    out = [scan.feed(p) for p in ["Hello E", "N", "ding. E", "NDx"]]
    assert "".join(out) == "Hello ENding. " and scan.hit
    scan = _StopScanner(["END"])
    assert scan.feed("abc E") == "abc " and scan.flush() == "E" and not scan.hit


class _Body:
    """What the request reader uses of a Starlette request: the body, streamed."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def stream(self):
        yield self.data


def _read(data: bytes):
    import asyncio

    from p2p_local.server import _read_request

    return asyncio.run(_read_request(_Body(data), 1_000_000))  # type: ignore[arg-type]


def test_request_reader_answers_bad_bodies_with_4xx() -> None:
    import json

    from p2p_local.server import APIError

    with pytest.raises(APIError, match="nested too deeply") as deep:
        _read(b"[" * 50_000)
    assert deep.value.status == 400 and deep.value.code == "invalid_json"
    ok = {"model": "p2p-local:base", "messages": [{"role": "user", "content": "Hi"}]}
    assert _read(json.dumps({**ok, "max_tokens": 5}).encode()).max_tokens == 5
    for field in ("max_tokens", "max_completion_tokens"):
        for value in (True, False, "5", 5.0):
            with pytest.raises(APIError) as bad:
                _read(json.dumps({**ok, field: value}).encode())
            assert bad.value.status == 422 and bad.value.param == field, (field, value)


@pytest.mark.real_model
def test_serve_command_answers_on_loopback(home: Path, tmp_path: Path, base_gguf) -> None:
    make_user("alice")
    make_user("carol")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop(TOKEN_ENV, None)
    cmd = [sys.executable, "-m", "p2p_local.cli.main", "serve", "--port", "0",
           "--unlock", f"alice={passfile(tmp_path)}", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while not (seen and seen[-1].startswith("serving ")):
            assert proc.poll() is None, "".join(seen)
            try:
                seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail("no 'serving' line in time:\n" + "".join(seen))
        url = seen[-1].split()[1]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        shown = next(i for i, x in enumerate(seen) if x.startswith("API token (shown once"))
        token = seen[shown + 1].strip()
        assert (home / "server.token").read_text().strip() == token
        # alice's vault is empty, so the base model answers for her (said at start-up)
        assert "alice: empty history" in "".join(seen)

        assert httpx.get(url + "/models", timeout=30).status_code == 401
        resp = httpx.get(url + "/models", headers={"Authorization": f"Bearer {token}"},
                         timeout=30)
        assert resp.status_code == 200
        cards = {m["id"]: m["p2p_local"] for m in resp.json()["data"]}
        assert cards["p2p-local:alice"]["unlocked"] and not cards["p2p-local:carol"]["unlocked"]
        assert not cards["p2p-local:alice"]["personalized"]  # empty history: the base model
        reply = httpx.post(url + "/chat/completions", timeout=120,
                           headers={"Authorization": f"Bearer {token}"},
                           json={"model": "p2p-local:alice", "max_tokens": 4,
                                 "messages": [{"role": "user", "content": "Hi"}]})
        assert reply.status_code == 200, reply.text
        assert reply.json()["system_fingerprint"] == "p2p-local-base"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(seen)
