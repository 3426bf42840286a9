"""Tiny randomly initialised models shared by the unit tests (no weights are read)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from p2p_local.hypernet.model import HyperNetSettings

# A hypernetwork small enough for unit tests, for 16-dimensional profile embeddings.
SMALL_HYPERNET = HyperNetSettings(
    embedding_dim=16, task_dim=8, module_dim=4, depth_dim=4, head_in=12
)


def tiny_llama_config(layers: int = 3) -> LlamaConfig:
    """A 32-wide llama config with grouped-query attention (4 heads, 2 KV heads)."""
    return LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
    )


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """A frozen tiny llama in eval mode (as the base model is during training)."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config()).eval().requires_grad_(False)
