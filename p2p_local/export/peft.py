"""PEFT LoRA adapters: the exact directory ``PeftModel.from_pretrained`` loads, and back.

Owns the PEFT form of a :class:`~p2p_local.adapter.LoraAdapter`: ``adapter_config.json``
(``peft_type: LORA``, ``r``, ``lora_alpha``, ``use_rslora``, ``target_modules``, ...) and
``adapter_model.safetensors`` with keys ``base_model.model.<module path>.lora_A.weight``
(r x in) / ``.lora_B.weight`` (out x r); the in-memory config + state dict for the
transformers backend; a single-blob bundle of the directory (for encrypted exports); and
importing a PEFT directory safely (no pickle, safetensors header checked before allocating).
Does not own encryption (store/sealed.py) or GGUF (gguf.py).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from p2p_local.adapter import LoraAdapter
from p2p_local.errors import AdapterError, ConfigError
from p2p_local.hypernet.targets import TargetModule, TargetSpec
from p2p_local.hypernet.tensorfile import check_safetensors_header, read_safetensors, refuse_pickle

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAMES = ("adapter_model.bin", "adapter_model.pt", "pytorch_model.bin")
MAX_PEFT_BYTES = 512 * 1024 * 1024
_PREFIX = "base_model.model."
_KEY = re.compile(
    r"^base_model\.model\.(?P<pre>.+\.)(?P<layer>\d+)\.(?P<rest>.+)\.lora_(?P<ab>[AB])\.weight$"
)


def peft_config(adapter: LoraAdapter, base_model_name_or_path: str | None = None) -> dict[str, Any]:
    """The content of ``adapter_config.json`` (a plain JSON-able dict)."""
    t = adapter.targets
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path or adapter.base_model or None,
        "r": t.rank,
        "lora_alpha": t.alpha,
        "use_rslora": t.rslora,
        "target_modules": list(t.module_names),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_to_transform": None,
        "modules_to_save": None,
        "use_dora": False,
    }


def peft_state_dict(adapter: LoraAdapter) -> dict[str, Tensor]:
    """PEFT's saved keys -> tensors (lora_A: r x in, lora_B: out x r), float32 contiguous."""
    state: dict[str, Tensor] = {}
    for m in adapter.targets.modules:
        for layer in range(adapter.targets.n_layers):
            key = _PREFIX + m.module_path(layer)
            state[f"{key}.lora_A.weight"] = adapter.a[m.name][layer].contiguous()
            state[f"{key}.lora_B.weight"] = adapter.b[m.name][layer].contiguous()
    return state


def peft_files(
    adapter: LoraAdapter, base_model_name_or_path: str | None = None
) -> dict[str, bytes]:
    """The two files of the PEFT directory, as bytes."""
    from safetensors.torch import save

    meta = {"format": "pt", "p2p_targets": json.dumps(adapter.targets.to_dict())}
    if adapter.checkpoint_id:
        meta["p2p_checkpoint_id"] = adapter.checkpoint_id
    config = peft_config(adapter, base_model_name_or_path)
    return {
        CONFIG_NAME: (json.dumps(config, indent=2, sort_keys=True) + "\n").encode(),
        WEIGHTS_NAME: save(peft_state_dict(adapter), metadata=meta),
    }


def save_peft(
    adapter: LoraAdapter, directory: Path, base_model_name_or_path: str | None = None
) -> Path:
    """Write a plaintext PEFT adapter directory (created); returns it."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise AdapterError(f"{directory} is a file: give a directory for a PEFT export")
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in peft_files(adapter, base_model_name_or_path).items():
        (directory / name).write_bytes(data)
    return directory


def peft_bundle(adapter: LoraAdapter, base_model_name_or_path: str | None = None) -> bytes:
    """The PEFT directory as one uncompressed tar (the plaintext of an encrypted export)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in peft_files(adapter, base_model_name_or_path).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- import ----------------------------------------------------------------------------------


