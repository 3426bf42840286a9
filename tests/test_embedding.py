"""Embedders: unit-norm float32, deterministic, history-sensitive, with a recorded model id."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from p2p_local.embedding import Embedder, HiddenStateEmbedder, fingerprint, load_embedder
from p2p_local.errors import ConfigError, ModelFormatError
from p2p_local.profile.builder import build_profile
from p2p_local.store.records import HistoryItem

DATA = Path(__file__).parent / "profile" / "data"


def _items(name: str) -> list[HistoryItem]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [HistoryItem.from_dict(json.loads(line)) for line in lines if line.strip()]


def _assert_unit_float32(vectors: np.ndarray, dim: int, n: int) -> None:
    assert vectors.dtype == np.float32 and vectors.shape == (n, dim)
    np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float64), axis=1), 1.0, atol=1e-6)


# --- the default sentence-transformers model (real MiniLM) ----------------------------------


@pytest.mark.real_model
def test_minilm_vectors_are_unit_norm_float32_and_deterministic(embedder: Embedder) -> None:
    texts = [build_profile(_items("reviews.jsonl"), query="tent").text, "short text", "é ü 字"]
    first = embedder.embed(texts)
    _assert_unit_float32(first, 384, 3)
    assert embedder.dim == 384
    np.testing.assert_array_equal(embedder.embed(texts), first)  # bit for bit
    single = embedder.embed_one(texts[1])
    np.testing.assert_allclose(single, first[1], atol=1e-5)  # batching changes float bits only
    assert fingerprint(first[0]) == fingerprint(embedder.embed(texts)[0])


@pytest.mark.real_model
def test_different_histories_give_different_vectors(embedder: Embedder) -> None:
    reviews, notes = _items("reviews.jsonl"), _items("notes.jsonl")
    query = "what should I write about this evening?"
    a = build_profile(reviews, query=query).text
    b = build_profile(notes, query=query).text
    va, vb = embedder.embed([a, b])
    assert float(va @ vb) < 0.9
    # One item more changes the vector too, a little.
    grown = build_profile([*reviews, HistoryItem(text="Cheap umbrella broke in wind.", score=1)])
    v_old, v_new = embedder.embed([build_profile(reviews).text, grown.text])
    assert 0.5 < float(v_old @ v_new) < 1.0 - 1e-6


@pytest.mark.real_model
def test_retrieved_items_at_the_end_of_a_long_profile_reach_the_vector(embedder) -> None:
    summary = " ".join(
        ["This user writes careful, detailed reviews and weighs durability over price."] * 8
    )
    items = _items("reviews.jsonl")
    a = build_profile(items, summary=summary, query="tent leaked in the rain").text
    b = build_profile(items, summary=summary, query="espresso grinder noise").text
    assert embedder.count_tokens(a) > 256  # past MiniLM's own window
    va, vb = embedder.embed([a, b])
    assert float(va @ vb) < 1.0 - 1e-4


@pytest.mark.real_model
def test_model_id_is_the_registry_name_and_hash_however_loaded(
    embedder: Embedder, embedding_dir: Path
) -> None:
    # Registry name, 12 hex digits of the content hash, and the non-default window.
    assert embedder.model_id.startswith("all-minilm-l6-v2@")
    assert embedder.model_id.endswith("+len512") and len(embedder.model_id) == 36
    assert embedder.path == embedding_dir
    assert embedder.max_seq_length == 512
    assert embedder.count_tokens("hello world") == 4  # [CLS] hello world [SEP]


@pytest.mark.real_model
def test_embed_input_is_checked(embedder: Embedder) -> None:
    assert embedder.embed([]).shape == (0, 384)
    with pytest.raises(ConfigError, match="list of texts"):
        embedder.embed("one string")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"texts\[1\]"):
        embedder.embed(["ok", 3])  # type: ignore[list-item]


def test_folder_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="not a sentence-transformers folder"):
        Embedder(tmp_path)
    with pytest.raises(ModelFormatError, match="does not exist"):
        load_embedder(f"hidden:{tmp_path / 'missing.gguf'}")


# --- hidden-state embedder -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama(embedding_dir: Path):
    """A 2-layer random Llama (real transformers code) with MiniLM's WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(embedding_dir)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    )
    return LlamaModel(config), tokenizer


def test_hidden_state_vectors_ignore_padding_and_are_unit_norm(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    emb = HiddenStateEmbedder(model, tokenizer, model_id="tiny-llama:mean-last-hidden")
    texts = ["a short one", "a much longer text " * 12, "a short one"]
    vectors = emb.embed(texts)
    _assert_unit_float32(vectors, 32, 3)
    np.testing.assert_allclose(vectors[0], emb.embed_one("a short one"), atol=1e-5)
    np.testing.assert_array_equal(vectors, emb.embed(texts))
    assert float(vectors[0] @ vectors[1]) < 0.999
    with pytest.raises(ConfigError, match="model_id"):
        HiddenStateEmbedder(model, tokenizer, model_id="")


@pytest.mark.real_model
def test_base_model_hidden_states_as_embedder(hf_base) -> None:
    emb = HiddenStateEmbedder(
        hf_base.base_model, hf_base.tokenizer, model_id="smollm2:mean-last-hidden"
    )
    a = build_profile(_items("reviews.jsonl")).text
    b = build_profile(_items("notes.jsonl")).text
    vectors = emb.embed([a, b])
    _assert_unit_float32(vectors, 576, 2)
    np.testing.assert_array_equal(vectors, emb.embed([a, b]))
    assert float(vectors[0] @ vectors[1]) < 1.0 - 1e-4


def test_max_seq_length_of_reads_the_embedder_id_suffix() -> None:
    from p2p_local.embedding import max_seq_length_of

    assert max_seq_length_of("all-minilm-l6-v2@04b1622bdf2e+len512") == 512
    assert max_seq_length_of("all-minilm-l6-v2@04b1622bdf2e") is None
    assert max_seq_length_of("odd+lenx") is None
