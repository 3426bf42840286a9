"""llama.cpp backend on the real default model: chat, adapters hot-swapped, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lora_files import write_random_lora

from p2p_local.errors import AdapterError, InputError, ModelFormatError
from p2p_local.runtime.base import GenerationSettings
from p2p_local.runtime.llamacpp import LlamaCppBackend, adapter_transport, read_lora_info

pytestmark = pytest.mark.real_model

CAPITAL = [{"role": "user", "content": "Name the capital city of France."}]
STORY = [{"role": "user", "content": "Tell me about your favourite season of the year."}]
GREEDY = GenerationSettings(max_tokens=16, temperature=0.0)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loras")
    return {
        # std 0.2: strong enough that X and Y visibly change the output
        "x": write_random_lora(folder / "x.gguf", seed=1, std=0.2),
        "y": write_random_lora(folder / "y.gguf", seed=2, std=0.2),
        "qwen": write_random_lora(folder / "qwen.gguf", seed=3, arch="qwen2"),
        "narrow": write_random_lora(folder / "narrow.gguf", seed=4, hidden=512),
        "model": write_random_lora(folder / "model.gguf", seed=5, general_type="model"),
    }


def test_answers_a_factual_question(llama_base: LlamaCppBackend) -> None:
    assert llama_base.arch == "llama"
    reply = llama_base.chat(CAPITAL, GREEDY)
    assert "Paris" in reply


def test_stream_pieces_join_to_the_chat_reply(llama_base: LlamaCppBackend) -> None:
    pieces = list(llama_base.stream(STORY, GREEDY))
    assert len(pieces) > 3
    assert "".join(pieces) == llama_base.chat(STORY, GREEDY)


def test_sampling_is_seeded(llama_base: LlamaCppBackend) -> None:
    hot = GenerationSettings(max_tokens=12, temperature=1.0, seed=7)
    first = llama_base.chat(STORY, hot)
    assert llama_base.chat(STORY, hot) == first
    other = llama_base.chat(STORY, GenerationSettings(max_tokens=12, temperature=1.0, seed=8))
    assert other != first


def test_prompt_uses_the_models_chat_template(llama_base: LlamaCppBackend) -> None:
    text = llama_base.apply_chat_template(CAPITAL)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    tokens = llama_base.prompt_tokens(CAPITAL)
    assert tokens.count(1) == 3  # <|im_start|> parsed as one special token, three turns
    assert llama_base.count_tokens("Paris") == len(llama_base.tokenize("Paris"))


def test_eval_logits_predicts_the_greedy_token(llama_base: LlamaCppBackend) -> None:
    prompt = llama_base.prompt_tokens(CAPITAL)
    logits = llama_base.eval_logits(prompt)
    assert logits.shape == (len(prompt), 49152) and logits.dtype == np.float32
    assert int(logits[-1].argmax()) == llama_base.generate_tokens(prompt, 1)[0]
    assert np.array_equal(llama_base.eval_logits(prompt), logits)


def test_hot_swap_x_y_x_equals_a_fresh_load(llama_base: LlamaCppBackend, base_gguf: Path,
                                            adapters: dict[str, Path]) -> None:
    import llama_cpp

    prompt = llama_base.prompt_tokens(STORY)
    base_logits = llama_base.eval_logits(prompt)
    llama_base.set_adapter(adapters["x"])
    x_text, x_logits = llama_base.chat(STORY, GREEDY), llama_base.eval_logits(prompt)
    llama_base.set_adapter(adapters["y"])
    y_text, y_logits = llama_base.chat(STORY, GREEDY), llama_base.eval_logits(prompt)
    llama_base.set_adapter(adapters["x"])
    x2_text, x2_logits = llama_base.chat(STORY, GREEDY), llama_base.eval_logits(prompt)

    assert x_text != y_text and np.abs(x_logits - y_logits).max() > 1.0
    assert np.abs(x_logits - base_logits).max() > 1.0
    assert x2_text == x_text and np.array_equal(x2_logits, x_logits)

    # A fresh model that loads X at start-up (llama-cpp-python's own lora_path route).
    fresh = llama_cpp.Llama(model_path=str(base_gguf), lora_path=str(adapters["x"]),
                            n_ctx=llama_base.n_ctx(), n_threads=llama_base.llm.n_threads,
                            verbose=False)
    try:
        out = fresh.create_completion(prompt=prompt, max_tokens=GREEDY.max_tokens,
                                      temperature=0.0)
        assert out["choices"][0]["text"] == x_text
    finally:
        fresh.close()
    llama_base.set_adapter(None)
    assert np.array_equal(llama_base.eval_logits(prompt), base_logits)


def test_stale_kv_prefix_is_dropped_on_swap(llama_base: LlamaCppBackend,
                                            adapters: dict[str, Path]) -> None:
    # Same prompt right after a swap: llama-cpp-python would reuse the cached prefix if the
    # context were not reset, and Y's reply would be computed partly with X.
    llama_base.set_adapter(adapters["y"])
    y_alone = llama_base.chat(STORY, GREEDY)
    llama_base.set_adapter(adapters["x"])
    llama_base.chat(STORY, GREEDY)
    llama_base.set_adapter(adapters["y"])
    assert llama_base.chat(STORY, GREEDY) == y_alone


def test_adapter_bytes_match_the_file(llama_base: LlamaCppBackend,
                                      adapters: dict[str, Path]) -> None:
    assert adapter_transport() == "fmemopen"  # Linux: the bytes never leave process memory
    prompt = llama_base.prompt_tokens(CAPITAL)
    llama_base.set_adapter(adapters["x"])
    from_file = llama_base.eval_logits(prompt)
    data = adapters["x"].read_bytes()
    for transport in ("fmemopen", "memfd", "tempfile"):
        llama_base.set_adapter_bytes(None)
        llama_base.set_adapter_bytes(data, transport=transport)
        assert llama_base.adapter_source == "<memory>"
        assert np.array_equal(llama_base.eval_logits(prompt), from_file), transport
    llama_base.set_adapter_bytes(adapters["x"].read_bytes(), scale=0.0)
    llama_base.set_adapter_bytes(None)
    assert not llama_base.has_adapter


def test_bad_adapters_raise_adapter_error(llama_base: LlamaCppBackend,
                                          adapters: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="'qwen2' but the base model is 'llama'"):
        llama_base.set_adapter(adapters["qwen"])
    with pytest.raises(AdapterError, match="do not match the base model"):
        llama_base.set_adapter(adapters["narrow"])
    with pytest.raises(AdapterError, match="not a LoRA adapter"):
        llama_base.set_adapter(adapters["model"])
    with pytest.raises(AdapterError, match="does not exist"):
        llama_base.set_adapter(tmp_path / "missing.gguf")
    with pytest.raises(AdapterError, match="not a GGUF"):
        llama_base.set_adapter_bytes(b"not a gguf at all")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(adapters["x"].read_bytes()[:-1000])
    with pytest.raises(AdapterError, match="truncated"):
        llama_base.set_adapter(cut)
    with pytest.raises(AdapterError, match="truncated"):
        llama_base.set_adapter_bytes(cut.read_bytes())
    with pytest.raises(AdapterError, match="do not match the base model"):
        llama_base.set_adapter_bytes(adapters["narrow"].read_bytes())
    assert not llama_base.has_adapter  # failed swaps leave the base model in place
    assert "Paris" in llama_base.chat(CAPITAL, GREEDY)
    assert read_lora_info(adapters["x"]).alpha == 8.0


def test_bad_model_files_raise_model_format_error(base_gguf: Path, adapters: dict[str, Path],
                                                  tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="does not exist"):
        LlamaCppBackend(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(ModelFormatError, match="not a GGUF"):
        LlamaCppBackend(junk)
    cut = tmp_path / "cut.gguf"
    with base_gguf.open("rb") as f:
        cut.write_bytes(f.read(5_000_000))
    with pytest.raises(ModelFormatError, match="truncated"):
        LlamaCppBackend(cut)
    with pytest.raises(ModelFormatError, match="adapter, not a base model"):
        LlamaCppBackend(adapters["x"])


def test_bad_messages_and_closed_backend(base_gguf: Path) -> None:
    backend = LlamaCppBackend(base_gguf, n_ctx=64)
    with pytest.raises(InputError, match="no messages"):
        backend.chat([], GREEDY)
    with pytest.raises(InputError, match="message 0"):
        backend.chat([{"role": "robot", "content": "hi"}], GREEDY)  # type: ignore[list-item]
    with pytest.raises(InputError, match="context window"):
        backend.chat([{"role": "user", "content": "word " * 100}], GREEDY)
    backend.close()
    with pytest.raises(InputError, match="closed"):
        backend.chat(CAPITAL, GREEDY)


def test_a_stream_closed_early_leaves_the_backend_usable(llama_base: LlamaCppBackend) -> None:
    stream = llama_base.stream(STORY, GenerationSettings(max_tokens=400, temperature=0.0))
    first = next(iter(stream))
    stream.close()  # type: ignore[attr-defined]
    assert first and "Paris" in llama_base.chat(CAPITAL, GREEDY)


def test_repeat_penalty_stops_a_greedy_loop(llama_base: LlamaCppBackend) -> None:
    """Greedy, this reply repeats a sentence; the penalty reaches llama.cpp and breaks it."""

    def distinct_share(settings: GenerationSettings) -> float:
        reply = llama_base.chat(STORY, settings)
        tokens = llama_base.tokenize(reply)
        return len(set(tokens)) / len(tokens)

    plain = distinct_share(GenerationSettings(max_tokens=48, temperature=0.0))
    penalized = distinct_share(GenerationSettings(max_tokens=48, temperature=0.0,
                                                  repeat_penalty=1.3))
    assert plain < 0.7 < penalized
