"""The frozen v1 vault (tests/fixtures/vault_v1, made once by make_fixture.py) stays readable."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from p2p_local.store.records import HistoryItem
from p2p_local.store.vault import Vault

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "vault_v1"
EXPECTED = [
    HistoryItem.from_dict(json.loads(line))
    for line in (FIXTURE / "items.jsonl").read_text(encoding="utf-8").splitlines()
    if line.strip()
]
FIXTURES = {"current": FIXTURE, "early_build": FIXTURE / "early_build"}


def facts(where: Path) -> dict:
    return json.loads((where / "fixture.json").read_text(encoding="utf-8"))


@pytest.fixture(params=sorted(FIXTURES))
def v1(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, dict]:
    src = FIXTURES[request.param]
    dst = tmp_path / "vault"
    shutil.copytree(src / "vault", dst)  # opening writes (WAL files), so use a copy
    return dst, facts(src)


def test_frozen_v1_vault_reads_back_exactly(v1: tuple[Path, dict]) -> None:
    path, fx = v1
    with Vault.open(path, passphrase=fx["passphrase"]) as v:
        assert [s.item for s in v.iter_items()] == EXPECTED
        assert [s.digest for s in v.iter_items()] == [i.content_hash() for i in EXPECTED]
        assert v.count() == fx["items"] == len(EXPECTED)
        assert v.history_digest() == fx["history_digest"]
        assert v.get_blob(fx["blob_name"]) == fx["blob_value_utf8"].encode()
        assert v.verify().items == len(EXPECTED)
    with Vault.open(path, recovery_code=fx["recovery_code"]) as v:
        assert v.count() == len(EXPECTED)


def test_frozen_v1_vault_accepts_new_items_and_still_dedupes(v1: tuple[Path, dict]) -> None:
    path, fx = v1
    with Vault.open(path, passphrase=fx["passphrase"]) as v:
        assert v.add(EXPECTED + [HistoryItem(text="added by a later version")]).added == 1
        assert v.verify().items == len(EXPECTED) + 1


def test_the_fixture_script_still_builds_an_equivalent_vault(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_fixture", FIXTURE / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build(tmp_path)
    with Vault.open(tmp_path / "vault", passphrase=built["passphrase"]) as v:
        assert [s.item for s in v.iter_items()] == EXPECTED
    keys = ("schema", "kdf", "items", "blob_name")
    assert {k: built[k] for k in keys} == {k: v for k, v in facts(FIXTURE).items() if k in keys}
