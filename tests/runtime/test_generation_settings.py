"""Decoding settings: defaults and validation (no model needed)."""

from __future__ import annotations

import pytest

from p2p_local.errors import ConfigError
from p2p_local.runtime.base import GenerationSettings


def test_defaults_are_plain_greedy() -> None:
    s = GenerationSettings()
    assert (s.temperature, s.repeat_penalty) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("max_tokens", 0, "max_tokens must be in 1..8192"),
     ("temperature", -0.1, "temperature must be in 0..5"),
     ("top_p", 0.0, "top_p must be in"),
     ("repeat_penalty", 0.9, "repeat_penalty must be in 1..2"),
     ("repeat_penalty", 2.5, "repeat_penalty must be in 1..2")],
)
def test_out_of_range_values_are_refused(field: str, value: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GenerationSettings(**{field: value})


def test_a_penalty_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ConfigError, match="repeat_penalty must be in 1..2"):
        GenerationSettings(repeat_penalty="1.1")  # type: ignore[arg-type]


def test_cache_key_names_the_penalty_only_when_it_is_on() -> None:
    assert GenerationSettings(max_tokens=8).cache_key() == {
        "max_tokens": 8, "temperature": 0.0, "top_p": 0.95, "seed": 0}
    assert GenerationSettings(repeat_penalty=1.1).cache_key()["repeat_penalty"] == 1.1
