"""Shared fixtures.

- ``home``: an empty data dir (``P2P_LOCAL_HOME``) per test; the model/data cache stays shared
  (``P2P_LOCAL_CACHE``, default ``~/.cache/p2p-local``) so real models are fetched once.
  It also sets a cheap passphrase KDF (``P2P_LOCAL_KDF``) so creating/opening vaults is fast.
- Real-model fixtures are session-scoped: each model loads once per test run.
  Files (fetched through the registry into the shared cache, verified by sha256):
  ``base_gguf`` (Path: default base model, SmolLM2-135M-Instruct Q4_1 GGUF),
  ``embedding_dir`` (Path: default sentence-transformers folder, all-MiniLM-L6-v2),
  ``f32_gguf`` (Path: an all-F32 copy of the base GGUF, for exact parity checks).
  Loaded models (mark tests using them ``@pytest.mark.real_model``):
  ``embedder`` (Embedder on ``embedding_dir``),
  ``llama_base`` (LlamaCppBackend on ``base_gguf``), ``hf_base`` (HFBackend on ``base_gguf``,
  fp32, CPU). Both are shared by the whole session: the fixtures remove any adapter after
  each test, so a test may call ``set_adapter`` freely but must not close them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep the fetched models between test runs, independent of each test's data dir.
os.environ.setdefault("P2P_LOCAL_CACHE", str(Path.home() / ".cache" / "p2p-local"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads (torch, llama.cpp) that busy-wait slow everything 3-20x when other processes
# share the CPU; sleeping waiters cost little when the machine is idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty p2p-local data dir for one test."""
    data = tmp_path / "p2p-home"
    monkeypatch.setenv("P2P_LOCAL_HOME", str(data))
    monkeypatch.delenv("P2P_LOCAL_PASSPHRASE", raising=False)
    monkeypatch.delenv("P2P_LOCAL_USER", raising=False)
    # Cheap passphrase KDF for new vaults (the strong defaults are tested in tests/store).
    monkeypatch.setenv("P2P_LOCAL_KDF", "argon2id:m=256,t=1,p=1")
    return data


# --- real models (session-scoped) ----------------------------------------------------------


@pytest.fixture(scope="session")
def base_gguf() -> Path:
    """The default base model GGUF, fetched and verified once into the shared cache."""
    from p2p_local.registry import load_registry

    return load_registry(user=False).path("base")


@pytest.fixture(scope="session")
def embedding_dir() -> Path:
    """The default embedding model folder (sentence-transformers), fetched and verified."""
    from p2p_local.registry import load_registry

    return load_registry(user=False).path("embedding")


@pytest.fixture(scope="session")
def embedder(embedding_dir: Path):
    """The default sentence-transformers embedder (all-MiniLM-L6-v2), loaded once."""
    from p2p_local.embedding import Embedder

    return Embedder(embedding_dir)


@pytest.fixture(scope="session")
def f32_gguf(base_gguf: Path) -> Path:
    """An all-F32 copy of the base GGUF (cached next to the fetched models)."""
    from p2p_local.runtime.f32 import f32_copy

    return f32_copy(base_gguf)


@pytest.fixture(scope="session")
def _llama_base_session(base_gguf: Path):
    from p2p_local.runtime.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(base_gguf)
    yield backend
    backend.close()


@pytest.fixture
def llama_base(_llama_base_session):
    """The session's llama.cpp backend on the base GGUF; its adapter is removed afterwards."""
    yield _llama_base_session
    _llama_base_session.set_adapter(None)


@pytest.fixture(scope="session")
def _hf_base_session(base_gguf: Path):
    from p2p_local.runtime.hf import HFBackend

    return HFBackend(base_gguf, device="cpu")


@pytest.fixture
def hf_base(_hf_base_session):
    """The session's transformers backend on the base GGUF; its adapter is removed afterwards."""
    yield _hf_base_session
    _hf_base_session.set_adapter(None)


@pytest.fixture(scope="session")
def random_hypernet_dir(tmp_path_factory: pytest.TempPathFactory, _hf_base_session) -> Path:
    """A hypernetwork checkpoint for the default base + embedding models, randomly initialised
    with non-zero heads: stands in for a trained one (real adapters that depend on the user)."""
    import torch

    from p2p_local.embedding import Embedder
    from p2p_local.hypernet.checkpoint import save_checkpoint
    from p2p_local.hypernet.model import HyperNetSettings, HyperNetwork
    from p2p_local.hypernet.targets import TargetSpec
    from p2p_local.registry import load_registry

    base = load_registry(user=False).get("base")
    embedder = Embedder()  # the default embedding model, as the facade loads it (id and dim)
    torch.manual_seed(0)
    settings = HyperNetSettings(embedding_dim=embedder.dim)
    net = HyperNetwork(settings, TargetSpec.from_model(_hf_base_session.base_model))
    net.randomize_heads(seed=0)
    out = tmp_path_factory.mktemp("hypernet")
    save_checkpoint(net, out, base_model=f"{base.name}@{base.sha256[:12]}",
                    embedding_model=embedder.model_id)
    return out


@pytest.fixture
def no_hypernet_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point P2P_LOCAL_REGISTRY at the built-in base and embedding entries only: a machine
    with no trained hypernetwork installed."""
    import dataclasses
    import json

    from p2p_local.registry import load_registry

    reg = load_registry(user=False)
    lines = ["[defaults]"] + [f"{r} = {json.dumps(reg.defaults[r])}" for r in ("base", "embedding")]
    for role in ("base", "embedding"):
        fields = dataclasses.asdict(reg.get(role))
        lines += ["", "[[model]]"]
        lines += [
            f"{k} = {json.dumps(v)}" for k, v in fields.items() if v is not None and k != "source"
        ]
    path = tmp_path / "registry-no-hypernet.toml"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("P2P_LOCAL_REGISTRY", str(path))
    return path
