"""Users on the real default models for multi-user tests (server, threads): a hypernetwork for
the default base model with random non-zero heads, so each user's adapter is real and depends on
their profile, and Personalizers made from short histories on one shared engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def random_checkpoint(directory: Path, embedding_model: str, seed: int = 0) -> Path:
    """Save a randomly initialised hypernetwork (heads scaled to 0.01) for the default base."""
    import torch

    from p2p_local.hypernet.checkpoint import save_checkpoint
    from p2p_local.hypernet.model import HyperNetSettings, HyperNetwork
    from p2p_local.hypernet.targets import TargetSpec
    from p2p_local.registry import load_registry

    registry = load_registry(user=False)
    base = registry.get("base")
    torch.manual_seed(seed)
    net = HyperNetwork(HyperNetSettings(), TargetSpec.from_gguf(registry.path("base")))
    net.randomize_heads(seed=seed, weight_std=0.01)
    save_checkpoint(net, directory, base_model=f"{base.name}@{base.sha256[:12]}",
                    embedding_model=embedding_model)
    return directory


def create_users(engine: Any, histories: Mapping[str, Sequence[str]], passphrase: str,
                 checkpoint: Path) -> dict[str, Any]:
    """One unlocked Personalizer per name, on ``engine``, with its history and the checkpoint
    (cheap KDF; 16-token summaries). Adapters are built lazily, on first use."""
    from p2p_local.api import Personalizer
    from p2p_local.profile.summarize import SummarySettings
    from p2p_local.store.records import HistoryItem

    users = {}
    for name, texts in histories.items():
        person = Personalizer.create(name, passphrase, kdf=cheap_kdf(), engine=engine)
        person.add_items(HistoryItem(text=t, kind="text") for t in texts)
        person.configure_profile(summary_settings=SummarySettings(max_tokens=16))
        person.configure_adapter(checkpoint=checkpoint)
        users[name] = person
    return users


def cheap_kdf() -> Any:
    """Argon2 settings cheap enough for tests (never for real vaults)."""
    from p2p_local.store._crypto import KdfParams

    return KdfParams(memory_kib=64, iterations=1, lanes=1)
