"""transformers backend on the real default model: chat, PEFT adapters, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from p2p_local.errors import AdapterError, InputError, ModelFormatError
from p2p_local.runtime import AdapterPayload, apply_adapter
from p2p_local.runtime.base import GenerationSettings
from p2p_local.runtime.hf import HFBackend

pytestmark = pytest.mark.real_model

CAPITAL = [{"role": "user", "content": "Name the capital city of France."}]
STORY = [{"role": "user", "content": "Tell me about your favourite season of the year."}]
GREEDY = GenerationSettings(max_tokens=16, temperature=0.0)
CONFIG = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
          "task_type": "CAUSAL_LM", "bias": "none", "use_rslora": False}


def _lora(seed: int, *, in_dim: int = 576, std: float = 0.05) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for i in range(30):
        for module, rows in (("q_proj", 576), ("v_proj", 192)):
            key = f"base_model.model.model.layers.{i}.self_attn.{module}"
            out[f"{key}.lora_A.weight"] = torch.randn(4, in_dim, generator=g) * std
            out[f"{key}.lora_B.weight"] = torch.randn(rows, 4, generator=g) * std
    return out


def test_answers_a_factual_question(hf_base: HFBackend) -> None:
    assert hf_base.arch == "llama" and hf_base.model.dtype == torch.float32
    assert "Paris" in hf_base.chat(CAPITAL, GREEDY)


def test_stream_pieces_join_to_the_chat_reply(hf_base: HFBackend) -> None:
    pieces = list(hf_base.stream(STORY, GREEDY))
    assert len(pieces) > 3
    assert "".join(pieces).strip() == hf_base.chat(STORY, GREEDY).strip()


def test_sampling_is_seeded(hf_base: HFBackend) -> None:
    hot = GenerationSettings(max_tokens=8, temperature=1.0, seed=3)
    first = hf_base.chat(STORY, hot)
    assert hf_base.chat(STORY, hot) == first
    other = hf_base.chat(STORY, GenerationSettings(max_tokens=8, temperature=1.0, seed=4))
    assert other != first


def test_in_memory_adapter_applies_and_is_removed_exactly(hf_base: HFBackend,
                                                          tmp_path: Path) -> None:
    prompt = hf_base.prompt_tokens(CAPITAL)
    base = hf_base.eval_logits(prompt)
    hf_base.set_adapter_weights(CONFIG, _lora(1))
    assert hf_base.has_adapter and hf_base.adapter_source == "<memory>"
    with_x = hf_base.eval_logits(prompt)
    assert np.abs(with_x - base).max() > 0.1
    hf_base.model.save_pretrained(tmp_path / "x")  # a PEFT folder, as PEFT writes it

    hf_base.set_adapter_weights(CONFIG, _lora(2))  # same config: weights replaced in place
    assert np.abs(hf_base.eval_logits(prompt) - with_x).max() > 0.1
    hf_base.set_adapter(None)
    assert np.array_equal(hf_base.eval_logits(prompt), base)
    assert not hasattr(hf_base.base_model, "peft_config")

    hf_base.set_adapter(tmp_path / "x")
    assert np.array_equal(hf_base.eval_logits(prompt), with_x)


def test_apply_adapter_skips_an_adapter_already_applied(hf_base: HFBackend, llama_base) -> None:
    payload = AdapterPayload(key="x", peft_config=CONFIG, state_dict=_lora(1))
    apply_adapter(hf_base, payload)
    module = hf_base.model
    apply_adapter(hf_base, payload)
    assert hf_base.model is module and hf_base.adapter_source == "payload:x"
    with pytest.raises(AdapterError, match="GGUF form"):
        apply_adapter(llama_base, payload)
    apply_adapter(hf_base, None)
    assert not hf_base.has_adapter


def test_bad_adapters_raise_adapter_error(hf_base: HFBackend, tmp_path: Path) -> None:
    prompt = hf_base.prompt_tokens(CAPITAL)
    base = hf_base.eval_logits(prompt)
    with pytest.raises(AdapterError, match="do not fit"):
        hf_base.set_adapter_weights(CONFIG, _lora(1, in_dim=512))
    with pytest.raises(AdapterError, match="cannot build"):
        hf_base.set_adapter_weights({**CONFIG, "target_modules": ["nope_proj"]}, _lora(1))
    with pytest.raises(AdapterError, match="do not match"):
        hf_base.set_adapter_weights({**CONFIG, "target_modules": ["q_proj"]}, _lora(1))
    with pytest.raises(AdapterError, match="adapter_config.json"):
        hf_base.set_adapter(tmp_path)
    assert not hf_base.has_adapter
    assert np.array_equal(hf_base.eval_logits(prompt), base)


def test_bad_model_paths_raise_model_format_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="does not exist"):
        HFBackend(tmp_path / "missing.gguf")
    with pytest.raises(ModelFormatError, match="config.json"):
        HFBackend(tmp_path)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x00" * 100)
    with pytest.raises(ModelFormatError):
        HFBackend(junk)


def test_bad_messages(hf_base: HFBackend) -> None:
    with pytest.raises(InputError, match="no messages"):
        hf_base.chat([], GREEDY)
    with pytest.raises(InputError, match="message 0"):
        hf_base.chat([{"role": "user", "content": 3}], GREEDY)  # type: ignore[list-item]


def test_a_stream_closed_early_stops_and_frees_the_model(hf_base: HFBackend) -> None:
    stream = hf_base.stream(STORY, GenerationSettings(max_tokens=400, temperature=0.0))
    first = next(iter(stream))
    stream.close()  # type: ignore[attr-defined]
    assert first and "Paris" in hf_base.chat(CAPITAL, GREEDY)


def test_a_transformers_folder_loads_and_answers_like_its_gguf(
    hf_base: HFBackend, base_gguf: Path, tmp_path: Path
) -> None:
    """A user's own HF model folder (config.json + safetensors + tokenizer) is a base model too:
    the default GGUF written out as such a folder answers exactly as the GGUF does."""
    from p2p_local.runtime.hf import convert_gguf

    folder = convert_gguf(base_gguf, tmp_path / "smollm2-folder")
    assert (folder / "config.json").is_file()
    backend = HFBackend(folder, device="cpu")
    try:
        assert backend.arch == "llama"
        reply = backend.chat(CAPITAL, GREEDY)
        assert "Paris" in reply
        assert reply == hf_base.chat(CAPITAL, GREEDY)
    finally:
        backend.close()


def test_repeat_penalty_stops_a_greedy_loop(hf_base: HFBackend) -> None:
    """Greedy, this reply repeats itself; transformers' repetition_penalty breaks the loop."""

    def distinct_share(settings: GenerationSettings) -> float:
        tokens = hf_base.tokenize(hf_base.chat(STORY, settings))
        return len(set(tokens)) / len(tokens)

    plain = distinct_share(GenerationSettings(max_tokens=48, temperature=0.0))
    penalized = distinct_share(GenerationSettings(max_tokens=48, temperature=0.0,
                                                  repeat_penalty=1.3))
    assert plain < 0.85 and penalized > plain + 0.1
