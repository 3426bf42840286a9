"""The frozen v1 vault (tests/fixtures/vault_v1, made once by make_fixture.py) must stay readable."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from p2p_local.store.records import HistoryItem
from p2p_local.store.vault import Vault

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "vault_v1"
FACTS = json.loads((FIXTURE / "fixture.json").read_text(encoding="utf-8"))
EXPECTED = [
    HistoryItem.from_dict(json.loads(line))
    for line in (FIXTURE / "items.jsonl").read_text(encoding="utf-8").splitlines()
    if line.strip()
]


@pytest.fixture
def v1_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "vault"
    shutil.copytree(FIXTURE / "vault", dst)  # opening writes (WAL files), so use a copy
    return dst


def test_frozen_v1_vault_reads_back_exactly(v1_copy: Path) -> None:
    with Vault.open(v1_copy, passphrase=FACTS["passphrase"]) as v:
        assert [s.item for s in v.iter_items()] == EXPECTED
        assert [s.digest for s in v.iter_items()] == [i.content_hash() for i in EXPECTED]
        assert v.count() == FACTS["items"] == len(EXPECTED)
        assert v.history_digest() == FACTS["history_digest"]
        assert v.get_blob(FACTS["blob_name"]) == FACTS["blob_value_utf8"].encode()
        assert v.verify().items == len(EXPECTED)
    with Vault.open(v1_copy, recovery_code=FACTS["recovery_code"]) as v:
        assert v.count() == len(EXPECTED)


def test_frozen_v1_vault_accepts_new_items(v1_copy: Path) -> None:
    with Vault.open(v1_copy, passphrase=FACTS["passphrase"]) as v:
        assert v.add(EXPECTED + [HistoryItem(text="added by a later version")]).added == 1
        assert v.verify().items == len(EXPECTED) + 1


def test_the_fixture_script_still_builds_an_equivalent_vault(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_fixture", FIXTURE / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    facts = module.build(tmp_path)
    with Vault.open(tmp_path / "vault", passphrase=facts["passphrase"]) as v:
        assert [s.item for s in v.iter_items()] == EXPECTED
    assert {k: facts[k] for k in ("schema", "kdf", "items", "blob_name")} == {
        k: FACTS[k] for k in ("schema", "kdf", "items", "blob_name")
    }
