"""p2p-local: on-device LLM personalization with Profile-to-PEFT.

A hypernetwork turns a user's profile (an LLM-written summary of their encrypted history plus
BM25-retrieved items) into LoRA weights in one forward pass. Apps use :class:`Personalizer`.

Heavy submodules (torch, transformers, llama.cpp) load lazily: importing this package is cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# OpenMP threads (torch, llama.cpp) that spin while idle slow everything down several-fold when
# other processes share the cores; waiting passively costs nothing measurable when they don't.
# Set before torch or llama.cpp load; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from p2p_local import errors
from p2p_local.errors import P2PError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from p2p_local.api import Personalizer
    from p2p_local.engine import Engine

__all__ = ["Engine", "Personalizer", "P2PError", "errors", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Personalizer":
        from p2p_local.api import Personalizer

        return Personalizer
    if name == "Engine":
        from p2p_local.engine import Engine

        return Engine
    raise AttributeError(f"module 'p2p_local' has no attribute {name!r}")
