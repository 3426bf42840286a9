"""GGUF LoRA adapters for llama.cpp (``llama-cli -m base.gguf --lora adapter.gguf``).

Owns the GGUF form of a :class:`~p2p_local.adapter.LoraAdapter`, as llama.cpp's
``convert_lora_to_gguf.py`` writes it: KV ``general.architecture`` (the base's),
``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``; tensors
``<base tensor>.lora_a`` (numpy r x in) and ``.lora_b`` (out x r), names mapped with
``gguf.get_tensor_name_map``. Two conversions keep it exact:

- LLaMA: HF->GGUF conversion permutes the rows of q_proj / k_proj for the rotary layout, so
  ``lora_b`` of q / k gets the same row permutation (``lora_a`` is unchanged).
- llama.cpp scales by ``alpha / r`` and knows no rsLoRA, so an rsLoRA adapter is written with
  ``alpha' = alpha * sqrt(r)`` (then ``alpha' / r = alpha / sqrt(r)``).

Only architectures checked for exactness are supported (llama, qwen2); others are refused.
Does not own encryption (store/sealed.py) or loading adapters (runtime/llamacpp.py).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from p2p_local.adapter import LoraAdapter
from p2p_local.errors import UnsupportedArchitectureError

# HF model_type -> GGUF architecture, for the architectures whose export is verified.
SUPPORTED_ARCHS: dict[str, str] = {"llama": "llama", "qwen2": "qwen2"}
# Modules whose rows llama.cpp's converter permutes, per architecture.
_PERMUTED = {"llama": {"q_proj": "n_head", "k_proj": "n_head_kv"}, "qwen2": {}}


def gguf_arch(model_type: str) -> str:
    """The GGUF architecture name for an HF ``model_type``; refuses unsupported ones."""
    arch = SUPPORTED_ARCHS.get(model_type)
    if arch is None:
        raise UnsupportedArchitectureError(
            f"GGUF export supports the architectures {sorted(SUPPORTED_ARCHS)}, not "
            f"{model_type!r}: export as PEFT instead (--format peft)"
        )
    return arch


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k permutation (convert_hf_to_gguf ``LlamaModel.permute``) on rows of ``w``."""
    rows = w.shape[0]
    if n_head <= 0 or rows % (2 * n_head):
        raise UnsupportedArchitectureError(
            f"cannot permute {rows} rows for {n_head} heads: the target dimensions do not match "
            "the base model's head layout"
        )
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(
    adapter: LoraAdapter,
    arch: str | None = None,
    n_head: int | None = None,
    n_head_kv: int | None = None,
    *,
    permute_qk: bool = True,
) -> dict[str, np.ndarray]:
    """GGUF tensor name -> float32 array (lora_a r x in, lora_b out x r), in write order.

    ``permute_qk=False`` skips the LLaMA q/k permutation: the result is wrong on llama bases
    (it exists so tests can show that the permutation matters).
    """
    import gguf

    t = adapter.targets
    arch = gguf_arch(arch or t.model_type)
    heads = {"n_head": n_head or t.n_head, "n_head_kv": n_head_kv or t.n_head_kv or t.n_head}
    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    name_map = gguf.get_tensor_name_map(arch_enum, t.n_layers)
    out: dict[str, np.ndarray] = {}
    for layer in range(t.n_layers):
        for m in t.modules:
            hf_name = m.module_path(layer) + ".weight"
            base_name = name_map.get_name(hf_name, try_suffixes=(".weight",))
            if base_name is None:
                raise UnsupportedArchitectureError(
                    f"{hf_name} has no GGUF tensor in the {arch} layout: this module cannot be "
                    "exported to GGUF; export as PEFT instead"
                )
            a = adapter.a[m.name][layer].detach().cpu().numpy().astype(np.float32)
            b = adapter.b[m.name][layer].detach().cpu().numpy().astype(np.float32)
            heads_key = _PERMUTED[arch].get(m.name)
            if heads_key is not None and permute_qk:
                b = permute_rows(b, heads[heads_key])
            out[f"{base_name}.lora_a"] = np.ascontiguousarray(a)
            out[f"{base_name}.lora_b"] = np.ascontiguousarray(b)
    return out


def gguf_alpha(adapter: LoraAdapter) -> float:
    """The alpha to write so that llama.cpp's ``alpha / r`` equals the adapter's scale."""
    t = adapter.targets
    return float(t.alpha * math.sqrt(t.rank)) if t.rslora else float(t.alpha)


def gguf_adapter_bytes(
    adapter: LoraAdapter,
    arch: str | None = None,
    n_head: int | None = None,
    n_head_kv: int | None = None,
    *,
    permute_qk: bool = True,
    name: str = "p2p-local adapter",
) -> bytes:
    """The GGUF LoRA adapter file, built in memory (never touches the disk)."""
    import gguf
    from gguf.gguf_writer import WriterState

    tensors = gguf_tensors(adapter, arch, n_head, n_head_kv, permute_qk=permute_qk)
    arch = gguf_arch(arch or adapter.targets.model_type)
    writer = gguf.GGUFWriter(None, arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, gguf_alpha(adapter))
    for tname, arr in tensors.items():
        writer.add_tensor_info(tname, arr.shape, arr.dtype, arr.nbytes)
    buf = io.BytesIO()
    writer.fout = [buf]  # type: ignore[list-item]  # the writer only calls write/tell on it
    writer.state = WriterState.EMPTY
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    # tensor data, as GGUFWriter.write_tensors_to_file lays it out (aligned, padded)
    writer.write_padding(buf, buf.tell())
    for arr in tensors.values():
        buf.write(arr.tobytes())
        writer.write_padding(buf, arr.nbytes)
    return buf.getvalue()


def save_gguf(
    adapter: LoraAdapter,
    path: Path,
    arch: str | None = None,
    n_head: int | None = None,
    n_head_kv: int | None = None,
) -> Path:
    """Write a plaintext GGUF LoRA adapter file (0600, atomically); returns ``path``."""
    data = gguf_adapter_bytes(adapter, arch, n_head, n_head_kv)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return path
