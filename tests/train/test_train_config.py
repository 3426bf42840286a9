"""The training config: shipped TOMLs load, round-trip, and bad values name their field."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2p_local.errors import ConfigError
from p2p_local.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "models" / "hypernets" / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_shipped_configs_load_and_round_trip(name: str, tmp_path: Path) -> None:
    cfg = TrainConfig.load(CONFIGS / name)
    again = tmp_path / "again.toml"
    again.write_text(cfg.to_toml())
    assert TrainConfig.load(again) == cfg


def test_paper_config_is_the_papers_recipe() -> None:
    cfg = TrainConfig.load(CONFIGS / "paper_a100.toml")
    accel = (CONFIGS / "accelerate_8gpu.yaml").read_text()
    import yaml

    processes = yaml.safe_load(accel)["num_processes"]
    assert cfg.run.max_steps == 20000 and cfg.optim.lr == 2e-5
    assert cfg.run.batch_size * processes * cfg.run.grad_accum == 32
    assert (cfg.optim.weight_decay, cfg.optim.grad_clip, cfg.optim.label_smoothing,
            cfg.optim.reg_weight) == (1e-2, 1.0, 0.1, 1e-3)
    assert (cfg.model.modules, cfg.model.rank, cfg.model.alpha, cfg.model.rslora) == (
        ("q_proj", "v_proj"), 8, 16.0, True)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"run": {"mode": "full"}}, r"\[run\] mode = 'full'"),
        ({"run": {"batch_size": 0}}, r"\[run\] batch_size = 0"),
        ({"optim": {"lr": -1.0}}, r"\[optim\] lr = -1.0"),
        ({"optim": {"rating_risk_weight": -0.5}}, r"\[optim\] rating_risk_weight = -0.5"),
        ({"optim": {"rating_ce_weight": -1}}, r"\[optim\] rating_ce_weight = -1"),
        ({"profile": {"mode": "all"}}, r"\[profile\] mode = 'all'"),
        ({"profile": {"recent": 40}}, r"\[profile\] recent = 40"),
        ({"data": {"split": "time"}}, r"\[data\] split = 'time'"),
        ({"run": {"batchsize": 4}}, r"\[run\] has unknown field\(s\) batchsize"),
        ({"trainer": {}}, r"unknown section\(s\) \[trainer\]"),
        ({"hypernet": {"embedding_dim": 384}}, r"embedding_dim .* comes from the embedding model"),
        ({"hypernet": {"dropout": 2.0}}, r"dropout"),
        ({"run": {"mode": "oppu"}}, r"\[oppu\] task and user"),
    ],
)
def test_bad_values_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(data)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nmode = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        TrainConfig.load(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        TrainConfig.load(tmp_path / "missing.toml")


def test_overrides() -> None:
    cfg = TrainConfig().with_overrides(max_steps=7, out_dir="elsewhere")
    assert (cfg.run.max_steps, cfg.run.out_dir) == (7, "elsewhere")


def test_set_overrides_any_key_and_validates_it() -> None:
    base = TrainConfig.load(CONFIGS / "cpu_office_anchor.toml")
    cfg = base.with_overrides(settings=["optim.lr=2e-4", "run.out_dir=runs/x",
                                        "data.tasks=['office', 'fortunes', 'movielens']",
                                        "optim.anchor_tasks=['movielens']"],
                              max_steps=3)
    assert cfg.optim.lr == 2e-4 and cfg.run.out_dir == "runs/x" and cfg.run.max_steps == 3
    assert cfg.data.tasks == ("office", "fortunes", "movielens")
    assert cfg.optim.anchor_tasks == ("movielens",)
    assert cfg.model == base.model  # the rest as loaded
    assert TrainConfig.load(CONFIGS / "cpu_office_anchor.toml") == base
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        base.with_overrides(settings=["lr=2e-4"])
    with pytest.raises(ConfigError, match="unknown field"):
        base.with_overrides(settings=["optim.learning_rate=2e-4"])
    with pytest.raises(ConfigError, match="lr"):
        base.with_overrides(settings=["optim.lr=-1"])
    with pytest.raises(ConfigError, match="anchor_tasks"):  # checked across sections too
        base.with_overrides(settings=["data.tasks=['office', 'fortunes']"])


def test_keys_added_later_leave_fingerprints_alone_while_off() -> None:
    """Runs and caches named before a key existed keep their names while it is off."""
    plain = TrainConfig.from_dict({})
    off = TrainConfig.from_dict({"optim": {"rating_risk_weight": 0.0}, "data": {"splits": ""}})
    on = TrainConfig.from_dict({"optim": {"rating_risk_weight": 0.5}})
    assert "rating_risk_weight" not in plain.fingerprint_sections("optim")["optim"]
    assert "splits" not in plain.fingerprint_sections("data")["data"]
    assert off.fingerprint() == plain.fingerprint()
    assert on.fingerprint("optim") != plain.fingerprint("optim")
    assert on.fingerprint_sections("optim")["optim"]["rating_risk_weight"] == 0.5
    assert TrainConfig.from_dict({"profile": {"recent": 0}}).fingerprint() == plain.fingerprint()
    assert TrainConfig.from_dict({"profile": {"recent": 8}}).fingerprint("profile") != (
        plain.fingerprint("profile"))
