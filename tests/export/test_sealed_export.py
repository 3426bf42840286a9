"""Encrypted exports (the default): round trips, and tampered / truncated / pickle files refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from p2p_local.adapter import LoraAdapter, generate
from p2p_local.errors import AdapterError, InputError
from p2p_local.export import decrypt_export, export_adapter, import_adapter, open_export
from p2p_local.export.gguf import gguf_adapter_bytes
from p2p_local.export.peft import load_peft, peft_state_dict
from p2p_local.hypernet.model import HyperNetSettings, HyperNetwork
from p2p_local.hypernet.targets import TargetModule, TargetSpec

SMALL = HyperNetSettings(embedding_dim=16, task_dim=8, module_dim=4, depth_dim=4, head_in=12)
PASS = "correct horse battery"


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2P_LOCAL_KDF", "argon2id:m=64,t=1,p=1")


@pytest.fixture(scope="module")
def adapter() -> LoraAdapter:
    q = TargetModule("q_proj", "model.layers.{layer}.self_attn.q_proj", 32, 32)
    v = TargetModule("v_proj", "model.layers.{layer}.self_attn.v_proj", 32, 16)
    net = HyperNetwork(SMALL, TargetSpec((q, v), 2, n_head=4, n_head_kv=2))
    net.randomize_heads(seed=5, weight_std=0.05, b_bias_std=0.05)
    return generate(net, torch.randn(16), base_model="tiny")


def _same(a: LoraAdapter, b: LoraAdapter) -> bool:
    return a.targets == b.targets and all(
        torch.equal(a.a[n], b.a[n]) and torch.equal(a.b[n], b.b[n]) for n in a.targets.module_names
    )


def test_encrypted_by_default(adapter: LoraAdapter, tmp_path: Path) -> None:
    for fmt in ("peft", "gguf"):
        res = export_adapter(adapter, fmt, tmp_path / f"a.{fmt}.sealed", passphrase=PASS)
        data = res.path.read_bytes()
        assert res.encrypted and data.startswith(b"P2PSEAL")
        assert b"lora" not in data and b"GGUF" not in data
        assert res.path.stat().st_mode & 0o777 == 0o600


def test_round_trips(adapter: LoraAdapter, tmp_path: Path) -> None:
    peft_file = export_adapter(adapter, "peft", tmp_path / "p.sealed", passphrase=PASS).path
    assert _same(import_adapter(peft_file, passphrase=PASS), adapter)
    out = decrypt_export(peft_file, tmp_path / "peft-dir", PASS).path
    assert _same(load_peft(out), adapter)

    gguf_file = export_adapter(adapter, "gguf", tmp_path / "g.sealed", passphrase=PASS).path
    opened = open_export(gguf_file, PASS)
    assert opened.format == "gguf" and opened.data == gguf_adapter_bytes(adapter)
    plain = decrypt_export(gguf_file, tmp_path / "adapter.gguf", PASS).path
    assert plain.read_bytes() == gguf_adapter_bytes(adapter)


def test_plaintext_when_asked(adapter: LoraAdapter, tmp_path: Path) -> None:
    res = export_adapter(adapter, "peft", tmp_path / "dir", plaintext=True)
    assert not res.encrypted and _same(load_peft(res.path), adapter)
    res = export_adapter(adapter, "gguf", tmp_path / "a.gguf", plaintext=True)
    assert res.path.read_bytes() == gguf_adapter_bytes(adapter)


def test_no_passphrase_refused(adapter: LoraAdapter, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="passphrase"):
        export_adapter(adapter, "peft", tmp_path / "x", passphrase=None)
    with pytest.raises(InputError, match="format"):
        export_adapter(adapter, "onnx", tmp_path / "x", passphrase=PASS)


@pytest.mark.parametrize("fmt", ["peft", "gguf"])
def test_tampered_truncated_or_wrong_passphrase_refused(
    adapter: LoraAdapter, tmp_path: Path, fmt: str
) -> None:
    path = export_adapter(adapter, fmt, tmp_path / "s", passphrase=PASS).path
    good = path.read_bytes()
    cases = {
        "flipped byte": good[:-100] + bytes([good[-100] ^ 1]) + good[-99:],
        "truncated": good[: len(good) // 2],
        "cut at the end": good[:-1],
        "appended": good + b"\0" * 32,
        "header changed": good.replace(b'"chunk_size"', b'"chunk_sizE"', 1),
    }
    for data in cases.values():
        path.write_bytes(data)
        with pytest.raises(AdapterError):
            open_export(path, PASS)
        with pytest.raises(AdapterError):
            import_adapter(path, passphrase=PASS)
    path.write_bytes(good)
    with pytest.raises(AdapterError, match="passphrase"):
        open_export(path, "not the passphrase")


def test_pickle_and_foreign_files_refused(adapter: LoraAdapter, tmp_path: Path) -> None:
    torch.save(peft_state_dict(adapter), tmp_path / "adapter.pt")
    with pytest.raises(AdapterError, match="pickle"):
        import_adapter(tmp_path / "adapter.pt")
    with pytest.raises(AdapterError, match="pickle"):
        open_export(tmp_path / "adapter.pt", PASS)
    (tmp_path / "a.gguf").write_bytes(gguf_adapter_bytes(adapter))
    with pytest.raises(AdapterError, match="llama.cpp"):
        import_adapter(tmp_path / "a.gguf")
    sealed = export_adapter(adapter, "peft", tmp_path / "s", passphrase=PASS).path
    with pytest.raises(InputError, match="passphrase"):
        import_adapter(sealed)
