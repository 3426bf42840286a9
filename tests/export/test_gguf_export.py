"""GGUF export: llama.cpp's adapter layout, q/k permutation of lora_b, rsLoRA alpha, arch checks."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import LlamaConfig, Qwen2Config

from p2p_local.adapter import LoraAdapter, generate
from p2p_local.errors import UnsupportedArchitectureError
from p2p_local.export.gguf import gguf_adapter_bytes, gguf_tensors, permute_rows, save_gguf
from p2p_local.hypernet.model import HyperNetSettings, HyperNetwork
from p2p_local.hypernet.targets import TargetSpec

SMALL = HyperNetSettings(embedding_dim=16, task_dim=8, module_dim=4, depth_dim=4, head_in=12)
DIMS = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def make_adapter(config: object, modules: tuple[str, ...], rslora: bool = True) -> LoraAdapter:
    targets = TargetSpec.from_config(config, modules=modules, rslora=rslora)
    net = HyperNetwork(SMALL, targets)
    net.randomize_heads(seed=7, weight_std=0.05, b_bias_std=0.05)
    return generate(net, torch.randn(16, generator=torch.Generator().manual_seed(0)))


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What transformers does when it loads a llama GGUF (the inverse of llama.cpp's permute)."""
    return (
        w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
        .swapaxes(2, 1)
        .reshape(w.shape)
    )


def read(path: Path) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    return fields, tensors


def test_llama_layout_keys_and_tensors(tmp_path: Path) -> None:
    ad = make_adapter(LlamaConfig(**DIMS), ("q_proj", "k_proj", "v_proj", "down_proj"))
    fields, tensors = read(save_gguf(ad, tmp_path / "a.gguf"))
    assert fields[gguf.Keys.General.ARCHITECTURE] == "llama"
    assert fields[gguf.Keys.General.TYPE] == "adapter"
    assert fields[gguf.Keys.Adapter.TYPE] == "lora"
    # rsLoRA folded into alpha: llama.cpp's alpha / r must equal alpha / sqrt(r)
    assert fields[gguf.Keys.Adapter.LORA_ALPHA] == pytest.approx(16 * math.sqrt(8))
    assert fields[gguf.Keys.Adapter.LORA_ALPHA] / 8 == pytest.approx(ad.scale)
    assert len(tensors) == 2 * 4 * 2
    assert tensors["blk.1.attn_q.weight.lora_a"].shape == (8, 32)
    assert tensors["blk.1.attn_k.weight.lora_b"].shape == (16, 8)
    assert tensors["blk.0.ffn_down.weight.lora_a"].shape == (8, 48)
    for layer in range(2):
        for name, short, heads in (("q_proj", "attn_q", 4), ("k_proj", "attn_k", 2)):
            a, b = (
                tensors[f"blk.{layer}.{short}.weight.lora_a"],
                tensors[f"blk.{layer}.{short}.weight.lora_b"],
            )
            np.testing.assert_array_equal(a, ad.a[name][layer].numpy())  # A as is
            assert not np.array_equal(b, ad.b[name][layer].numpy())  # B rows permuted ...
            np.testing.assert_array_equal(
                unpermute(b, heads), ad.b[name][layer].numpy()
            )  # ... exactly
        np.testing.assert_array_equal(
            tensors[f"blk.{layer}.attn_v.weight.lora_b"], ad.b["v_proj"][layer].numpy()
        )


def test_permutation_matches_the_base_weight_conversion() -> None:
    """Permuting B rows equals permuting the rows of the dense update B A (what the base got)."""
    rng = np.random.default_rng(0)
    b, a = rng.normal(size=(32, 8)), rng.normal(size=(8, 32))
    np.testing.assert_allclose(permute_rows(b, 4) @ a, permute_rows(b @ a, 4))


def test_plain_lora_alpha_unchanged(tmp_path: Path) -> None:
    ad = make_adapter(LlamaConfig(**DIMS), ("q_proj", "v_proj"), rslora=False)
    fields, _ = read(save_gguf(ad, tmp_path / "plain.gguf"))
    assert fields[gguf.Keys.Adapter.LORA_ALPHA] == pytest.approx(16.0)


def test_bytes_equal_the_saved_file(tmp_path: Path) -> None:
    ad = make_adapter(LlamaConfig(**DIMS), ("q_proj", "v_proj"))
    assert gguf_adapter_bytes(ad) == save_gguf(ad, tmp_path / "x.gguf").read_bytes()


def test_qwen2_has_no_permutation(tmp_path: Path) -> None:
    ad = make_adapter(Qwen2Config(**DIMS), ("q_proj", "k_proj"))
    fields, tensors = read(save_gguf(ad, tmp_path / "q.gguf"))
    assert fields[gguf.Keys.General.ARCHITECTURE] == "qwen2"
    np.testing.assert_array_equal(tensors["blk.1.attn_q.weight.lora_b"], ad.b["q_proj"][1].numpy())


def test_without_permutation_flag_differs() -> None:
    ad = make_adapter(LlamaConfig(**DIMS), ("q_proj",))
    good, bad = gguf_tensors(ad), gguf_tensors(ad, permute_qk=False)
    assert not np.array_equal(good["blk.0.attn_q.weight.lora_b"], bad["blk.0.attn_q.weight.lora_b"])


def test_unsupported_architecture_refused() -> None:
    ad = make_adapter(LlamaConfig(**DIMS), ("q_proj",))
    other = replace(ad.targets, model_type="gemma3")
    with pytest.raises(UnsupportedArchitectureError, match="llama"):
        gguf_adapter_bytes(LoraAdapter(other, ad.a, ad.b))
    with pytest.raises(UnsupportedArchitectureError, match="--format peft"):
        gguf_adapter_bytes(ad, arch="mistral")
