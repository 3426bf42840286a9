"""Preparing the training data: tasks -> users -> profiles -> embeddings -> examples.

Owns :func:`prepare` and the caches under ``cache_dir()/train`` (public corpus data only, never
a user's vault):

- ``summaries/<summarizer id>/<task>.jsonl``: LLM-written summaries, one line per user, keyed by
  the history, the task and the summary settings, appended as they are written (the expensive
  part, ~5 s a user on 2 CPU cores, so an interrupted preparation keeps what it made);
- ``embeddings/<embedder id>.npz``: profile text sha256 -> vector;
- ``prepared/<fingerprint>/``: the :class:`~p2p_local.train.data.TrainData` folder the trainer
  reads, plus ``splits/<task>.json`` (the user split, for the evaluation to reuse).

Per task: the users are split (``p2p_local.eval.splits``; test users are dropped here and never
read again), training users are sampled down to ``max_users_per_task``, the first
``summary_users_per_task`` of them (in the sampled order) get a summary, the others a profile of
statistics + retrieval only; validation users get summaries in the same proportion (rounded
down), so the held-out loss is measured on profiles like the training ones. Each example (a
query of a train or validation user) gets a per-user profile (summary + statistics, no query)
and a per-query profile (the same plus the top-k history items BM25 retrieves for the query).
Also :func:`history_examples` (a user's own history as examples, for OPPU). Does not own the
profile format (``profile/``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from p2p_local.errors import ConfigError, TrainingError
from p2p_local.paths import cache_dir
from p2p_local.train.config import TrainConfig, digest
from p2p_local.train.data import Example, TrainData

Log = Callable[[str], None]
PREP_VERSION = 1  # bump when the preparation changes what it writes


def train_cache() -> Path:
    path = cache_dir() / "train"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", name)[:120]


def prepared_dir(config: TrainConfig) -> Path:
    """Where :func:`prepare` puts the data for ``config`` (depends on [data], [profile] and
    the embedding and summarizer models only: the models they resolve to, not their names, so
    a new registry default or reading length never reuses old data)."""
    from p2p_local.embedding import DEFAULT_MAX_SEQ_LENGTH
    from p2p_local.profile.builder import PROFILE_FORMAT

    key = {
        "v": PREP_VERSION,
        "profile_format": PROFILE_FORMAT,
        "fp": _data_fingerprint(config),
        "embedding": _resolved_id(config.model.embedding),
        "embedding_tokens": DEFAULT_MAX_SEQ_LENGTH,
        "summarizer": _resolved_id(config.model.summarizer),
    }
    return train_cache() / "prepared" / digest(key)


def _data_fingerprint(config: TrainConfig) -> str:
    """``config.fingerprint("data", "profile")``, with saved splits named by their content (not
    their path)."""
    chosen = config.fingerprint_sections("data", "profile")
    folder = chosen["data"].pop("splits", "")
    if folder:
        h = hashlib.sha256()
        for task in config.data.tasks:
            path = Path(folder) / f"{task}.json"
            try:
                h.update(path.read_bytes())
            except OSError as exc:
                raise ConfigError(f"[data] splits: cannot read {path}: {exc}") from exc
        chosen["data"]["splits_digest"] = h.hexdigest()[:16]
    return digest(chosen)


def _resolved_id(spec: str) -> str:
    """``name@sha12`` of the model a spec names (a registry name or role, or a path), else the
    spec itself (e.g. ``hidden:base``)."""
    from p2p_local.errors import P2PError
    from p2p_local.train.models import model_id

    try:
        return model_id(spec)
    except (P2PError, OSError):
        return spec


# --- caches -------------------------------------------------------------------------------


class EmbeddingCache:
    """Profile text -> vector for one embedder, kept in one ``.npz``."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self.path = train_cache() / "embeddings" / f"{_safe(embedder.model_id)}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.is_file():
            with np.load(self.path, allow_pickle=False) as npz:
                keys, values = npz["keys"], npz["values"]
                self.vectors = {str(k): values[i] for i, k in enumerate(keys)}

    def embed(self, texts: list[str], log: Log) -> np.ndarray:
        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True)
                          if k not in self.vectors}.items())
        if missing:
            log(f"embedding {len(missing)} profile texts with {self.embedder.model_id}")
            t0 = time.perf_counter()
            for start in range(0, len(missing), 256):
                chunk = missing[start : start + 256]
                vectors = self.embedder.embed([t for _, t in chunk])
                for (k, _), v in zip(chunk, vectors, strict=True):
                    self.vectors[k] = np.asarray(v, dtype=np.float32)
            log(f"embedded in {time.perf_counter() - t0:.1f} s")
            self.save()
        return np.stack([self.vectors[k] for k in keys]).astype(np.float32)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.asarray(sorted(self.vectors))
        values = np.stack([self.vectors[k] for k in keys]) if len(keys) else np.zeros((0, 1))
        tmp = self.path.with_name(self.path.stem + f".tmp{os.getpid()}.npz")
        np.savez(tmp, keys=keys, values=values)
        os.replace(tmp, self.path)


