"""Tiny, hermetic stand-ins for training tests: a byte-level tokenizer with a ChatML chat
template and a randomly initialised 2-layer llama, saved as a transformers folder (so a
subprocess can load it by path), plus prepared training data with random unit embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
EMB_DIM = 16


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|im_end|>",
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.chat_template = CHATML
    return fast


def make_tiny_base(directory: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        initializer_range=0.2,  # large enough that a LoRA on q/v moves the logits quickly
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


PAIRS = [
    ("rate: space opera", "5"),
    ("rate: romance", "2"),
    ("reply: hello there", "well met"),
    ("reply: who goes", "a friend"),
    ("complete: to be or", "not to be"),
    ("complete: all that glitters", "is not gold"),
]


def make_data(n_users: int = 6, per_user: int = 2, n_val_users: int = 2, seed: int = 0):
    """TrainData with users spread over three tasks and random unit profile embeddings."""
    from p2p_local.train.data import Example, TrainData

    rng = np.random.default_rng(seed)
    tasks = ["rate", "reply", "complete"]
    examples = []
    rows = []
    for u in range(n_users + n_val_users):
        task = tasks[u % len(tasks)]
        user_vec = rng.normal(size=EMB_DIM)
        rows.append(user_vec)
        user_row = len(rows) - 1
        for k in range(per_user):
            prompt, target = PAIRS[(u + k) % len(PAIRS)]
            rows.append(user_vec + 0.1 * rng.normal(size=EMB_DIM))
            examples.append(Example(
                task=task, user_id=f"u{u}", prompt=f"{prompt} #{u}", target=f"{target} {u}",
                split="train" if u < n_users else "val", emb_user=user_row,
                emb_query=len(rows) - 1,
            ))
    emb = np.stack(rows).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    meta = {"embedding_model": "random-test@000000000000",
            "tasks": {t: {"sources": ["test"]} for t in tasks}}
    return TrainData(examples, emb, meta)


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_base(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data().save(tmp_path_factory.mktemp("tiny-data") / "prepared")


@pytest.fixture
def tiny_base(tiny_base_dir: Path):
    """A freshly loaded tiny base model (trainers attach hooks: no sharing between tests)."""
    from p2p_local.train.models import load_base

    return load_base(str(tiny_base_dir))


def tiny_config(out_dir: Path, data_dir: Path, base_dir: Path, *, optim: dict | None = None,
                profile_mode: str = "both", **run):
    from p2p_local.train.config import TrainConfig

    settings = {
        "mode": "p2p", "out_dir": str(out_dir), "seed": 0, "max_steps": 6, "batch_size": 4,
        "max_seq_len": 96, "max_target_tokens": 32, "log_every": 1, "eval_every": 0,
        "checkpoint_every": 0, "progress": False, "cpu": True, "threads": 1,
        **run,
    }
    return TrainConfig.from_dict({
        "run": settings,
        "optim": {"lr": 1e-3, "warmup_steps": 0, **(optim or {})},
        "model": {"base": str(base_dir), "modules": ["q_proj", "v_proj"], "rank": 4},
        "data": {"tasks": [], "prepared": str(data_dir), "max_val_examples": 8},
        "profile": {"mode": profile_mode},
        "hypernet": {"task_dim": 16, "module_dim": 8, "depth_dim": 8, "hidden_mult": 2,
                     "n_blocks": 1, "head_in": 32, "dropout": 0.05},
    })
