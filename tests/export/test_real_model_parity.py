"""Exactness on the real default model (SmolLM2-135M), with a random non-zero hypernetwork.

- training-time hooks == the same adapter through PEFT (<= 1e-6);
- the exported PEFT directory, loaded by ``PeftModel.from_pretrained``, reproduces them;
- the exported GGUF adapter on the F32 base with an F32 KV cache in llama.cpp matches
  transformers+PEFT over every position of a 30+ token chat prompt (<= 1e-3), and does NOT
  without the q/k permutation or without folding the rsLoRA scale into alpha.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from p2p_local.adapter import LoraAdapter, generate
from p2p_local.export.gguf import gguf_adapter_bytes
from p2p_local.export.peft import peft_config, peft_state_dict, save_peft
from p2p_local.hypernet.inject import inject_lora
from p2p_local.hypernet.model import HyperNetSettings, HyperNetwork
from p2p_local.hypernet.targets import TargetSpec

pytestmark = pytest.mark.real_model

MESSAGES = [
    {"role": "system", "content": "You are a concise assistant who knows the user's tastes."},
    {
        "role": "user",
        "content": "Suggest a film for tonight: I loved Alien and Blade Runner, "
        "but I am tired of space stories.",
    },
]
PARITY = 1e-3


@pytest.fixture(scope="module")
def llama_f32(f32_gguf: Path):
    from p2p_local.runtime.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(f32_gguf, f32_kv_cache=True, n_ctx=256)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def prompt(llama_f32) -> list[int]:
    tokens = llama_f32.prompt_tokens(MESSAGES)
    assert len(tokens) >= 30
    return tokens


@pytest.fixture(scope="module")
def adapter(_hf_base_session) -> LoraAdapter:
    targets = TargetSpec.from_model(_hf_base_session.base_model)
    assert targets.module_names == ("q_proj", "v_proj") and targets.n_layers == 30
    torch.manual_seed(0)
    net = HyperNetwork(HyperNetSettings(), targets)
    net.randomize_heads(seed=1)
    emb = torch.nn.functional.normalize(
        torch.randn(384, generator=torch.Generator().manual_seed(2)), dim=0
    )
    return generate(net, emb, base_model="smollm2-135m-instruct-q4_1")


@pytest.fixture(scope="module")
def reference(_hf_base_session, adapter: LoraAdapter, prompt: list[int]) -> np.ndarray:
    """transformers + PEFT (in memory) logits of the adapter at every prompt position."""
    return _peft_logits(_hf_base_session, adapter, prompt)


def _peft_logits(hf, adapter: LoraAdapter, prompt: list[int]) -> np.ndarray:
    hf.set_adapter_weights(peft_config(adapter), peft_state_dict(adapter))
    try:
        return hf.eval_logits(prompt)
    finally:
        hf.set_adapter(None)


def _hook_logits(hf, adapter: LoraAdapter, prompt: list[int]) -> np.ndarray:
    model = hf.base_model
    with torch.inference_mode(), inject_lora(model, adapter.targets, adapter.weights()):
        return model(torch.tensor([prompt])).logits[0].numpy()


def test_hooks_equal_peft(hf_base, adapter: LoraAdapter, prompt: list[int], reference) -> None:
    base = hf_base.eval_logits(prompt)
    hooked = _hook_logits(hf_base, adapter, prompt)
    via_peft = reference
    assert np.abs(hooked - base).max() > 0.5  # the adapter changes the model
    assert np.abs(via_peft - hooked).max() <= 1e-6


def test_exported_peft_dir_reproduces_in_memory(
    hf_base, adapter: LoraAdapter, prompt: list[int], reference, tmp_path: Path
) -> None:
    in_memory = reference
    hf_base.set_adapter(save_peft(adapter, tmp_path / "peft"))  # PeftModel.from_pretrained
    from_dir = hf_base.eval_logits(prompt)
    assert np.abs(from_dir - in_memory).max() <= 1e-6


def test_gguf_matches_transformers_peft(
    hf_base, llama_f32, adapter: LoraAdapter, prompt: list[int], reference
) -> None:
    llama_f32.set_adapter_bytes(gguf_adapter_bytes(adapter))
    try:
        got = llama_f32.eval_logits(prompt)
    finally:
        llama_f32.set_adapter(None)
    assert got.shape == reference.shape
    assert np.abs(got - reference).max() <= PARITY
    # and the base alone agrees too, so the adapter is what is being compared
    assert np.abs(llama_f32.eval_logits(prompt) - hf_base.eval_logits(prompt)).max() <= PARITY


def test_gguf_without_qk_permutation_fails(
    llama_f32, adapter: LoraAdapter, prompt: list[int], reference
) -> None:
    llama_f32.set_adapter_bytes(gguf_adapter_bytes(adapter, permute_qk=False))
    try:
        got = llama_f32.eval_logits(prompt)
    finally:
        llama_f32.set_adapter(None)
    assert np.abs(got - reference).max() > 100 * PARITY


def test_rslora_scale(
    hf_base, llama_f32, adapter: LoraAdapter, prompt: list[int], reference
) -> None:
    assert adapter.targets.rslora
    plain = LoraAdapter(replace(adapter.targets, rslora=False), adapter.a, adapter.b)
    assert plain.scale != adapter.scale
    plain_reference = _peft_logits(hf_base, plain, prompt)
    llama_f32.set_adapter_bytes(gguf_adapter_bytes(plain))
    try:
        plain_gguf = llama_f32.eval_logits(prompt)
    finally:
        llama_f32.set_adapter(None)
    # a plain LoRA (alpha / r) is exact too ...
    assert np.abs(plain_gguf - plain_reference).max() <= PARITY
    # ... and it is what the rsLoRA adapter would give with alpha written unfolded: wrong
    assert np.abs(plain_gguf - reference).max() > 100 * PARITY
