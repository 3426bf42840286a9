"""TargetSpec: dimensions from HF configs, any projection by name, scale, serialisation."""

from __future__ import annotations

import math

import pytest
from transformers import LlamaConfig, Qwen2Config

from p2p_local.errors import ConfigError
from p2p_local.hypernet.targets import TargetModule, TargetSpec


def tiny_llama_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
    )


def test_default_targets_from_llama_config() -> None:
    spec = TargetSpec.from_config(tiny_llama_config())
    assert spec.module_names == ("q_proj", "v_proj")
    q, v = spec.modules
    assert (q.in_features, q.out_features) == (32, 32)
    assert (v.in_features, v.out_features) == (32, 16)  # 2 kv heads x head_dim 8
    assert q.module_path(2) == "model.layers.2.self_attn.q_proj"
    assert (spec.n_layers, spec.rank, spec.alpha, spec.rslora) == (3, 8, 16.0, True)
    assert (spec.model_type, spec.n_head, spec.n_head_kv) == ("llama", 4, 2)


def test_any_linear_projection_by_name() -> None:
    spec = TargetSpec.from_config(tiny_llama_config(), modules=("k_proj", "gate_proj", "down_proj"))
    dims = {m.name: (m.in_features, m.out_features, m.path) for m in spec.modules}
    assert dims["k_proj"][:2] == (32, 16)
    assert dims["gate_proj"] == (32, 48, "model.layers.{layer}.mlp.gate_proj")
    assert dims["down_proj"][:2] == (48, 32)


def test_qwen2_config() -> None:
    cfg = Qwen2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    spec = TargetSpec.from_config(cfg, rank=4, alpha=8, rslora=False)
    assert spec.model_type == "qwen2"
    assert spec.scale == 8 / 4


def test_unknown_module_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="o_proj"):
        TargetSpec.from_config(tiny_llama_config(), modules=("attn_q",))


def test_non_linear_module_refused() -> None:
    with pytest.raises(ConfigError, match="not a linear projection"):
        TargetSpec.from_config(tiny_llama_config(), modules=("input_layernorm",))


def test_scale_rslora_and_plain() -> None:
    spec = TargetSpec.from_config(tiny_llama_config())
    assert spec.scale == pytest.approx(16 / math.sqrt(8))
    plain = TargetSpec(spec.modules, spec.n_layers, rank=8, alpha=16, rslora=False)
    assert plain.scale == 2.0


def test_round_trip_dict() -> None:
    spec = TargetSpec.from_config(tiny_llama_config(), modules=("q_proj", "up_proj"), rank=4)
    assert TargetSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"rank": 0}, "rank"), ({"alpha": -1.0}, "alpha"), ({"n_layers": 0}, "n_layers")],
)
def test_validation_names_the_field(kwargs: dict, field: str) -> None:
    module = TargetModule("q_proj", "model.layers.{layer}.self_attn.q_proj", 4, 4)
    base = {"modules": (module,), "n_layers": 2}
    with pytest.raises(ConfigError, match=field):
        TargetSpec(**{**base, **kwargs})


def test_duplicate_module_refused() -> None:
    module = TargetModule("q_proj", "model.layers.{layer}.self_attn.q_proj", 4, 4)
    with pytest.raises(ConfigError, match="twice"):
        TargetSpec((module, module), 2)


@pytest.mark.real_model
def test_from_the_default_gguf_base(base_gguf) -> None:
    spec = TargetSpec.from_gguf(base_gguf)
    q, v = spec.modules
    assert (spec.model_type, spec.n_layers, spec.n_head, spec.n_head_kv) == ("llama", 30, 9, 3)
    assert (q.in_features, q.out_features, v.out_features) == (576, 576, 192)
    assert spec.n_params() == 30 * 8 * (576 + 576 + 576 + 192)
