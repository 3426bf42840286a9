"""The engine's context policy on the real default model: a kept context evaluates only the new
turn of a conversation; otherwise, or after an adapter swap, every reply starts empty."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2p_local.engine import Engine
from p2p_local.runtime import AdapterPayload
from p2p_local.runtime.base import GenerationSettings
from p2p_local.runtime.llamacpp import LlamaCppBackend, decode_calls

pytestmark = pytest.mark.real_model

GREEDY = GenerationSettings(max_tokens=12, temperature=0.0)
FIRST = [
    {"role": "system", "content": "You are a patient cooking teacher. " * 8},
    {"role": "user", "content": "How long should I boil an egg for a soft yolk?"},
]


@pytest.fixture
def counted(llama_base: LlamaCppBackend) -> Iterator[tuple[Engine, list[int]]]:
    """An engine over the session's backend, and the tokens each decode call evaluates."""
    llama_base.reset()
    try:
        with decode_calls(llama_base) as evaluated:
            yield Engine.from_backend(llama_base), evaluated
    finally:
        llama_base.reset()


def _second_turn(first_answer: str) -> list[dict[str, str]]:
    return [*FIRST, {"role": "assistant", "content": first_answer},
            {"role": "user", "content": "And for a hard yolk?"}]


@pytest.mark.parametrize("keep", [True, False])
def test_kept_context_evaluates_only_the_new_turn(counted, llama_base, keep: bool) -> None:
    engine, evaluated = counted
    answer = engine.chat(FIRST, GREEDY, keep_context=keep)
    second = _second_turn(answer)
    full = len(llama_base.prompt_tokens(second))
    evaluated.clear()
    engine.chat(second, GREEDY, keep_context=keep)
    prompt_part = evaluated[0]  # the first decode call takes the (uncached part of the) prompt
    if keep:
        # the system prompt and the first exchange came from the cache
        assert prompt_part < full - len(llama_base.prompt_tokens(FIRST)) + 8
    else:
        assert prompt_part == full


def test_the_context_is_dropped_on_an_adapter_swap(counted, llama_base, tmp_path: Path) -> None:
    from runtime.lora_files import write_random_lora

    engine, evaluated = counted
    path = write_random_lora(tmp_path / "x.gguf", seed=1, std=0.2)
    adapter = AdapterPayload(key="x", gguf_bytes=path.read_bytes())
    answer = engine.chat(FIRST, GREEDY, keep_context=True)
    second = _second_turn(answer)
    evaluated.clear()
    engine.chat(second, GREEDY, adapter=adapter, keep_context=True)
    assert evaluated[0] == len(llama_base.prompt_tokens(second))
