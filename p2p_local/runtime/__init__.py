"""Runtimes: chat backends over a base model, with LoRA adapters applied.

Owns the backend names (``llamacpp``, ``hf``), :func:`load_backend` (the registry's model in
the named backend) and :class:`AdapterPayload` / :func:`apply_adapter` (one adapter in the
form each backend takes: GGUF bytes for llama.cpp, PEFT config + tensors for transformers).
The backends themselves live in ``llamacpp.py`` and ``hf.py`` and are imported lazily, since
both pull in heavy libraries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2p_local.errors import AdapterError, ConfigError
from p2p_local.runtime.base import ChatBackend, GenerationSettings, Message

if TYPE_CHECKING:
    from p2p_local.registry import ProgressFn

BACKENDS = ("llamacpp", "hf")

__all__ = [
    "BACKENDS",
    "AdapterPayload",
    "ChatBackend",
    "GenerationSettings",
    "Message",
    "apply_adapter",
    "load_backend",
]


@dataclass(frozen=True)
class AdapterPayload:
    """One LoRA adapter, ready for either backend (fill the form(s) the backend needs).

    key:         identifies the adapter's content; applying the same key again is a no-op.
    gguf_bytes:  a GGUF LoRA adapter (llama.cpp), kept in memory.
    peft_config: PEFT ``adapter_config.json`` contents (transformers).
    state_dict:  PEFT-named tensors (``base_model.model.model.layers.{i}...lora_A.weight``).
    scale:       llama.cpp user scale (1.0 applies the adapter as exported).
    """

    key: str
    gguf_bytes: bytes | None = None
    peft_config: dict[str, Any] | None = None
    state_dict: dict[str, Any] | None = field(default=None, repr=False)
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.key:
            raise ConfigError("AdapterPayload.key must be a non-empty string")
        if self.gguf_bytes is None and (self.peft_config is None or self.state_dict is None):
            raise ConfigError("AdapterPayload needs gguf_bytes or peft_config + state_dict")


def load_backend(name: str = "llamacpp", model: str | Path = "base", *,
                 progress: ProgressFn | None = None, **kwargs: Any) -> ChatBackend:
    """Load ``model`` (a registry name, or a path) in backend ``name``; fetches it if needed.

    Extra keyword arguments go to the backend's constructor.
    """
    if name not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if isinstance(model, Path):
        path = model
    else:
        from p2p_local.registry import model_path

        path = model_path(model, progress=progress)
    if name == "llamacpp":
        from p2p_local.runtime.llamacpp import LlamaCppBackend

        return LlamaCppBackend(path, **kwargs)
    from p2p_local.runtime.hf import HFBackend

    return HFBackend(path, **kwargs)


def apply_adapter(backend: Any, payload: AdapterPayload | None) -> None:
    """Put ``payload`` on ``backend`` (None removes any adapter); skips it if already applied."""
    if payload is None:
        if backend.has_adapter:
            backend.set_adapter(None)
        return
    tag = f"payload:{payload.key}"
    if backend.adapter_source == tag:
        return
    if backend.name == "llamacpp":
        if payload.gguf_bytes is None:
            raise AdapterError("this adapter has no GGUF form, which llama.cpp needs")
        backend.set_adapter_bytes(payload.gguf_bytes, scale=payload.scale)
    elif backend.name == "hf":
        if payload.peft_config is None or payload.state_dict is None:
            raise AdapterError("this adapter has no PEFT form, which transformers needs")
        backend.set_adapter_weights(payload.peft_config, payload.state_dict)
    else:
        raise AdapterError(f"backend {backend.name!r} cannot take adapters")
    backend.adapter_source = tag  # any later set_adapter* call replaces it
