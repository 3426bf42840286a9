"""Examples: chat-template tokenisation with loss on the target only, batching, sampling."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import make_data, make_tokenizer

from p2p_local.train.data import (
    IGNORE_INDEX,
    Example,
    TaskSampler,
    TrainData,
    collate,
    encode_example,
    render_prompt,
)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def test_labels_cover_exactly_the_reply(tok) -> None:
    enc = encode_example(tok, "How would you rate Alien?", "5", max_seq_len=256,
                         max_target_tokens=32)
    n_prompt = enc.labels.index(next(t for t in enc.labels if t != IGNORE_INDEX))
    assert all(t == IGNORE_INDEX for t in enc.labels[:n_prompt])
    assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:]
    assert tok.decode(enc.input_ids[:n_prompt]) == render_prompt(tok, "How would you rate Alien?")
    assert tok.decode(enc.input_ids[n_prompt:]) == "5<|im_end|>\n"


def test_system_prompt_is_part_of_the_prompt(tok) -> None:
    enc = encode_example(tok, "hi", "yo", max_seq_len=256, max_target_tokens=32,
                         system="Be brief.")
    text = tok.decode(enc.input_ids)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert "tiny test model" not in text


def test_long_prompt_is_shortened_and_target_cut(tok) -> None:
    prompt = "start " + "blah " * 400 + "the line to answer"
    enc = encode_example(tok, prompt, "x" * 100, max_seq_len=160, max_target_tokens=20)
    assert len(enc.input_ids) <= 160
    assert enc.n_target == 20
    text = tok.decode(enc.input_ids)
    assert "start" in text and "the line to answer" in text and " ... " in text


def test_collate_pads_right_and_masks_padding(tok) -> None:
    a = encode_example(tok, "a", "b", max_seq_len=64, max_target_tokens=8)
    b = encode_example(tok, "a longer prompt here", "bc", max_seq_len=64, max_target_tokens=8)
    batch = collate([a, b], [0, 1], pad_id=tok.pad_token_id)
    assert batch.input_ids.shape == (2, len(b.input_ids))
    assert batch.attention_mask[0].sum() == len(a.input_ids)
    assert (batch.labels[0, len(a.input_ids):] == IGNORE_INDEX).all()
    assert batch.n_target_tokens == a.n_target + b.n_target


def _examples(sizes: dict[str, int]) -> list[Example]:
    return [
        Example(task=t, user_id=f"{t}{i}", prompt="p", target="t", emb_user=0, emb_query=1)
        for t, n in sizes.items() for i in range(n)
    ]


def test_tasks_are_drawn_by_sqrt_of_size() -> None:
    sampler = TaskSampler(_examples({"big": 400, "small": 100}), seed=3)
    probs = sampler.task_probabilities()
    assert probs["big"] == pytest.approx(2 / 3) and probs["small"] == pytest.approx(1 / 3)
    draws = [d for s in range(200) for d in sampler.global_batch(s, 32)]
    share = Counter(sampler.examples[d.index].task for d in draws)["big"] / len(draws)
    assert abs(share - 2 / 3) < 0.03


def test_batches_depend_only_on_seed_and_step() -> None:
    ex = _examples({"a": 30, "b": 10})
    one, two = TaskSampler(ex, seed=1), TaskSampler(ex, seed=1)
    assert one.global_batch(5, 8) == two.global_batch(5, 8)
    assert one.global_batch(5, 8) != one.global_batch(6, 8)
    assert TaskSampler(ex, seed=2).global_batch(5, 8) != one.global_batch(5, 8)


def test_process_slices_make_up_the_global_batch() -> None:
    sampler = TaskSampler(_examples({"a": 30, "b": 10}), seed=0)
    whole = sampler.micro_batch(4, batch_size=8, rank=0, world=1, micro=0, accum=1)
    parts = [
        d
        for micro in range(2)
        for rank in range(2)
        for d in sampler.micro_batch(4, batch_size=2, rank=rank, world=2, micro=micro, accum=2)
    ]
    assert parts == whole


def test_profile_mode_picks_the_embedding() -> None:
    ex = _examples({"a": 50})
    assert {d.emb_row for d in TaskSampler(ex, seed=0, mode="user").global_batch(0, 64)} == {0}
    assert {d.emb_row for d in TaskSampler(ex, seed=0, mode="query").global_batch(0, 64)} == {1}
    assert {d.emb_row for d in TaskSampler(ex, seed=0, mode="both").global_batch(0, 64)} == {0, 1}


def test_train_data_round_trips(tmp_path) -> None:
    data = make_data()
    path = data.save(tmp_path / "prep")
    back = TrainData.load(path)
    assert back.examples == data.examples
    np.testing.assert_array_equal(back.embeddings, data.embeddings)
    assert back.meta == data.meta
    assert len(back.split("val")) == 4


@pytest.mark.real_model
def test_real_chat_template_matches_llama_cpp(hf_base, llama_base) -> None:
    """The prompt tokens the trainer builds are the ones llama.cpp sees when chatting."""
    tok = hf_base.tokenizer
    prompt = "Reply to this line in your own voice, as you would say it.\n\nDIANA: I have spoke."
    enc = encode_example(tok, prompt, "My lord, I do confess.", max_seq_len=256,
                         max_target_tokens=64)
    n_prompt = sum(1 for t in enc.labels if t == IGNORE_INDEX)
    assert enc.input_ids[:n_prompt] == llama_base.prompt_tokens(
        [{"role": "user", "content": prompt}]
    )
    assert tok.decode(enc.input_ids[n_prompt:]) == "My lord, I do confess.<|im_end|>\n"


@pytest.mark.parametrize("task", ["movielens", "shakespeare", "fortunes"])
def test_history_examples_use_the_query_format(task: str) -> None:
    """OPPU trains on a user's own history, phrased exactly like that task's queries."""
    from p2p_local.datasets import load_task
    from p2p_local.train.profiles_cache import history_examples

    dataset = load_task(task, max_users=20)
    user = max(dataset.users, key=lambda u: len(u.history))
    examples = history_examples(task, user)
    assert len(examples) >= len(user.history) // 2
    query = user.queries[0].input
    head = query.split("\n")[0][:20]
    assert all(ex.prompt.startswith(head) for ex in examples)
    assert {ex.prompt for ex in examples}.isdisjoint(q.input for q in user.queries)
    if task == "movielens":
        assert {ex.target for ex in examples} <= set(dataset.spec.labels)
