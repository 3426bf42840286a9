"""Training examples: storage, tokenisation with the chat template, batching and sampling.

Owns :class:`Example` (one prompt/target pair and the rows of its profile embeddings),
:class:`TrainData` (a prepared data folder: ``examples.jsonl`` + ``embeddings.npy`` +
``meta.json``), :func:`encode_example` (prompt in the base model's chat template, loss only on
the assistant's reply), :func:`collate` (right padding, ``-100`` labels) and
:class:`TaskSampler` (tasks drawn by sqrt(size); the batch of every step is a pure function of
the seed and the step, so a resumed or a multi-process run draws exactly the same examples).
Does not own building profiles (profiles_cache.py) or the loop (trainer.py).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from p2p_local.errors import ConfigError, TrainingError

IGNORE_INDEX = -100
EXAMPLES_FILE = "examples.jsonl"
EMBEDDINGS_FILE = "embeddings.npy"
META_FILE = "meta.json"
DATA_FORMAT = "p2p-local-train-data"


@dataclass(frozen=True)
class Example:
    """One training pair.

    task, user_id: whose example it is.
    prompt:        the user's message (a task query's input).
    target:        what the user really wrote or chose (the assistant's reply to learn).
    split:         "train" or "val".
    emb_user:      row of the user's per-user profile embedding (-1: none).
    emb_query:     row of this example's per-query profile embedding (-1: none).
    """

    task: str
    user_id: str
    prompt: str
    target: str
    split: str = "train"
    emb_user: int = -1
    emb_query: int = -1

    def __post_init__(self) -> None:
        if self.split not in ("train", "val"):
            raise ConfigError(f"Example.split={self.split!r} must be 'train' or 'val'")
        if not self.prompt.strip() or not self.target.strip():
            raise ConfigError(f"example of {self.user_id!r} has an empty prompt or target")


@dataclass
class TrainData:
    """Examples, their profile embeddings [N, D] (float32, unit norm) and facts about them."""

    examples: list[Example]
    embeddings: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        emb = self.embeddings
        if emb.ndim != 2:
            raise TrainingError(f"embeddings must be [rows, dim], got shape {emb.shape}")
        for ex in self.examples:
            for row in (ex.emb_user, ex.emb_query):
                if row >= emb.shape[0]:
                    raise TrainingError(
                        f"example of {ex.user_id!r} points at embedding row {row}, "
                        f"only {emb.shape[0]} exist: prepare the data again"
                    )

    @property
    def embedding_dim(self) -> int:
        return int(self.embeddings.shape[1])

    def split(self, name: str) -> list[Example]:
        return [ex for ex in self.examples if ex.split == name]

    def save(self, directory: Path) -> Path:
        """Write the folder atomically (a half-written folder is never seen as prepared)."""
        directory = Path(directory)
        tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        with open(tmp / EXAMPLES_FILE, "w", encoding="utf-8") as fh:
            for ex in self.examples:
                fh.write(json.dumps(asdict(ex), ensure_ascii=False) + "\n")
        np.save(tmp / EMBEDDINGS_FILE, np.ascontiguousarray(self.embeddings, dtype=np.float32))
        meta = {"format": DATA_FORMAT, **self.meta}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if directory.exists():
            import shutil

            shutil.rmtree(directory)
        os.replace(tmp, directory)
        return directory

    @classmethod
    def load(cls, directory: Path) -> TrainData:
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise TrainingError(
                f"{directory} is not a prepared training-data folder (no {META_FILE}): "
                "prepare it with `p2p-local train --config FILE --prepare-only`"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != DATA_FORMAT:
            raise TrainingError(f"{meta_path} is not a p2p-local training-data file")
        examples = []
        with open(directory / EXAMPLES_FILE, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    examples.append(Example(**json.loads(line)))
        embeddings = np.load(directory / EMBEDDINGS_FILE, allow_pickle=False)
        meta.pop("format", None)
        return cls(examples, embeddings.astype(np.float32, copy=False), meta)


# --- tokenisation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example; ``labels`` is ``IGNORE_INDEX`` on the prompt."""

    input_ids: list[int]
    labels: list[int]

    @property
    def n_target(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def _messages(prompt: str, system: str) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    return [*msgs, {"role": "user", "content": prompt}]


def render_prompt(tokenizer: Any, prompt: str, system: str = "") -> str:
    """The prompt as the chat template renders it, ending where the assistant starts."""
    return tokenizer.apply_chat_template(
        _messages(prompt, system), tokenize=False, add_generation_prompt=True
    )


def render_reply(tokenizer: Any, prompt: str, target: str, system: str = "") -> str:
    """The text the chat template puts after :func:`render_prompt` for this reply (the reply
    and its end-of-turn marker)."""
    head = render_prompt(tokenizer, prompt, system)
    full = tokenizer.apply_chat_template(
        [*_messages(prompt, system), {"role": "assistant", "content": target}], tokenize=False
    )
    if not full.startswith(head):
        raise TrainingError(
            "the chat template renders a conversation that does not start with its own "
            "generation prompt: use a base model with a standard chat template"
        )
    return full[len(head):]


def encode_example(
    tokenizer: Any,
    prompt: str,
    target: str,
    *,
    max_seq_len: int,
    max_target_tokens: int,
    system: str = "",
) -> Encoded:
    """Tokenise ``prompt`` (in the chat template) + ``target``; loss on the target only.

    The target (with the end-of-turn marker) is cut to ``max_target_tokens``; a prompt that
    leaves too little room is shortened by cutting the middle of the user's message.
    """
    reply = tokenizer(render_reply(tokenizer, prompt, target, system), add_special_tokens=False)
    target_ids = list(reply["input_ids"])[:max_target_tokens]
    room = max_seq_len - len(target_ids)
    text = prompt
    prompt_ids = _prompt_ids(tokenizer, text, system)
    for _ in range(6):
        if len(prompt_ids) <= room:
            break
        excess = len(prompt_ids) - room + 3  # + the " ... " marker
        n_text = max(1, len(tokenizer(text, add_special_tokens=False)["input_ids"]))
        cut = min(len(text) - 2, math.ceil(excess * len(text) / n_text) + 1)
        keep = max(1, (len(text) - cut) // 2)
        text = text[:keep] + " ... " + text[len(text) - keep :]
        prompt_ids = _prompt_ids(tokenizer, text, system)
    if len(prompt_ids) > room:  # a template longer than max_seq_len: keep its end
        prompt_ids = prompt_ids[-room:]
    return Encoded(
        input_ids=prompt_ids + target_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + target_ids,
    )


def _prompt_ids(tokenizer: Any, prompt: str, system: str) -> list[int]:
    text = render_prompt(tokenizer, prompt, system)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class Batch:
    """Padded token tensors of a micro-batch and the rows of its profile embeddings."""

    input_ids: Any  # LongTensor [B, T]
    attention_mask: Any  # LongTensor [B, T]
    labels: Any  # LongTensor [B, T], IGNORE_INDEX on prompt and padding
    emb_rows: list[int]
    n_target_tokens: int

    def to(self, device: Any) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.labels.to(device),
            self.emb_rows,
            self.n_target_tokens,
        )


def collate(encoded: Sequence[Encoded], emb_rows: Sequence[int], pad_id: int) -> Batch:
    """Right-pad to the longest example of the batch."""
    import torch

    if not encoded:
        raise TrainingError("an empty batch: the training data has no examples")
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(encoded):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(e.labels, dtype=torch.long)
    return Batch(ids, mask, labels, list(emb_rows), sum(e.n_target for e in encoded))


# --- sampling -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draw:
    """One sampled example and which of its profile embeddings to use."""

    index: int
    emb_row: int


class TaskSampler:
    """Seeded batches: tasks drawn with probability proportional to sqrt(examples), then an
    example uniformly within the task; the embedding (per-user or per-query) by ``mode``.

    The draws of step ``s`` depend only on ``(seed, s)``, so the sampler has no state to save
    beyond the step number: resuming at step ``s`` continues the identical run, and processes
    of a distributed run slice one global batch (the run does not depend on how a global
    batch is split between processes).
    """

    def __init__(self, examples: Sequence[Example], *, seed: int, mode: str = "both",
                 temperature: float = 0.5) -> None:
        if not examples:
            raise TrainingError("no training examples: check [data] tasks and the split")
        if mode not in ("user", "query", "both"):
            raise ConfigError(f"sampler mode {mode!r} must be 'user', 'query' or 'both'")
        self.examples = list(examples)
        self.seed = seed
        self.mode = mode
        by_task: dict[str, list[int]] = {}
        for i, ex in enumerate(self.examples):
            by_task.setdefault(ex.task, []).append(i)
        self.tasks = sorted(by_task)
        self.groups = [np.asarray(by_task[t]) for t in self.tasks]
        sizes = np.asarray([len(g) for g in self.groups], dtype=np.float64)
        weights = sizes**temperature
        self.probs = weights / weights.sum()

    def task_probabilities(self) -> dict[str, float]:
        return {t: float(p) for t, p in zip(self.tasks, self.probs, strict=True)}

    def global_batch(self, step: int, size: int) -> list[Draw]:
        rng = np.random.default_rng([self.seed, step])
        task_ids = rng.choice(len(self.tasks), size=size, p=self.probs)
        picks = rng.random(size)
        coins = rng.random(size)
        draws = []
        for t, u, c in zip(task_ids, picks, coins, strict=True):
            group = self.groups[t]
            idx = int(group[min(int(u * len(group)), len(group) - 1)])
            draws.append(Draw(idx, self.embedding_row(self.examples[idx], c)))
        return draws

    def donor_rows(self, step: int, draws: Sequence[Draw], *, salt: Sequence[int] = ()
                   ) -> list[int]:
        """For each draw, a profile embedding of another user of the same task (a seeded
        pick among the task's examples; the draw's own row when the task has one user).
        ``salt`` (e.g. micro-batch and process) keeps different slices of a step apart."""
        rng = np.random.default_rng([self.seed, step, 3, *salt])
        out = []
        for d in draws:
            ex = self.examples[d.index]
            group = self.groups[self.tasks.index(ex.task)]
            row = d.emb_row
            for _ in range(16):
                other = self.examples[int(group[rng.integers(len(group))])]
                if other.user_id != ex.user_id:
                    row = self.embedding_row(other, float(rng.random()))
                    break
            out.append(row)
        return out

    def embedding_row(self, ex: Example, coin: float = 0.0) -> int:
        if self.mode == "user" or (self.mode == "both" and coin < 0.5):
            return ex.emb_user if ex.emb_user >= 0 else ex.emb_query
        return ex.emb_query if ex.emb_query >= 0 else ex.emb_user

    def micro_batch(self, step: int, *, batch_size: int, rank: int, world: int, micro: int,
                    accum: int) -> list[Draw]:
        """The draws of process ``rank``'s ``micro``-th micro-batch at ``step``."""
        draws = self.global_batch(step, batch_size * world * accum)
        start = (micro * world + rank) * batch_size
        return draws[start : start + batch_size]