class SummaryCache:
    """LLM summaries of corpus users, per summarizer and task, appended line by line."""

    def __init__(self, model_id: str, task: str) -> None:
        self.path = train_cache() / "summaries" / _safe(model_id) / f"{_safe(task)}.jsonl"
        self.entries: dict[str, str] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry["text"]
                except (json.JSONDecodeError, KeyError):
                    continue  # a line cut by a crash

    @staticmethod
    def key(user: Any, task_text: str, settings: Any) -> str:
        from dataclasses import asdict

        from p2p_local.profile.summarize import PROMPT_VERSION

        h = hashlib.sha256()
        h.update(json.dumps([PROMPT_VERSION, user.user_id, task_text, asdict(settings)]).encode())
        for item in user.history:
            h.update(item.content_hash().encode())
        return h.hexdigest()[:32]

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def put(self, key: str, user_id: str, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"key": key, "user": user_id, "text": text}) + "\n")
        self.entries[key] = text


class _LazySummarizer:
    """Loads the llama.cpp summarizer on first use (a run that needs no summary never loads it)."""

    def __init__(self, spec: str) -> None:
        from p2p_local.train.models import model_id_for

        self.path, self.model_id = model_id_for(spec)
        self._backend: Any = None

    def backend(self) -> Any:
        if self._backend is None:
            from p2p_local.runtime.llamacpp import LlamaCppBackend

            self._backend = LlamaCppBackend(self.path, n_ctx=2048)
        return self._backend


# --- preparation ----------------------------------------------------------------------------


def _split(config: TrainConfig, dataset: Any, embed_user: Callable[[list[Any]], np.ndarray]) -> Any:
    from p2p_local.eval.splits import SplitSettings, ood_split, random_split, read_split

    d = config.data
    settings = SplitSettings(seed=d.split_seed)
    ids = dataset.user_ids()
    if d.splits:
        path = Path(d.splits) / f"{dataset.spec.name}.json"
        split = read_split(path)
        if (split.kind, split.seed) != (d.split, d.split_seed):
            raise ConfigError(
                f"[data] splits: {path} is a {split.kind} split with seed {split.seed}, but "
                f"[data] asks for split = {d.split!r}, split_seed = {d.split_seed}: make them "
                "agree"
            )
        if set(split.train) | set(split.val) | set(split.test) != set(ids):
            raise ConfigError(
                f"[data] splits: {path} does not partition this task's {len(ids)} users: use "
                "a split saved for the same data settings"
            )
        return split
    if d.split == "random":
        return random_split(ids, settings)
    return ood_split(ids, embed_user(dataset.users), settings)


