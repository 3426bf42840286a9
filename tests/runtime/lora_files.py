"""Small GGUF LoRA adapters with random weights, written the way llama.cpp's converter does.

Used by the runtime tests (hot-swap, bad inputs). Layout per the design notes: general.type=adapter,
adapter.type=lora, adapter.lora.alpha; tensors ``blk.{i}.attn_q.weight.lora_a`` (r x in) and
``.lora_b`` (out x r) as numpy arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# SmolLM2-135M: hidden 576, 9 heads, 3 KV heads, head dim 64, 30 layers.
SMOLLM2 = {"arch": "llama", "n_layers": 30, "hidden": 576, "q_out": 576, "v_out": 192}


def write_random_lora(path: Path, *, seed: int, rank: int = 4, alpha: float = 8.0,
                      std: float = 0.05, arch: str = "llama", n_layers: int = 30,
                      hidden: int = 576, q_out: int = 576, v_out: int = 192,
                      general_type: str = "adapter") -> Path:
    """Write a LoRA on attn_q and attn_v of every layer with N(0, std) weights."""
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(general_type)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for i in range(n_layers):
        for module, out in (("attn_q", q_out), ("attn_v", v_out)):
            a = rng.normal(0.0, std, size=(rank, hidden)).astype(np.float32)
            b = rng.normal(0.0, std, size=(out, rank)).astype(np.float32)
            writer.add_tensor(f"blk.{i}.{module}.weight.lora_a", a)
            writer.add_tensor(f"blk.{i}.{module}.weight.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
