"""What the trainer trains and what it trains through.

Owns loading the frozen base model for training (:func:`load_base`: a registry name, a GGUF file
or a transformers folder, through transformers, with its id), :class:`PlainLora` (one LoRA as
trainable parameters, for the MT-LoRA and OPPU modes) and :func:`build_trainable` (the
hypernetwork or a plain LoRA, whichever the mode asks). Both trainables map profile embeddings
to :class:`~p2p_local.hypernet.model.LoraWeights`, so the loop treats them alike. Does not own
the hypernetwork itself (``hypernet/``) or the loop (trainer.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from p2p_local.adapter import LoraAdapter
from p2p_local.errors import ConfigError, TrainingError
from p2p_local.hypernet.model import HyperNetSettings, HyperNetwork, LoraWeights
from p2p_local.hypernet.targets import TargetSpec
from p2p_local.train.config import TrainConfig


@dataclass
class BaseModel:
    """The frozen base model, its tokenizer and the id checkpoints record for it."""

    model: nn.Module
    tokenizer: Any
    model_id: str
    path: Path | None = None

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return int(pad if pad is not None else 0)


def model_id_for(spec: str) -> tuple[Path, str]:
    """Path and id of a base model spec: ``name@sha12`` as the registry names it (a registered
    model is fetched when missing)."""
    from p2p_local.registry import load_registry

    path = Path(spec).expanduser()
    if path.exists():
        return path, model_id(spec)
    return load_registry().path(spec), model_id(spec)


def model_id(spec: str) -> str:
    """``name@sha12`` of a model spec (a file or folder path, or a registry name or role),
    without fetching anything."""
    from p2p_local.registry import load_registry, sha256_file, tree_sha256

    path = Path(spec).expanduser()
    registry = load_registry()
    if not path.exists():
        entry = registry.get(spec)
        return f"{entry.name}@{entry.sha256[:12]}"
    digest = tree_sha256(path) if path.is_dir() else sha256_file(path)
    name = next((e.name for e in registry.entries.values() if e.sha256 == digest), path.name)
    return f"{name}@{digest[:12]}"


def load_base(spec: str, *, dtype: torch.dtype = torch.float32) -> BaseModel:
    """Load a base model for training: frozen, on the CPU, with its chat tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, model_id = model_id_for(spec)
    kwargs: dict[str, Any] = {}
    source = str(path)
    if path.is_file():
        source, kwargs["gguf_file"] = str(path.parent), path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot load base model {spec!r} from {path}: {exc}") from exc
    if getattr(tokenizer, "chat_template", None) is None:
        raise TrainingError(
            f"base model {spec!r} has no chat template: training needs an instruction-tuned "
            "model whose tokenizer carries one"
        )
    model.requires_grad_(False)
    model.eval()
    return BaseModel(model, tokenizer, model_id, path)


class PlainLora(nn.Module):
    """One LoRA as parameters: per module ``a`` [L, r, in] and ``b`` [L, out, r].

    Starts as PEFT does (A kaiming-uniform, B zero) or from ``init``. ``forward`` ignores the
    embeddings it is given and returns the one LoRA for every example.
    """

    def __init__(self, targets: TargetSpec, init: LoraAdapter | None = None) -> None:
        super().__init__()
        self.targets = targets
        self.a = nn.ParameterDict()
        self.b = nn.ParameterDict()
        if init is not None and init.targets != targets:
            raise TrainingError(
                "the initial LoRA was made for other targets (modules, rank or base model): "
                "start from an MT-LoRA trained with the same [model] settings"
            )
        for m in targets.modules:
            if init is not None:
                a = init.a[m.name].detach().float().clone()
                b = init.b[m.name].detach().float().clone()
            else:
                a = torch.empty(targets.n_layers, targets.rank, m.in_features)
                for layer in range(targets.n_layers):
                    nn.init.kaiming_uniform_(a[layer], a=math.sqrt(5))  # PEFT's lora_A init
                b = torch.zeros(targets.n_layers, m.out_features, targets.rank)
            self.a[m.name] = nn.Parameter(a)
            self.b[m.name] = nn.Parameter(b)

    def forward(self, embedding: Tensor | None = None) -> LoraWeights:
        return LoraWeights(
            {k: v.unsqueeze(0) for k, v in self.a.items()},
            {k: v.unsqueeze(0) for k, v in self.b.items()},
            self.targets.scale,
        )

    def to_adapter(self, base_model: str = "") -> LoraAdapter:
        return LoraAdapter(
            self.targets,
            {k: v.detach().float().cpu().clone() for k, v in self.a.items()},
            {k: v.detach().float().cpu().clone() for k, v in self.b.items()},
            base_model,
        )


def targets_for(config: TrainConfig, base: BaseModel) -> TargetSpec:
    m = config.model
    return TargetSpec.from_model(
        base.model, modules=m.modules, rank=m.rank, alpha=m.alpha, rslora=m.rslora
    )


def build_trainable(
    config: TrainConfig,
    targets: TargetSpec,
    embedding_dim: int,
    init: LoraAdapter | None = None,
    *,
    base_model_id: str | None = None,
) -> nn.Module:
    """The hypernetwork (mode p2p; from ``run.init_from`` when set) or a plain LoRA (mt_lora,
    oppu), seeded by ``run.seed``."""
    torch.manual_seed(config.run.seed)
    if config.run.mode == "p2p":
        if init is not None:
            raise ConfigError("an initial LoRA applies to the mt_lora and oppu modes only")
        settings = HyperNetSettings.from_dict({**config.hypernet, "embedding_dim": embedding_dim})
        if config.run.init_from:
            return _hypernet_from(Path(config.run.init_from), settings, targets, base_model_id)
        hypernet = HyperNetwork(settings, targets)
        if config.run.init_shared:  # the config checked that shared_lora is on
            start = load_lora_folder(config.run.init_shared, "[run] init_shared")
            hypernet.start_from_lora(start.a, start.b)
        return hypernet
    return PlainLora(targets, init)


def load_lora_folder(spec: str, setting: str) -> LoraAdapter:
    """A trained LoRA: an MT-LoRA run folder (its ``adapter/``) or a PEFT adapter folder."""
    from p2p_local.export.peft import load_peft

    path = Path(spec).expanduser()
    if (path / "adapter").is_dir():
        path = path / "adapter"
    if not path.is_dir():
        raise TrainingError(
            f"{setting} = {spec!r} is not a folder: give the MT-LoRA run folder or its adapter/"
        )
    return load_peft(path)


def _hypernet_from(
    path: Path, settings: HyperNetSettings, targets: TargetSpec, base_model_id: str | None
) -> HyperNetwork:
    """The checkpoint at ``path`` as the starting point of a run with ``settings``/``targets``;
    refused when it was made for another base model, embedder size, shape or targets."""
    from p2p_local.hypernet.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, base_model=base_model_id, embedding_dim=settings.embedding_dim)
    if ckpt.hypernet.settings != settings or ckpt.hypernet.targets != targets:
        raise ConfigError(
            f"[run] init_from = {str(path)!r} has another [hypernet] size or other targets "
            "than this config: use the config the checkpoint was trained with"
        )
    ckpt.hypernet.train()
    return ckpt.hypernet
