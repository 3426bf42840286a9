"""Checkpoints: round trip, refusing other base/embedding models, corrupt files, pickle."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from p2p_local.errors import CheckpointError
from p2p_local.hypernet.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from p2p_local.hypernet.model import HyperNetSettings, HyperNetwork
from p2p_local.hypernet.targets import TargetModule, TargetSpec

SMALL = HyperNetSettings(embedding_dim=16, task_dim=8, module_dim=4, depth_dim=4, head_in=12)


def targets(n_layers: int = 3, hidden: int = 32) -> TargetSpec:
    q = TargetModule("q_proj", "model.layers.{layer}.self_attn.q_proj", hidden, hidden)
    v = TargetModule("v_proj", "model.layers.{layer}.self_attn.v_proj", hidden, hidden // 2)
    return TargetSpec((q, v), n_layers, rank=4, alpha=8.0, n_head=4, n_head_kv=2)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[HyperNetwork, Path]:
    net = HyperNetwork(SMALL, targets())
    net.randomize_heads(seed=2)
    save_checkpoint(net, tmp_path / "ckpt", base_model="base-a", embedding_model="emb-a")
    return net, tmp_path / "ckpt"


def test_round_trip_same_outputs(saved: tuple[HyperNetwork, Path]) -> None:
    net, path = saved
    loaded = load_checkpoint(path, base_model="base-a", embedding_model="emb-a", embedding_dim=16)
    assert loaded.hypernet.targets == net.targets
    assert loaded.hypernet.settings == net.settings
    assert loaded.info.base_model == "base-a" and loaded.info.embedding_model == "emb-a"
    assert len(loaded.info.checkpoint_id) == 16
    e = torch.randn(2, 16)
    net.eval()
    a, b = net(e), loaded.hypernet(e)
    for name in ("q_proj", "v_proj"):
        assert torch.equal(a.a[name], b.a[name]) and torch.equal(a.b[name], b.b[name])


def test_config_records_what_it_was_made_for(saved: tuple[HyperNetwork, Path]) -> None:
    _, path = saved
    config = json.loads((path / CONFIG_FILE).read_text())
    for key in (
        "base_model",
        "embedding_model",
        "embedding_dim",
        "targets",
        "rank",
        "alpha",
        "rslora",
        "settings",
    ):
        assert key in config
    assert (config["rank"], config["alpha"], config["rslora"]) == (4, 8.0, True)
    assert read_checkpoint_info(path).embedding_dim == 16


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_model": "base-b"}, "base model"),
        ({"embedding_model": "emb-b"}, "embedding"),
        ({"embedding_dim": 384}, "384"),
    ],
)
def test_mismatched_models_refused(
    saved: tuple[HyperNetwork, Path], kwargs: dict, match: str
) -> None:
    _, path = saved
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path, **kwargs)


def test_profile_format_recorded_and_a_different_one_refused(
    saved: tuple[HyperNetwork, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from p2p_local.hypernet import checkpoint
    from p2p_local.profile.builder import PROFILE_FORMAT

    _, path = saved
    assert read_checkpoint_info(path).profile_format == PROFILE_FORMAT
    monkeypatch.setattr(checkpoint, "PROFILE_FORMAT", PROFILE_FORMAT + 1)
    with pytest.raises(CheckpointError, match=f"profiles of format {PROFILE_FORMAT}"):
        load_checkpoint(path)
    # a checkpoint written before the format was recorded is accepted as it is
    config = json.loads((path / CONFIG_FILE).read_text())
    del config["profile_format"]
    (path / CONFIG_FILE).write_text(json.dumps(config))
    assert load_checkpoint(path).info.profile_format is None


def test_profile_settings_recorded_and_read_back(
    saved: tuple[HyperNetwork, Path], tmp_path: Path
) -> None:
    from p2p_local.profile.builder import ProfileSettings

    net, path = saved
    # not recorded (e.g. a checkpoint from before the record): profiles use the defaults
    assert read_checkpoint_info(path).profile_settings is None
    assert read_checkpoint_info(path).profile() == ProfileSettings()
    settings = ProfileSettings(k=3, recent=8)
    save_checkpoint(net, tmp_path / "recent", base_model="base-a", embedding_model="emb-a",
                    profile=settings)
    for where in (tmp_path / "recent", tmp_path / "recent" / WEIGHTS_FILE):
        assert read_checkpoint_info(where).profile() == settings
    assert load_checkpoint(tmp_path / "recent").info.profile_settings == settings
    config = json.loads((tmp_path / "recent" / CONFIG_FILE).read_text())
    assert config["profile"] == {"k": 3, "item_chars": 400, "statistics": True, "recent": 8}
    config["profile"]["recent"] = 99
    (tmp_path / "recent" / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="bad profile settings: recent"):
        read_checkpoint_info(tmp_path / "recent")


def test_modified_weights_refused(saved: tuple[HyperNetwork, Path]) -> None:
    _, path = saved
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 1
    (path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)


def test_bad_header_refused_before_loading(saved: tuple[HyperNetwork, Path]) -> None:
    """A header whose sizes lie is refused even when the recorded sha256 matches it."""
    import hashlib

    _, path = saved
    weights = path / WEIGHTS_FILE
    data = weights.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [10**9, 10**9]  # would allocate exabytes if trusted
    raw = json.dumps(header).encode()
    forged = len(raw).to_bytes(8, "little") + raw + data[8 + n :]
    weights.write_bytes(forged)
    config = json.loads((path / CONFIG_FILE).read_text())
    config["weights_sha256"] = hashlib.sha256(forged).hexdigest()
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="size does not match|points outside"):
        load_checkpoint(path)


def test_pickle_checkpoint_refused(saved: tuple[HyperNetwork, Path]) -> None:
    import hashlib

    net, path = saved
    torch.save(net.state_dict(), path / WEIGHTS_FILE)  # a zip of pickles
    data = (path / WEIGHTS_FILE).read_bytes()
    config = json.loads((path / CONFIG_FILE).read_text())
    config["weights_sha256"] = hashlib.sha256(data).hexdigest()
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)
    (path / WEIGHTS_FILE).write_bytes(pickle.dumps({"x": 1}, protocol=4))
    config["weights_sha256"] = hashlib.sha256((path / WEIGHTS_FILE).read_bytes()).hexdigest()
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no hypernetwork checkpoint"):
        load_checkpoint(tmp_path / "nothing")


def test_default_checkpoint_for_default_base_is_at_most_40_mb(tmp_path: Path) -> None:
    q = TargetModule("q_proj", "model.layers.{layer}.self_attn.q_proj", 576, 576)
    v = TargetModule("v_proj", "model.layers.{layer}.self_attn.v_proj", 576, 192)
    net = HyperNetwork(HyperNetSettings(), TargetSpec((q, v), 30, n_head=9, n_head_kv=3))
    save_checkpoint(net, tmp_path, base_model="b", embedding_model="e")
    assert (tmp_path / WEIGHTS_FILE).stat().st_size <= 40 * 1024 * 1024


def test_weights_file_alone_is_a_checkpoint(saved: tuple[HyperNetwork, Path]) -> None:
    net, path = saved
    weights = path / WEIGHTS_FILE
    info = read_checkpoint_info(weights)
    assert info.checkpoint_id == read_checkpoint_info(path).checkpoint_id
    loaded = load_checkpoint(weights, base_model="base-a", embedding_model="emb-a")
    e = torch.randn(1, 16)
    assert torch.equal(loaded.hypernet.eval()(e).b["q_proj"], net.eval()(e).b["q_proj"])
    with pytest.raises(CheckpointError, match="base model"):
        load_checkpoint(weights, base_model="base-b")


def test_fitted_whitening_travels_with_the_checkpoint(tmp_path: Path) -> None:
    settings = HyperNetSettings(**{**SMALL.to_dict(), "whiten_input": True})
    net = HyperNetwork(settings, targets())
    net.randomize_heads(seed=4)
    net.fit_whitening(torch.randn(50, 16) + 3.0)
    save_checkpoint(net, tmp_path / "w", base_model="base-a", embedding_model="emb-a")
    loaded = load_checkpoint(tmp_path / "w", base_model="base-a", embedding_dim=16).hypernet
    assert loaded.settings.whiten_input
    assert torch.equal(loaded.input_whitener, net.input_whitener)
    assert torch.equal(loaded.input_mean, net.input_mean)
    e = torch.randn(2, 16)
    net.eval()
    assert torch.equal(net(e).b["q_proj"], loaded(e).b["q_proj"])
