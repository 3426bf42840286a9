"""The contract every chat backend meets.

Owns the message and generation-settings types and the :class:`ChatBackend` protocol. The
profile summarizer, the baselines and the chat shell depend on this protocol only, never on a
concrete backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, TypedDict

from p2p_local.errors import ConfigError, InputError


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode.

    max_tokens:  upper bound on new tokens (1..8192).
    temperature: 0 means greedy; otherwise sampling temperature.
    top_p:       nucleus sampling mass (used only when temperature > 0).
    seed:        sampling seed, for repeatable sampled output.
    repeat_penalty: 1.0 = off; above 1, the logits of tokens already in the context are
                 divided by it (positive) or multiplied (negative), so small models loop less
                 (llama.cpp's ``repeat_penalty`` over its last 64 tokens, transformers'
                 ``repetition_penalty`` over the whole context).
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.95
    seed: int = 0
    repeat_penalty: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_tokens <= 8192:
            raise ConfigError(f"max_tokens must be in 1..8192, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 5.0:
            raise ConfigError(f"temperature must be in 0..5, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        penalty = self.repeat_penalty
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not (
            1.0 <= penalty <= 2.0
        ):
            raise ConfigError(
                f"repeat_penalty must be in 1..2 (1 = off, 1.1 is a common choice), "
                f"got {penalty!r}"
            )

    def cache_key(self) -> dict[str, object]:
        """The fields as a dict for cache keys; ``repeat_penalty`` only when it is on, so
        answers cached before it existed keep their keys."""
        key = dict(self.__dict__)
        if key["repeat_penalty"] == 1.0:
            del key["repeat_penalty"]
        return key


class ChatBackend(Protocol):
    """A loaded base model that can chat, with an optional LoRA adapter applied."""

    name: str

    def chat(self, messages: list[Message], settings: GenerationSettings) -> str:
        """The assistant's full reply."""
        ...

    def stream(self, messages: list[Message], settings: GenerationSettings) -> Iterator[str]:
        """The assistant's reply, piece by piece."""
        ...

    def n_ctx(self) -> int:
        """Context window in tokens."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` under this model's tokenizer."""
        ...

    def close(self) -> None:
        """Free the model's memory; the backend is unusable afterwards."""
        ...


ROLES = ("system", "user", "assistant")


def check_messages(messages: list[Message]) -> None:
    """Raise :class:`InputError` unless ``messages`` is a non-empty list of role/content dicts."""
    if not messages:
        raise InputError("no messages: give at least one user message")
    for i, m in enumerate(messages):
        if (not isinstance(m, dict) or m.get("role") not in ROLES
                or not isinstance(m.get("content"), str)):
            raise InputError(
                f"message {i} must be {{'role': one of {ROLES}, 'content': str}}, got {m!r}"
            )
