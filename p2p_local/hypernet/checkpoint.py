"""Hypernetwork checkpoints: ``hypernet.safetensors`` + ``hypernet.json`` in one directory.

Owns saving and loading a :class:`HyperNetwork` with the facts that make it usable: the base
model and embedding model it was trained for (ids as the registry writes them,
``<name>@<sha256[:12]>``, and the embedding dimension), its targets, rank, alpha, rsLoRA flag
and sizes. The same config also sits in the safetensors metadata, so the weights file alone
is a complete checkpoint too (a registry entry can be that one file). Loading checks the
weights' sha256 and the safetensors header before allocating, and refuses a checkpoint made for
another base or embedding model, or trained on another profile text format (checkpoints that
predate the record are accepted). A checkpoint also records the profile settings it was trained
with (``profile``: items retrieved, recent items listed...), so profiles built for it match;
one without the record uses the defaults. The checkpoint id is the sha256 prefix of the weights
file.
Does not own training (train/) or where checkpoints are installed (registry).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2p_local.errors import CheckpointError, ConfigError
from p2p_local.hypernet.model import HyperNetSettings, HyperNetwork
from p2p_local.hypernet.targets import TargetSpec
from p2p_local.hypernet.tensorfile import check_safetensors_header, read_safetensors
from p2p_local.profile.builder import PROFILE_FORMAT, ProfileSettings

WEIGHTS_FILE = "hypernet.safetensors"
CONFIG_FILE = "hypernet.json"
FORMAT = "p2p-local-hypernet"
VERSION = 1
MAX_CHECKPOINT_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint was made for, and its identity (sha256 prefix of its weights).

    profile_format:   the profile text format it was trained on (None: unknown).
    profile_settings: how its training profiles were built (None: not recorded, the defaults).
    """

    base_model: str
    embedding_model: str
    embedding_dim: int
    checkpoint_id: str
    path: Path | None = None
    profile_format: int | None = None
    profile_settings: ProfileSettings | None = None

    def profile(self) -> ProfileSettings:
        """The profile settings to build this checkpoint's profiles with."""
        return self.profile_settings or ProfileSettings()


@dataclass
class Checkpoint:
    """A loaded hypernetwork and what it was made for."""

    hypernet: HyperNetwork
    info: CheckpointInfo