def prepare(config: TrainConfig, *, log: Log | None = None, force: bool = False) -> Path:
    """Build (or find) the prepared data folder for ``config``; returns its path."""
    from p2p_local.datasets import load_task
    from p2p_local.embedding import load_embedder
    from p2p_local.profile.builder import ProfileSettings, build_index, build_profile
    from p2p_local.profile.summarize import SummarySettings, summarize

    say = log or (lambda _text: None)
    target = prepared_dir(config)
    if (target / "meta.json").is_file() and not force:
        say(f"prepared data found: {target}")
        return target
    d, p = config.data, config.profile
    embedder = load_embedder(config.model.embedding)
    emb_cache = EmbeddingCache(embedder)
    summarizer = _LazySummarizer(config.model.summarizer) if p.summary_users_per_task else None
    summary_settings = SummarySettings(max_history_tokens=p.summary_max_history_tokens)
    profile_settings = ProfileSettings(k=p.k, recent=p.recent)

    texts: list[str] = []
    text_row: dict[str, int] = {}

    def row(text: str) -> int:
        if text not in text_row:
            text_row[text] = len(texts)
            texts.append(text)
        return text_row[text]

    examples: list[Example] = []
    tasks_meta: dict[str, Any] = {}
    splits: dict[str, dict[str, Any]] = {}
    for task in d.tasks:
        t0 = time.perf_counter()
        dataset = load_task(task, max_queries=d.max_queries, max_history=d.max_history or None)
        spec = dataset.spec

        def embed_users(users: list[Any], spec: Any = spec) -> np.ndarray:
            # the OOD split clusters the profiles without recent items: it stays the same
            # whatever a recipe lists
            bodies = [build_profile(u.history, task=spec.description,
                                    settings=ProfileSettings(k=p.k)).text for u in users]
            return emb_cache.embed(bodies, say)

        split = _split(config, dataset, embed_users)
        splits[task] = split.to_dict()
        train_ids = list(split.train)
        rng = np.random.default_rng([d.split_seed, 7])
        order = rng.permutation(len(train_ids)).tolist()
        train_ids = [train_ids[i] for i in order]  # the seeded order decides who is sampled
        if d.max_users_per_task:
            train_ids = train_ids[: d.max_users_per_task]
        with_summary = set(train_ids[: p.summary_users_per_task])
        val_ids = [split.val[i] for i in rng.permutation(len(split.val)).tolist()]
        with_summary |= set(val_ids[: _val_summaries(
            p.summary_users_per_task, len(train_ids), len(val_ids))])
        parts = {**{u: "train" for u in train_ids}, **{u: "val" for u in split.val}}
        n_summaries = 0
        cache = SummaryCache(summarizer.model_id, task) if summarizer else None
        counts = {"train": 0, "val": 0}
        for user in dataset.users:
            part = parts.get(user.user_id)
            if part is None or not user.history:
                continue
            summary = None
            if user.user_id in with_summary and cache is not None and summarizer is not None:
                key = SummaryCache.key(user, spec.description, summary_settings)
                summary = cache.get(key)
                if summary is None:
                    made = summarize(user.history, summarizer.backend(), task=spec.description,
                                     settings=summary_settings)
                    summary = made.text
                    cache.put(key, user.user_id, summary)
                    say(f"{task}: summary of {user.user_id} in {made.seconds:.1f} s")
                n_summaries += 1
            index = build_index(user.history) if p.k else None
            per_user = build_profile(user.history, summary=summary, task=spec.description,
                                     settings=profile_settings)
            for q in user.queries:
                if q.output is None or not q.output.strip():
                    continue
                per_query = build_profile(user.history, summary=summary, query=q.input,
                                          task=spec.description, settings=profile_settings,
                                          index=index)
                examples.append(Example(task=task, user_id=user.user_id, prompt=q.input,
                                        target=q.output, split=part,
                                        emb_user=row(per_user.text),
                                        emb_query=row(per_query.text)))
                counts[part] += 1
        tasks_meta[task] = {
            "description": spec.description,
            "kind": spec.kind,
            "sources": list(dataset.sources),
            "users_total": len(dataset),
            "users_train_split": len(split.train),
            "users_train": len(train_ids),
            "users_val": len(split.val),
            "users_test": len(split.test),
            "users_with_summary": n_summaries,
            "examples_train": counts["train"],
            "examples_val": counts["val"],
        }
        say(f"{task}: {len(train_ids)} training users ({n_summaries} with a summary), "
            f"{len(split.val)} validation, {len(split.test)} test held out; "
            f"{counts['train']} + {counts['val']} examples ({time.perf_counter() - t0:.1f} s)")
    if not any(ex.split == "train" for ex in examples):
        raise TrainingError("no training examples: check [data] tasks and max_users_per_task")
    embeddings = emb_cache.embed(texts, say)
    meta = {
        "embedding_model": embedder.model_id,
        "summarizer": summarizer.model_id if summarizer else None,
        "split": {"kind": d.split, "seed": d.split_seed},
        "profile": {"mode": p.mode, "k": p.k,
                    "summary_users_per_task": p.summary_users_per_task},
        "profile_settings": profile_settings.to_dict(),  # the checkpoint records them
        "tasks": tasks_meta,
        "profile_texts": len(texts),
    }
    data = TrainData(examples, embeddings, meta)
    data.save(target)
    (target / "splits").mkdir(exist_ok=True)
    for task, split_dict in splits.items():
        (target / "splits" / f"{_safe(task)}.json").write_text(json.dumps(split_dict) + "\n")
    say(f"prepared {len(examples)} examples, {len(texts)} profile texts: {target}")
    return target


