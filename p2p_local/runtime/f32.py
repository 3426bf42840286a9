"""F32 copies of GGUF base models, for exact parity checks.

Owns :func:`write_f32_gguf`: every tensor dequantized to float32 with the ``gguf`` package, all
metadata (tokenizer, chat template, hyperparameters) copied unchanged except the file type. The
copy loads in llama.cpp and in transformers (``gguf_file=``), so both backends run the same
weights and their logits can be compared (quantization alone moves logits by ~0.6 on Q4_1).
It does not quantize, and it does not touch adapters.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from p2p_local.errors import ModelFormatError
from p2p_local.paths import cache_dir
from p2p_local.registry import cached_sha256, check_gguf_model

_SKIP_KEYS = ("general.architecture", "general.file_type")


def write_f32_gguf(src: Path, dst: Path) -> Path:
    """Write an all-F32 copy of the GGUF model ``src`` to ``dst`` (atomically); return ``dst``."""
    import gguf

    src, dst = Path(src), Path(dst)
    arch = str(check_gguf_model(src).kv["general.architecture"])
    reader = gguf.GGUFReader(str(src))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        for fld in reader.fields.values():
            if fld.name in _SKIP_KEYS or fld.name.startswith("GGUF."):
                continue
            vtype = fld.types[0]
            sub = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(fld.name, fld.contents(), vtype, sub_type=sub)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        for t in reader.tensors:
            writer.add_tensor(t.name, _to_f32(t, gguf))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            writer.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return dst


def _to_f32(tensor: object, gguf: object) -> np.ndarray:
    """One reader tensor as a float32 array in numpy order (rows, ..., ne0)."""
    qtype = tensor.tensor_type  # type: ignore[attr-defined]
    data = tensor.data  # type: ignore[attr-defined]
    shape = tuple(int(d) for d in reversed(tensor.shape))  # type: ignore[attr-defined]
    types = gguf.GGMLQuantizationType  # type: ignore[attr-defined]
    if qtype in (types.F32, types.F16, types.BF16):
        if qtype == types.BF16:
            out = gguf.quants.dequantize(data, qtype)  # type: ignore[attr-defined]
        else:
            out = np.asarray(data, dtype=np.float32)
    else:
        try:
            out = gguf.quants.dequantize(data, qtype)  # type: ignore[attr-defined]
        except NotImplementedError as exc:
            raise ModelFormatError(
                f"tensor {tensor.name} uses {qtype.name}, which the gguf package cannot "  # type: ignore[attr-defined]
                "dequantize: use a model in another quantization"
            ) from exc
    return np.ascontiguousarray(out.reshape(shape), dtype=np.float32)


def f32_copy(src: Path) -> Path:
    """The cached F32 copy of ``src`` (written on first use, keyed by the source's sha256)."""
    src = Path(src)
    digest = cached_sha256(src)
    dst = cache_dir() / "models" / "derived" / f"{src.stem}-{digest[:12]}-f32.gguf"
    if not dst.is_file():
        write_f32_gguf(src, dst)
    return dst
