"""Both backends run the same weights on the F32 copy of the base model and agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from p2p_local.registry import read_gguf_header
from p2p_local.runtime.hf import HFBackend
from p2p_local.runtime.llamacpp import LlamaCppBackend

pytestmark = pytest.mark.real_model

PROMPT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a short poem about the sea and the wind."},
]


@pytest.fixture(scope="module")
def pair(f32_gguf: Path):
    llama = LlamaCppBackend(f32_gguf, f32_kv_cache=True, n_ctx=256)
    hf = HFBackend(f32_gguf, device="cpu")
    yield llama, hf
    llama.close()
    hf.close()


def test_f32_copy_keeps_metadata_and_is_all_f32(f32_gguf: Path, base_gguf: Path) -> None:
    src, dst = read_gguf_header(base_gguf), read_gguf_header(f32_gguf)
    assert {t.type for t in dst.tensors} == {0}  # GGML F32
    assert [(t.name, t.shape) for t in dst.tensors] == [(t.name, t.shape) for t in src.tensors]
    assert dst.kv.pop("general.file_type") == 0
    src.kv.pop("general.file_type")
    assert dst.kv == src.kv  # tokenizer arrays (by hash), chat template, hyperparameters
    assert "tokenizer.chat_template" in dst.kv and "tokenizer.ggml.tokens" in dst.kv


def test_same_prompt_tokens_and_first_16_greedy_tokens(pair) -> None:
    llama, hf = pair
    prompt = llama.prompt_tokens(PROMPT)
    assert hf.prompt_tokens(PROMPT) == prompt
    ours, theirs = llama.generate_tokens(prompt, 16), hf.generate_tokens(prompt, 16)
    assert len(ours) == 16
    assert ours == theirs


def test_logits_agree_at_every_position(pair) -> None:
    llama, hf = pair
    prompt = llama.prompt_tokens(PROMPT)
    diff = np.abs(llama.eval_logits(prompt) - hf.eval_logits(prompt)).max()
    assert diff < 1e-3, f"max |logit diff| {diff}"


def test_tokenizers_agree_with_and_without_special_tokens(pair) -> None:
    llama, hf = pair
    text = "Hello <|im_start|> world, Paris. Ünïcødé 123"
    assert hf.tokenize(text) == llama.tokenize(text)
    assert hf.tokenize(text, special=True) == llama.tokenize(text, special=True)
    assert hf.tokenize(text) != hf.tokenize(text, special=True)
