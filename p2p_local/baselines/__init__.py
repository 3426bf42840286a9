"""The methods P2P is compared with, and P2P itself, under one registry of names.

Owns :data:`METHODS` (name -> class, in the order tables list them) and :func:`create`. The
contract and the shared environment live in ``common.py``, the prompt in ``prompts.py``, each
method in its own module: ``base`` (no personalization), ``rag``, ``pag``, ``full_history``,
``mt_lora``, ``oppu``, ``p2p`` (P2P and its ablations). Reads the other stages; nothing in the
personalization path imports it.
"""

from __future__ import annotations

from p2p_local.baselines.base import Base
from p2p_local.baselines.common import (
    EvalEnv,
    Method,
    MethodSettings,
    MethodSpec,
    Plan,
)
from p2p_local.baselines.full_history import FullHistory
from p2p_local.baselines.mt_lora import MTLoRA
from p2p_local.baselines.oppu import OPPU
from p2p_local.baselines.p2p import (
    P2P,
    P2PPerQuery,
    P2PPerQueryShuffled,
    P2PRandom,
    P2PRetrievalOnly,
    P2PShuffled,
    P2PSummaryOnly,
)
from p2p_local.baselines.pag import PAG
from p2p_local.baselines.rag import RAG
from p2p_local.errors import ConfigError

METHODS: dict[str, type[Method]] = {
    cls.spec.name: cls
    for cls in (Base, RAG, PAG, FullHistory, MTLoRA, OPPU, P2P, P2PPerQuery, P2PShuffled,
                P2PPerQueryShuffled, P2PRandom, P2PSummaryOnly, P2PRetrievalOnly)
}
PROMPT_METHODS = ("base", "rag", "pag", "full-history")
P2P_METHODS = ("p2p", "p2p-per-query", "p2p-shuffled", "p2p-per-query-shuffled", "p2p-random",
               "p2p-summary-only", "p2p-retrieval-only")

__all__ = [
    "METHODS",
    "P2P_METHODS",
    "PROMPT_METHODS",
    "EvalEnv",
    "Method",
    "MethodSettings",
    "MethodSpec",
    "Plan",
    "create",
    "parse_methods",
]


def parse_methods(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """Method names from a comma-separated list (or a list); ``all`` = every method.

    Keeps the registry's order and drops repeats; unknown names raise ConfigError."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = [p.strip() for p in parts if p.strip()]
    if not names:
        raise ConfigError(f"no methods given: choose from {', '.join(METHODS)}")
    if "all" in names:
        return list(METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ConfigError(
            f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(METHODS)} or all"
        )
    return [n for n in METHODS if n in names]


def create(name: str, env: EvalEnv) -> Method:
    """A method by name, bound to ``env``."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}: choose from {', '.join(METHODS)}")
    return METHODS[name](env)
