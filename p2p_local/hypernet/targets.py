"""Which base-model projections get a LoRA, with their dimensions, rank, alpha and scale.

Owns :class:`TargetSpec`: derived from a base model's Hugging Face config (for a GGUF base, the
config transformers derives when loading it with ``gguf_file=``). Any ``nn.Linear`` inside the
decoder layers can be targeted by its attribute name (``q_proj``, ``v_proj``, ``gate_proj``,
...): the dimensions come from instantiating the architecture on the meta device, so no weights
are read. Does not own the hypernetwork or any tensors.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from p2p_local.errors import ConfigError

DEFAULT_MODULES = ("q_proj", "v_proj")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LAYER_PATH = re.compile(r"^(?P<prefix>.*\.)(?P<layer>\d+)\.(?P<rest>.+)$")


@dataclass(frozen=True)
class TargetModule:
    """One projection type, present once in every decoder layer."""

    name: str  # attribute name, e.g. "q_proj"
    path: str  # module path with a "{layer}" slot, e.g. "model.layers.{layer}.self_attn.q_proj"
    in_features: int
    out_features: int

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"TargetModule.name={self.name!r} is not a module attribute name")
        if "{layer}" not in self.path:
            raise ConfigError(f"TargetModule.path={self.path!r} must contain '{{layer}}'")
        for key in ("in_features", "out_features"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"TargetModule.{key}={value!r} must be a positive integer")

    def module_path(self, layer: int) -> str:
        return self.path.format(layer=layer)


@dataclass(frozen=True)
class TargetSpec:
    """The LoRA layout a hypernetwork generates: modules x layers, rank, alpha, rsLoRA."""

    modules: tuple[TargetModule, ...]
    n_layers: int
    rank: int = 8  # LoRA rank r
    alpha: float = 16.0  # LoRA alpha
    rslora: bool = True  # scale alpha / sqrt(r) instead of alpha / r
    model_type: str = "llama"  # the base's HF model_type (decides GGUF arch and q/k permutation)
    n_head: int = 0  # attention heads (GGUF q permutation); 0 when unknown
    n_head_kv: int = 0  # key/value heads (GGUF k permutation); 0 when unknown

    def __post_init__(self) -> None:
        if not self.modules:
            raise ConfigError("TargetSpec.modules is empty: name at least one projection")
        names = [m.name for m in self.modules]
        if len(set(names)) != len(names):
            raise ConfigError(f"TargetSpec.modules={names!r} names a module twice")
        if not isinstance(self.n_layers, int) or self.n_layers <= 0:
            raise ConfigError(f"TargetSpec.n_layers={self.n_layers!r} must be a positive integer")
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank <= 0:
            raise ConfigError(f"TargetSpec.rank={self.rank!r} must be a positive integer")
        if not (isinstance(self.alpha, (int, float)) and self.alpha > 0):
            raise ConfigError(f"TargetSpec.alpha={self.alpha!r} must be a positive number")
        if self.n_head < 0 or self.n_head_kv < 0:
            raise ConfigError(
                f"TargetSpec.n_head={self.n_head!r}/n_head_kv={self.n_head_kv!r} must be >= 0"
            )

    # --- derived -------------------------------------------------------------------------

    @property
    def scale(self) -> float:
        """The factor LoRA multiplies ``B A x`` by: alpha/sqrt(r) with rsLoRA, else alpha/r."""
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    @property
    def module_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modules)

    def module(self, name: str) -> TargetModule:
        for m in self.modules:
            if m.name == name:
                return m
        raise ConfigError(f"module {name!r} is not a target; targets are {self.module_names}")

    def n_params(self) -> int:
        """LoRA parameters of one adapter (A and B over all layers)."""
        per_layer = sum(self.rank * (m.in_features + m.out_features) for m in self.modules)
        return per_layer * self.n_layers

    # --- (de)serialisation ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["modules"] = [asdict(m) for m in self.modules]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetSpec:
        try:
            modules = tuple(TargetModule(**m) for m in data["modules"])
            rest = {k: v for k, v in data.items() if k != "modules"}
            return cls(modules=modules, **rest)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"invalid target spec {data!r}: {exc}") from exc

    # --- construction --------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        hf_config: Any,
        modules: tuple[str, ...] | list[str] = DEFAULT_MODULES,
        rank: int = 8,
        alpha: float = 16.0,
        rslora: bool = True,
    ) -> TargetSpec:
        """Targets for a base model described by ``hf_config`` (a transformers PretrainedConfig).

        The architecture is instantiated on the meta device (no memory, no weights) and every
        ``nn.Linear`` whose attribute name is in ``modules`` is looked up in each decoder layer.
        """
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf_config)
        return cls.from_model(model, modules=modules, rank=rank, alpha=alpha, rslora=rslora)

    @classmethod
    def from_gguf(
        cls,
        path: Any,
        modules: tuple[str, ...] | list[str] = DEFAULT_MODULES,
        rank: int = 8,
        alpha: float = 16.0,
        rslora: bool = True,
    ) -> TargetSpec:
        """Targets for a GGUF base model, from the config transformers derives from its
        metadata (no weights are read)."""
        from pathlib import Path

        from transformers import AutoConfig

        path = Path(path)
        config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
        return cls.from_config(config, modules=modules, rank=rank, alpha=alpha, rslora=rslora)

    @classmethod
    def from_model(
        cls,
        model: Any,
        modules: tuple[str, ...] | list[str] = DEFAULT_MODULES,
        rank: int = 8,
        alpha: float = 16.0,
        rslora: bool = True,
    ) -> TargetSpec:
        """Targets read from an instantiated (possibly meta) transformers model."""
        from torch import nn

        modules = tuple(modules)
        if not modules:
            raise ConfigError("modules is empty: name at least one projection, e.g. q_proj")
        found: dict[str, dict[int, tuple[str, int, int]]] = {name: {} for name in modules}
        for path, sub in model.named_modules():
            name = path.rsplit(".", 1)[-1]
            if name not in found:
                continue
            match = _LAYER_PATH.match(path)
            if match is None:
                continue
            if not isinstance(sub, nn.Linear):
                raise ConfigError(
                    f"{path} is a {type(sub).__name__}, not a linear projection: "
                    "target only nn.Linear modules"
                )
            template = f"{match['prefix']}{{layer}}.{match['rest']}"
            found[name][int(match["layer"])] = (template, sub.in_features, sub.out_features)

        config = model.config
        n_layers = int(getattr(config, "num_hidden_layers", 0) or 0)
        targets = []
        for name in modules:
            layers = found[name]
            if not layers:
                raise ConfigError(
                    f"module {name!r} not found in the decoder layers of this "
                    f"{config.model_type} model: use one of its linear projections, e.g. "
                    f"{sorted(_linear_names(model))}"
                )
            shapes = set(layers.values())
            if len(shapes) != 1:
                raise ConfigError(f"module {name!r} differs between layers ({shapes}): unsupported")
            if sorted(layers) != list(range(n_layers)):
                raise ConfigError(
                    f"module {name!r} is in layers {sorted(layers)}, not in all {n_layers}"
                )
            template, fan_in, fan_out = shapes.pop()
            targets.append(TargetModule(name, template, fan_in, fan_out))

        n_head = int(getattr(config, "num_attention_heads", 0) or 0)
        n_head_kv = int(getattr(config, "num_key_value_heads", 0) or 0) or n_head
        return cls(
            modules=tuple(targets),
            n_layers=n_layers,
            rank=rank,
            alpha=float(alpha),
            rslora=rslora,
            model_type=str(config.model_type),
            n_head=n_head,
            n_head_kv=n_head_kv,
        )


def _linear_names(model: Any) -> set[str]:
    from torch import nn

    return {
        path.rsplit(".", 1)[-1]
        for path, sub in model.named_modules()
        if isinstance(sub, nn.Linear) and _LAYER_PATH.match(path)
    }
