"""PEFT export: exact keys and config, from_pretrained reproduces the hooks, safe import."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from tiny_models import SMALL_HYPERNET, tiny_llama
from transformers import LlamaConfig, LlamaForCausalLM

from p2p_local.adapter import LoraAdapter, generate
from p2p_local.errors import AdapterError
from p2p_local.export.peft import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_peft,
    load_peft_bundle,
    peft_bundle,
    peft_config,
    peft_state_dict,
    save_peft,
)
from p2p_local.hypernet.inject import inject_lora
from p2p_local.hypernet.model import HyperNetwork
from p2p_local.hypernet.targets import TargetSpec

SMALL = SMALL_HYPERNET


@pytest.fixture(scope="module")
def tiny() -> LlamaForCausalLM:
    return tiny_llama()


@pytest.fixture(scope="module")
def adapter(tiny: LlamaForCausalLM) -> LoraAdapter:
    targets = TargetSpec.from_model(tiny, modules=("q_proj", "v_proj", "up_proj"))
    net = HyperNetwork(SMALL, targets)
    net.randomize_heads(seed=4, weight_std=0.05, b_bias_std=0.05)
    return generate(net, torch.randn(16), base_model="tiny-llama")


def test_keys_shapes_and_config(adapter: LoraAdapter) -> None:
    state = peft_state_dict(adapter)
    assert len(state) == 2 * 3 * 3
    a = state["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"]
    b = state["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]
    assert a.shape == (8, 32) and b.shape == (16, 8)
    assert state["base_model.model.model.layers.2.mlp.up_proj.lora_B.weight"].shape == (48, 8)
    cfg = peft_config(adapter)
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM"
    assert (cfg["r"], cfg["lora_alpha"], cfg["use_rslora"]) == (8, 16.0, True)
    assert cfg["target_modules"] == ["q_proj", "v_proj", "up_proj"]
    assert cfg["bias"] == "none" and cfg["fan_in_fan_out"] is False
    assert cfg["base_model_name_or_path"] == "tiny-llama"


def test_peft_from_pretrained_reproduces_hooks(
    tiny: LlamaForCausalLM, adapter: LoraAdapter, tmp_path: Path
) -> None:
    save_peft(adapter, tmp_path / "peft")
    assert sorted(p.name for p in (tmp_path / "peft").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        with inject_lora(tiny, adapter.targets, adapter.weights()):
            hooked = tiny(ids).logits
        model = PeftModel.from_pretrained(tiny, tmp_path / "peft")
        try:
            via_peft = model(ids).logits
        finally:
            model.unload()
    assert (via_peft - hooked).abs().max() <= 1e-6
    assert (via_peft - tiny(ids).logits).abs().max() > 1e-3


def test_import_round_trip(adapter: LoraAdapter, tmp_path: Path) -> None:
    save_peft(adapter, tmp_path / "p")
    for back in (
        load_peft(tmp_path / "p"),
        load_peft(tmp_path / "p", adapter.targets),
        load_peft_bundle(peft_bundle(adapter)),
    ):
        assert back.targets == adapter.targets
        for name in adapter.targets.module_names:
            assert torch.equal(back.a[name], adapter.a[name])
            assert torch.equal(back.b[name], adapter.b[name])


def test_import_infers_layout_of_foreign_peft_dirs(
    tiny: LlamaForCausalLM, adapter: LoraAdapter, tmp_path: Path
) -> None:
    """A PEFT directory written by PEFT itself (no p2p metadata) is read from its tensor names."""
    model = PeftModel.from_pretrained(tiny, _saved(adapter, tmp_path / "src"))
    try:
        model.save_pretrained(tmp_path / "by-peft")
    finally:
        model.unload()
    back = load_peft(tmp_path / "by-peft")
    assert set(back.targets.module_names) == set(adapter.targets.module_names)
    assert back.targets.n_layers == 3 and back.targets.model_type == "unknown"
    assert torch.equal(back.b["up_proj"], adapter.b["up_proj"])


def _saved(adapter: LoraAdapter, path: Path) -> Path:
    save_peft(adapter, path)
    return path


def test_import_against_other_targets_refused(adapter: LoraAdapter, tmp_path: Path) -> None:
    save_peft(adapter, tmp_path / "p")
    other = TargetSpec.from_config(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    with pytest.raises(AdapterError, match="wrong tensors"):
        load_peft(tmp_path / "p", other)


def test_pickle_weights_refused(adapter: LoraAdapter, tmp_path: Path) -> None:
    d = tmp_path / "pickled"
    d.mkdir()
    (d / CONFIG_NAME).write_text(json.dumps(peft_config(adapter)))
    torch.save(peft_state_dict(adapter), d / "adapter_model.bin")
    with pytest.raises(AdapterError, match="pickle"):
        load_peft(d)
    # a pickle renamed to .safetensors is refused too, by its bytes
    (d / WEIGHTS_NAME).write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(AdapterError, match="pickle"):
        load_peft(d)


def test_forged_header_refused_before_allocating(adapter: LoraAdapter, tmp_path: Path) -> None:
    d = _saved(adapter, tmp_path / "p")
    data = (d / WEIGHTS_NAME).read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    key = next(k for k in header if k.endswith("lora_A.weight"))
    header[key]["shape"] = [8, 2**40]
    raw = json.dumps(header).encode()
    (d / WEIGHTS_NAME).write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])
    with pytest.raises(AdapterError, match="size does not match"):
        load_peft(d)
    (d / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(AdapterError, match="truncated|corrupt|outside"):
        load_peft(d)


def test_unsupported_config_refused(adapter: LoraAdapter, tmp_path: Path) -> None:
    d = _saved(adapter, tmp_path / "p")
    cfg = json.loads((d / CONFIG_NAME).read_text())
    (d / CONFIG_NAME).write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(AdapterError, match="use_dora"):
        load_peft(d)
    (d / CONFIG_NAME).write_text(json.dumps({**cfg, "peft_type": "IA3"}))
    with pytest.raises(AdapterError, match="not a LoRA"):
        load_peft(d)
