"""A generated LoRA adapter and how it is made from a profile embedding.

Owns :class:`LoraAdapter` (per-layer A and B tensors + the targets they belong to) and
:func:`generate` / :func:`generate_batch` (profile embedding(s) -> adapter(s) in one
hypernetwork forward pass). Also the adapter's own compact byte form (safetensors with its
targets in the metadata), which the facade caches encrypted in the vault, and which
hypernetwork checkpoint is installed. Does not own interop formats (export/) or running the
model (runtime/).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from p2p_local.errors import AdapterError, ConfigError
from p2p_local.hypernet.model import HyperNetwork, LoraWeights
from p2p_local.hypernet.targets import TargetSpec
from p2p_local.hypernet.tensorfile import read_safetensors

ADAPTER_FORMAT = "p2p-local-adapter"
MAX_ADAPTER_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class LoraAdapter:
    """One user's LoRA: per module ``a`` [L, r, in] and ``b`` [L, out, r] (float32, CPU)."""

    targets: TargetSpec
    a: dict[str, Tensor]
    b: dict[str, Tensor]
    base_model: str = ""  # id of the base model it applies to ("" when unknown)
    checkpoint_id: str = ""  # the hypernetwork checkpoint that made it ("" when untracked)

    def __post_init__(self) -> None:
        t = self.targets
        for m in t.modules:
            if m.name not in self.a or m.name not in self.b:
                raise AdapterError(f"adapter lacks tensors for module {m.name!r}")
            want_a = (t.n_layers, t.rank, m.in_features)
            want_b = (t.n_layers, m.out_features, t.rank)
            if tuple(self.a[m.name].shape) != want_a or tuple(self.b[m.name].shape) != want_b:
                raise AdapterError(
                    f"adapter tensors for {m.name!r} have shapes {tuple(self.a[m.name].shape)} / "
                    f"{tuple(self.b[m.name].shape)}, expected {want_a} / {want_b}"
                )

    @property
    def scale(self) -> float:
        return self.targets.scale

    def weights(self) -> LoraWeights:
        """As a batch of one, for :class:`p2p_local.hypernet.inject.LoraInjector`."""
        return LoraWeights(
            {k: v.unsqueeze(0) for k, v in self.a.items()},
            {k: v.unsqueeze(0) for k, v in self.b.items()},
            self.scale,
        )

    def scaled(self, factor: float) -> LoraAdapter:
        """The same adapter with every update ``B A`` multiplied by ``factor`` (B is scaled,
        so the exported files and the rsLoRA scale stay as they are)."""
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 0:
            raise ConfigError(f"an adapter scale must be a positive number, got {factor!r}")
        if factor == 1:
            return self
        return LoraAdapter(self.targets, dict(self.a),
                           {k: v * float(factor) for k, v in self.b.items()},
                           self.base_model, self.checkpoint_id)

    def delta(self, module: str, layer: int) -> Tensor:
        """The dense update ``scale * B A`` [out, in] of one projection (for checks)."""
        return self.scale * (self.b[module][layer] @ self.a[module][layer])

    # --- compact byte form (for the encrypted cache) --------------------------------------

    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        tensors = {}
        for name in self.targets.module_names:
            tensors[f"{name}.a"] = self.a[name].contiguous()
            tensors[f"{name}.b"] = self.b[name].contiguous()
        meta = {
            "format": ADAPTER_FORMAT,
            "targets": json.dumps(self.targets.to_dict()),
            "base_model": self.base_model,
            "checkpoint_id": self.checkpoint_id,
        }
        return save(tensors, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> LoraAdapter:
        from p2p_local.hypernet.tensorfile import check_safetensors_header

        header = check_safetensors_header(data, "adapter", AdapterError)
        meta = header.metadata
        if meta.get("format") != ADAPTER_FORMAT:
            raise AdapterError("not a p2p-local adapter: rebuild it with `p2p-local adapter build`")
        try:
            targets = TargetSpec.from_dict(json.loads(meta["targets"]))
        except (KeyError, ValueError, ConfigError) as exc:
            raise AdapterError(f"adapter has invalid targets ({exc}): rebuild it") from None
        tf = read_safetensors(
            data,
            "adapter",
            AdapterError,
            expected=_expected_shapes(targets),
            max_bytes=MAX_ADAPTER_BYTES,
        )
        return cls(
            targets,
            {n: tf.tensors[f"{n}.a"] for n in targets.module_names},
            {n: tf.tensors[f"{n}.b"] for n in targets.module_names},
            meta.get("base_model", ""),
            meta.get("checkpoint_id", ""),
        )


def _expected_shapes(t: TargetSpec) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for m in t.modules:
        shapes[f"{m.name}.a"] = (t.n_layers, t.rank, m.in_features)
        shapes[f"{m.name}.b"] = (t.n_layers, m.out_features, t.rank)
    return shapes


def stack_weights(adapters: list[LoraAdapter]) -> LoraWeights:
    """Several adapters as one batch (example i uses adapter i) for the injector."""
    if not adapters:
        raise AdapterError("no adapters to stack")
    targets = adapters[0].targets
    if any(a.targets != targets for a in adapters):
        raise AdapterError("adapters for different targets cannot share a batch")
    return LoraWeights(
        {n: torch.stack([a.a[n] for a in adapters]) for n in targets.module_names},
        {n: torch.stack([a.b[n] for a in adapters]) for n in targets.module_names},
        targets.scale,
    )


def _as_tensor(embedding: Any) -> Tensor:
    if isinstance(embedding, Tensor):
        return embedding.detach().float().cpu()
    return torch.from_numpy(np.ascontiguousarray(embedding, dtype=np.float32))


def generate_batch(
    hypernet: HyperNetwork,
    embeddings: Any,
    *,
    base_model: str = "",
    checkpoint_id: str = "",
) -> list[LoraAdapter]:
    """One adapter per row of ``embeddings`` [B, D] (numpy or torch), in one forward pass."""
    emb = _as_tensor(embeddings)
    if emb.dim() == 1:
        emb = emb.unsqueeze(0)
    was_training = hypernet.training
    hypernet.eval()
    try:
        with torch.inference_mode():
            w = hypernet(emb.to(next(hypernet.parameters()).device))
    finally:
        hypernet.train(was_training)
    names = hypernet.targets.module_names
    # materialise: one contiguous float32 CPU copy per user
    a_all = {n: w.a[n].float().cpu().contiguous() for n in names}
    b_all = {n: w.b[n].float().cpu().contiguous() for n in names}
    return [
        LoraAdapter(
            hypernet.targets,
            {n: a_all[n][i].clone() for n in names},
            {n: b_all[n][i].clone() for n in names},
            base_model,
            checkpoint_id,
        )
        for i in range(emb.shape[0])
    ]


def generate(
    hypernet: HyperNetwork,
    embedding: Any,
    *,
    base_model: str = "",
    checkpoint_id: str = "",
) -> LoraAdapter:
    """The adapter for one profile embedding [D] (numpy or torch)."""
    emb = _as_tensor(embedding)
    if emb.dim() != 1 and not (emb.dim() == 2 and emb.shape[0] == 1):
        raise AdapterError(
            f"generate takes one embedding, got shape {tuple(emb.shape)}: use generate_batch"
        )
    return generate_batch(
        hypernet, emb.reshape(1, -1), base_model=base_model, checkpoint_id=checkpoint_id
    )[0]


# --- the installed hypernetwork and the per-user cache (used by the facade) ------------------

USER_ADAPTER_BLOB = "adapter/user"


@dataclass(frozen=True)
class AdapterBuild:
    """An adapter for a user and how it came about.

    key:              what the adapter depends on (checkpoint id, history digest, task;
                      per-query adapters also the query's hash).
    cached:           read back from the vault instead of generated.
    per_query:        made from a per-query profile (never cached).
    profile_seconds:  building and embedding the profile (0 when cached).
    generate_seconds: the hypernetwork forward pass and materialising the tensors.
    """

    adapter: LoraAdapter
    key: str
    cached: bool
    per_query: bool
    profile_seconds: float
    generate_seconds: float


NO_HYPERNET = (
    "no trained hypernetwork is installed, so there is no personalized adapter (chat uses the "
    "base model): pass --checkpoint DIR, or install one with `p2p-local models add NAME DIR "
    "--role hypernet --default`"
)


def find_checkpoint(explicit: Path | str | None = None) -> Path | None:
    """The hypernetwork checkpoint to use: ``explicit``, else the registry's default
    ``hypernet`` entry (fetched and verified), else None when none is installed."""
    from p2p_local.registry import default_path

    return default_path("hypernet", explicit)


def encode_cached(key: str, adapter: LoraAdapter) -> bytes:
    """The vault blob for a cached per-user adapter: its cache key, a newline, its bytes."""
    if "\n" in key:
        raise AdapterError("an adapter cache key cannot contain a newline")
    return key.encode("utf-8") + b"\n" + adapter.to_bytes()


def decode_cached(blob: bytes | None, key: str) -> LoraAdapter | None:
    """The cached adapter if ``blob`` holds one for ``key``; None when missing or stale."""
    if not blob:
        return None
    stored, sep, data = blob.partition(b"\n")
    if not sep or stored != key.encode("utf-8"):
        return None
    return LoraAdapter.from_bytes(data)