# --- OPPU: one user's own history -----------------------------------------------------------


def history_examples(task: str, user: Any) -> list[Example]:
    """A user's history items as (prompt, target) examples in the task's query format."""
    from p2p_local.datasets import _dialogue, fortunes, movielens

    out: list[Example] = []
    for item in user.history:
        prompt = target = None
        if task == "movielens" and item.score is not None:
            prompt, target = movielens.prompt(item.text), str(int(item.score))
        elif task in ("shakespeare", "office") and item.input and item.output:
            prompt = _dialogue.reply_prompt(*item.input.split(": ", 1)) if ": " in item.input \
                else None
            target = item.output
        elif task == "fortunes":
            cut = fortunes.split_quote(item.text)
            if cut is not None:
                prompt, target = fortunes.prompt(cut.prefix), cut.rest
        elif item.input and item.output:
            prompt, target = item.input, item.output
        if prompt and target and target.strip():
            out.append(Example(task=task, user_id=user.user_id, prompt=prompt, target=target))
    return out


def oppu_data(config: TrainConfig) -> TrainData:
    """The [oppu] user's own history as training data (no profile embeddings needed)."""
    from p2p_local.datasets import load_task

    o = config.oppu
    if not (o.task and o.user):
        raise ConfigError("[oppu] task and user must name the user whose LoRA to train")
    dataset = load_task(o.task, max_queries=config.data.max_queries,
                        max_history=config.data.max_history or None)
    examples = history_examples(o.task, dataset.user(o.user))
    if not examples:
        raise TrainingError(f"user {o.user!r} of {o.task!r} has no usable history examples")
    meta = {"embedding_model": "none", "oppu_user": o.user, "oppu_task": o.task,
            "tasks": {o.task: {"users_train": 1, "examples_train": len(examples)}}}
    return TrainData(examples, np.zeros((1, 1), dtype=np.float32), meta)


def _val_summaries(per_task: int, n_train: int, n_val: int) -> int:
    """How many validation users get a summary: the training users' share, rounded down."""
    if per_task <= 0 or n_train <= 0:
        return 0
    return min(n_val, n_val * per_task // n_train)
