"""Applying generated LoRA weights to a base model with forward hooks (training and scoring).

Owns :class:`LoraInjector`: a forward hook on every target ``nn.Linear`` that adds
``scale * (x A^T) B^T`` with a separate (A, B) per example, so one batch can mix users. The
weights are used as given (not detached), so gradients flow back into the hypernetwork. The
result equals PEFT for the same A and B. Does not own the weights (model.py / adapter.py) or
file formats (export/).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from p2p_local.errors import AdapterError
from p2p_local.hypernet.model import LoraWeights
from p2p_local.hypernet.targets import TargetSpec


class LoraInjector:
    """Hooks on a base model's target projections; ``set(weights)`` chooses what they add.

    ``weights`` has batch size equal to the model input's batch (one LoRA per example) or 1
    (the same LoRA for every example). With no weights set the hooks add nothing.
    """

    def __init__(self, model: nn.Module, targets: TargetSpec) -> None:
        self.targets = targets
        self._weights: LoraWeights | None = None
        self._handles: list[Any] = []
        for m in targets.modules:
            for layer in range(targets.n_layers):
                linear = _find_linear(model, m.module_path(layer))
                if (linear.in_features, linear.out_features) != (m.in_features, m.out_features):
                    raise AdapterError(
                        f"{m.module_path(layer)} is {linear.in_features}->{linear.out_features}, "
                        f"the targets say {m.in_features}->{m.out_features}: the adapter was made "
                        "for another base model"
                    )
                self._handles.append(linear.register_forward_hook(self._hook(m.name, layer)))

    def set(self, weights: LoraWeights | None) -> None:
        if weights is not None:
            missing = set(self.targets.module_names) - set(weights.a)
            if missing:
                raise AdapterError(f"LoRA weights lack modules {sorted(missing)}")
        self._weights = weights

    def clear(self) -> None:
        self._weights = None

    def remove(self) -> None:
        """Detach all hooks; the model is the plain base model again."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._weights = None

    def _hook(self, name: str, layer: int) -> Any:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
            w = self._weights
            if w is None:
                return output
            x = inputs[0]
            a = w.a[name][:, layer]  # [B, r, in]
            b = w.b[name][:, layer]  # [B, out, r]
            if a.shape[0] not in (1, x.shape[0]):
                raise AdapterError(
                    f"{a.shape[0]} LoRAs for a batch of {x.shape[0]} examples: give one per "
                    "example, or one for all"
                )
            # same order of operations as PEFT: lora_B(lora_A(x)) * scaling
            lead = x.shape[1:-1]
            xa = x.reshape(x.shape[0], -1, x.shape[-1]) @ a.transpose(-1, -2).to(x.dtype)
            delta = xa @ b.transpose(-1, -2).to(x.dtype)
            delta = delta.reshape(x.shape[0], *lead, delta.shape[-1])
            return output + delta * w.scale

        return hook


@contextmanager
def inject_lora(
    model: nn.Module, targets: TargetSpec, weights: LoraWeights
) -> Iterator[LoraInjector]:
    """``with inject_lora(model, targets, weights): model(...)`` - hooks removed on exit."""
    injector = LoraInjector(model, targets)
    injector.set(weights)
    try:
        yield injector
    finally:
        injector.remove()


def _find_linear(model: nn.Module, path: str) -> nn.Linear:
    for candidate in (path, f"base_model.model.{path}"):
        try:
            sub = model.get_submodule(candidate)
        except AttributeError:
            continue
        base = getattr(sub, "base_layer", sub)  # a PEFT-wrapped Linear keeps the original here
        if isinstance(base, nn.Linear):
            return sub if isinstance(sub, nn.Linear) else base
        raise AdapterError(f"{candidate} is a {type(sub).__name__}, not a linear projection")
    raise AdapterError(f"the model has no module {path}: the targets were made for another model")