def load_peft(directory: Path, targets: TargetSpec | None = None) -> LoraAdapter:
    """Import a plaintext PEFT LoRA directory; pickle weights are refused.

    With ``targets`` (the base model's layout) every tensor name and shape must match them;
    without, the layout is taken from the file (recorded targets, else the tensor names).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise AdapterError(f"{directory} is not a PEFT adapter directory")
    for name in PICKLE_NAMES:
        if (directory / name).exists() and not (directory / WEIGHTS_NAME).exists():
            raise AdapterError(
                f"{directory / name} is a pickle file: refusing to load it (pickle can run code); "
                "re-save the adapter with safe_serialization=True"
            )
    files: dict[str, bytes] = {}
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        path = directory / name
        if not path.is_file():
            raise AdapterError(f"{path} is missing: not a PEFT adapter directory")
        if path.stat().st_size > MAX_PEFT_BYTES:
            raise AdapterError(f"{path} is too large for a LoRA adapter")
        files[name] = path.read_bytes()
    return _adapter_from_files(files, str(directory), targets)


def load_peft_bundle(data: bytes, targets: TargetSpec | None = None) -> LoraAdapter:
    """Import the tar bundle written by :func:`peft_bundle` (members checked first)."""
    refuse_pickle(data[:8], "adapter bundle", AdapterError)
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar.getmembers():
                if member.name not in (CONFIG_NAME, WEIGHTS_NAME) or not member.isreg():
                    raise AdapterError(f"unexpected entry {member.name!r} in an adapter bundle")
                if member.size > MAX_PEFT_BYTES or member.name in files:
                    raise AdapterError(f"invalid entry {member.name!r} in an adapter bundle")
                fh = tar.extractfile(member)
                assert fh is not None
                files[member.name] = fh.read()
    except tarfile.TarError as exc:
        raise AdapterError(f"the adapter bundle is corrupt ({exc})") from None
    if set(files) != {CONFIG_NAME, WEIGHTS_NAME}:
        raise AdapterError("the adapter bundle is incomplete: export it again")
    return _adapter_from_files(files, "adapter bundle", targets)


def _adapter_from_files(
    files: dict[str, bytes], where: str, targets: TargetSpec | None
) -> LoraAdapter:
    try:
        config = json.loads(files[CONFIG_NAME].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{where}: {CONFIG_NAME} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise AdapterError(f"{where}: not a LoRA adapter (peft_type={config.get('peft_type')!r})")
    for key, bad in (("use_dora", True), ("fan_in_fan_out", True)):
        if config.get(key) == bad:
            raise AdapterError(f"{where}: {key}={bad} adapters are not supported")
    if config.get("bias", "none") != "none":
        raise AdapterError(f"{where}: LoRA bias={config.get('bias')!r} is not supported")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise AdapterError(f"{where}: per-module rank/alpha patterns are not supported")
    try:
        rank, alpha = int(config["r"]), float(config["lora_alpha"])
        rslora = bool(config.get("use_rslora", False))
    except (KeyError, TypeError, ValueError) as exc:
        raise AdapterError(f"{where}: {CONFIG_NAME} lacks a valid {exc}") from None

    weights = files[WEIGHTS_NAME]
    header = check_safetensors_header(weights, f"{where}/{WEIGHTS_NAME}", AdapterError)
    if targets is None:
        targets = _targets_from_header(header.metadata, header.shapes, rank, alpha, rslora, where)
    elif (targets.rank, float(targets.alpha), targets.rslora) != (rank, alpha, rslora):
        targets = TargetSpec(
            targets.modules,
            targets.n_layers,
            rank,
            alpha,
            rslora,
            targets.model_type,
            targets.n_head,
            targets.n_head_kv,
        )
    expected: dict[str, tuple[int, ...]] = {}
    for m in targets.modules:
        for layer in range(targets.n_layers):
            key = _PREFIX + m.module_path(layer)
            expected[f"{key}.lora_A.weight"] = (rank, m.in_features)
            expected[f"{key}.lora_B.weight"] = (m.out_features, rank)
    tf = read_safetensors(
        weights,
        f"{where}/{WEIGHTS_NAME}",
        AdapterError,
        expected=expected,
        max_bytes=MAX_PEFT_BYTES,
    )
    a: dict[str, Tensor] = {}
    b: dict[str, Tensor] = {}
    for m in targets.modules:
        keys = [_PREFIX + m.module_path(layer) for layer in range(targets.n_layers)]
        a[m.name] = torch.stack([tf.tensors[f"{k}.lora_A.weight"] for k in keys])
        b[m.name] = torch.stack([tf.tensors[f"{k}.lora_B.weight"] for k in keys])
    return LoraAdapter(
        targets,
        a,
        b,
        base_model=str(config.get("base_model_name_or_path") or ""),
        checkpoint_id=header.metadata.get("p2p_checkpoint_id", ""),
    )


def _targets_from_header(
    meta: dict[str, str],
    shapes: dict[str, tuple[int, ...]],
    rank: int,
    alpha: float,
    rslora: bool,
    where: str,
) -> TargetSpec:
    if "p2p_targets" in meta:
        try:
            recorded = TargetSpec.from_dict(json.loads(meta["p2p_targets"]))
        except (ValueError, ConfigError) as exc:
            raise AdapterError(f"{where}: invalid recorded targets ({exc})") from None
        return TargetSpec(
            recorded.modules,
            recorded.n_layers,
            rank,
            alpha,
            rslora,
            recorded.model_type,
            recorded.n_head,
            recorded.n_head_kv,
        )
    # infer the layout from the tensor names: <prefix><layer>.<rest>.lora_{A,B}.weight
    found: dict[str, dict[int, tuple[int, ...]]] = {}
    templates: dict[str, str] = {}
    for key, shape in shapes.items():
        match = _KEY.match(key)
        if match is None:
            raise AdapterError(f"{where}: unexpected tensor {key!r} in a LoRA adapter")
        name = match["rest"].rsplit(".", 1)[-1]
        templates.setdefault(name, f"{match['pre']}{{layer}}.{match['rest']}")
        layer = int(match["layer"])
        dims = found.setdefault(name, {}).get(layer, (0, 0))
        if match["ab"] == "A":
            found[name][layer] = (shape[1], dims[1])
        else:
            found[name][layer] = (dims[0], shape[0])
    modules = []
    n_layers = 0
    try:
        for name, layers in found.items():
            n_layers = max(n_layers, len(layers))
            module_dims = set(layers.values())
            if len(module_dims) != 1 or sorted(layers) != list(range(len(layers))):
                raise AdapterError(f"{where}: module {name!r} is not in every layer uniformly")
            fan_in, fan_out = module_dims.pop()
            modules.append(TargetModule(name, templates[name], fan_in, fan_out))
        return TargetSpec(tuple(modules), n_layers, rank, alpha, rslora, model_type="unknown")
    except ConfigError as exc:
        raise AdapterError(f"{where}: {exc}") from None