def save_checkpoint(
    hypernet: HyperNetwork,
    directory: Path,
    *,
    base_model: str,
    embedding_model: str,
    profile: ProfileSettings | None = None,
    extra: dict[str, Any] | None = None,
) -> CheckpointInfo:
    """Write ``hypernet`` to ``directory`` (created); returns its :class:`CheckpointInfo`.
    ``profile``: the settings its training profiles were built with (recorded when given)."""
    from safetensors.torch import save

    if not base_model or not embedding_model:
        raise CheckpointError("save_checkpoint needs base_model and embedding_model ids")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous().cpu() for k, v in hypernet.state_dict().items()}
    targets = hypernet.targets
    config = {
        "format": FORMAT,
        "version": VERSION,
        "base_model": base_model,
        "embedding_model": embedding_model,
        "embedding_dim": hypernet.settings.embedding_dim,
        "profile_format": PROFILE_FORMAT,
        **({"profile": profile.to_dict()} if profile is not None else {}),
        "rank": targets.rank,
        "alpha": targets.alpha,
        "rslora": targets.rslora,
        "target_modules": list(targets.module_names),
        "targets": targets.to_dict(),
        "settings": hypernet.settings.to_dict(),
        "extra": extra or {},
    }
    data = save(state, metadata={"format": FORMAT, "p2p_config": json.dumps(config)})
    digest = hashlib.sha256(data).hexdigest()
    config["weights_sha256"] = digest
    _write_atomic(directory / WEIGHTS_FILE, data)
    _write_atomic(directory / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    return CheckpointInfo(
        base_model, embedding_model, hypernet.settings.embedding_dim, digest[:16], directory,
        PROFILE_FORMAT, profile,
    )


def read_checkpoint_info(path: Path) -> CheckpointInfo:
    """The recorded facts of a checkpoint (directory or weights file), without loading it."""
    path = Path(path)
    if path.is_file():
        return _info(_file_config(_read_bytes(path), path), path)
    return _info(_read_config(path), path)


def load_checkpoint(
    path: Path,
    *,
    base_model: str | None = None,
    embedding_model: str | None = None,
    embedding_dim: int | None = None,
) -> Checkpoint:
    """Load a checkpoint (its directory, or its weights file alone); refuse it if it was made
    for another base or embedding model (ids as in :class:`CheckpointInfo`)."""
    directory = path = Path(path)
    if path.is_file():
        raw = _read_bytes(path)
        config = _file_config(raw, path)
    else:
        config = _read_config(directory)
        path = directory / WEIGHTS_FILE
        raw = _read_bytes(path)
        if hashlib.sha256(raw).hexdigest() != config.get("weights_sha256"):
            raise CheckpointError(
                f"{path} does not match the sha256 in {CONFIG_FILE}: the checkpoint is corrupt "
                "or was modified; fetch or train it again"
            )
    info = _info(config, directory)
    if base_model is not None and base_model != info.base_model:
        raise CheckpointError(
            f"hypernetwork checkpoint {directory} was trained for base model "
            f"{info.base_model!r}, not {base_model!r}: use a checkpoint trained for this base "
            "model, or switch back to the base model it was trained for"
        )
    if embedding_model is not None and embedding_model != info.embedding_model:
        raise CheckpointError(
            f"hypernetwork checkpoint {directory} expects embeddings from "
            f"{info.embedding_model!r}, not {embedding_model!r}: use the embedding model it was "
            "trained with"
        )
    if info.profile_format is not None and info.profile_format != PROFILE_FORMAT:
        raise CheckpointError(
            f"hypernetwork checkpoint {directory} was trained on profiles of format "
            f"{info.profile_format}; this p2p-local writes format {PROFILE_FORMAT}: use a "
            "checkpoint trained with this version (p2p-local train), or the p2p-local version "
            "it was trained with"
        )
    if embedding_dim is not None and embedding_dim != info.embedding_dim:
        raise CheckpointError(
            f"hypernetwork checkpoint {directory} expects {info.embedding_dim}-dim embeddings, "
            f"got {embedding_dim}: use the embedding model it was trained with"
        )
    try:
        settings = HyperNetSettings.from_dict(config["settings"])
        targets = TargetSpec.from_dict(config["targets"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {directory} has an invalid config ({exc}): train or fetch it again"
        ) from None
    if settings.embedding_dim != info.embedding_dim:
        raise CheckpointError(f"checkpoint {directory} is inconsistent (embedding_dim)")

    hypernet = HyperNetwork(settings, targets)
    expected = {k: tuple(v.shape) for k, v in hypernet.state_dict().items()}
    tensor_file = read_safetensors(raw, f"checkpoint {path}", CheckpointError, expected=expected)
    hypernet.load_state_dict(tensor_file.tensors, strict=True)
    hypernet.eval()
    return Checkpoint(hypernet, info)


# --- helpers -------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(
                f"{path} is {size} bytes: too large for a hypernetwork checkpoint"
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(
            f"no hypernetwork checkpoint at {path}: pass a directory holding "
            f"{WEIGHTS_FILE} and {CONFIG_FILE}"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None


def _file_config(raw: bytes, path: Path) -> dict[str, Any]:
    """The config kept in a weights file's metadata, with the file's own sha256."""
    header = check_safetensors_header(raw, f"checkpoint {path}", CheckpointError)
    if "p2p_config" not in header.metadata:
        raise CheckpointError(
            f"{path} is not a p2p-local hypernetwork checkpoint (no config in its metadata)"
        )
    config = _parse_config(header.metadata["p2p_config"].encode(), path)
    config["weights_sha256"] = hashlib.sha256(raw).hexdigest()
    return config


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    return _parse_config(_read_bytes(path), path)


def _parse_config(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{path} is not valid JSON ({exc}): the checkpoint is corrupt"
        ) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a p2p-local hypernetwork checkpoint config")
    if config.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has format version {config.get('version')!r}; this p2p-local reads "
            f"version {VERSION}: upgrade p2p-local or use a matching checkpoint"
        )
    return config


def _info(config: dict[str, Any], directory: Path) -> CheckpointInfo:
    try:
        return CheckpointInfo(
            base_model=str(config["base_model"]),
            embedding_model=str(config["embedding_model"]),
            embedding_dim=int(config["embedding_dim"]),
            checkpoint_id=str(config["weights_sha256"])[:16],
            path=directory,
            profile_format=(int(config["profile_format"])
                            if config.get("profile_format") is not None else None),
            profile_settings=(ProfileSettings.from_dict(config["profile"])
                              if isinstance(config.get("profile"), dict) else None),
        )
    except ConfigError as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: bad profile settings: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{directory / CONFIG_FILE} lacks {exc}: the checkpoint is corrupt"
        ) from None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
