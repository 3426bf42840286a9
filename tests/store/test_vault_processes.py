"""Real processes against one vault: a SIGKILL mid-ingest, two ingests at once, and a scan of
every file under the data dir for plaintext."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from p2p_local.api import Personalizer

PASS = "process test passphrase"


def write_jsonl(path: Path, n: int, prefix: str, *, bad_every: int = 0) -> int:
    """Write ``n`` lines (some bad when ``bad_every``); returns the number of good lines."""
    good = 0
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            if bad_every and i % bad_every == bad_every - 1:
                fh.write('{"text": "broken\n')
                continue
            fh.write(json.dumps({"text": f"{prefix} {i} " + "lorem ipsum " * 20, "kind": "text"}))
            fh.write("\n")
            good += 1
    return good


def ingest_cmd(path: Path, user: str) -> list[str]:
    return [sys.executable, "-m", "p2p_local.cli.main", "ingest", str(path), "--user", user]


def env() -> dict[str, str]:
    return {**os.environ, "P2P_LOCAL_PASSPHRASE": PASS}


INGEST_SMALL_BATCHES = (
    "import sys; from p2p_local.api import Personalizer; "
    "from p2p_local.store.ingest import IngestSettings; "
    "p = Personalizer(sys.argv[1], passphrase=sys.argv[2]); "
    "p.ingest_file(sys.argv[3], settings=IngestSettings(batch_size=500))"
)


def test_sigkill_mid_ingest_then_reingest_stores_exactly_the_good_lines(
    home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "big.jsonl"
    good = write_jsonl(path, 20_000, "crash", bad_every=997)
    p = Personalizer.create("alice", PASS)
    proc = subprocess.Popen(
        [sys.executable, "-c", INGEST_SMALL_BATCHES, "alice", PASS, str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while p.count() < 1000 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the ingest ended before it could be killed"
    at_kill = p.count()
    assert 0 < at_kill < good
    assert p.vault.verify().items == at_kill  # committed batches only, seal intact
    report = p.ingest_file(path)
    assert (report.added, report.duplicates) == (good - at_kill, at_kill)
    assert report.rejected == 20_000 - good
    assert p.count() == good
    assert p.vault.verify().items == good
    p.close()


def test_two_processes_ingesting_at_once_serialize(home: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    na = write_jsonl(a, 15_000, "first")
    nb = write_jsonl(b, 15_000, "second")
    Personalizer.create("bob", PASS).close()
    procs = [
        subprocess.Popen(
            ingest_cmd(f, "bob"),
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for f in (a, b)
    ]
    outs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
        assert "added 15000" in out
    with Personalizer("bob", passphrase=PASS) as p:
        assert p.count() == na + nb
        assert p.vault.verify().items == na + nb


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_no_plaintext_under_the_data_dir(home: Path, tmp_path: Path) -> None:
    canary = "CANARY-7f3a9c-PLAINTEXT"
    src = tmp_path / "canary.jsonl"
    with open(src, "w") as fh:
        for i in range(3000):
            fh.write(
                json.dumps(
                    {"text": f"note {i} {canary}", "label": canary, "meta": {"secret": canary}}
                )
                + "\n"
            )
    p = Personalizer.create("carol", PASS)
    assert p.ingest_file(src).added == 3000
    p.vault.put_blob("profile/summary", f"summary mentioning {canary}".encode())
    # While the vault is open: the WAL and shared-memory files exist and are scanned too.
    assert (p.path / "vault.db-wal").exists()
    names = {f.name for f in home.rglob("*") if f.is_file()}
    assert {"vault.db", "vault.db-wal", "vault.db-shm", "vault.key"} <= names
    needle = canary.encode()
    assert files_containing(home, needle) == []
    p.close()
    # Through the CLI in another process, then again with everything closed.
    subprocess.run(ingest_cmd(src, "carol"), env=env(), check=True, capture_output=True)
    assert files_containing(home, needle) == []
    # The scan does find plaintext where it exists: an explicit export outside the data dir.
    with Personalizer("carol", passphrase=PASS) as p2:
        out = p2.export_data(tmp_path / "export.jsonl")
    assert out.items == 3000 and files_containing(tmp_path, needle) != []
    assert files_containing(home, needle) == []
