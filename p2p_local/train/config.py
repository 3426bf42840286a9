"""The training configuration: one TOML file, one frozen dataclass per section.

Owns :class:`TrainConfig` and its sections (``[run]``, ``[optim]``, ``[model]``, ``[hypernet]``,
``[data]``, ``[profile]``, ``[oppu]``), their defaults and validation, and reading / writing the
TOML form. Every setting is documented on its field; a wrong value raises
:class:`~p2p_local.errors.ConfigError` naming the section, the field and the value. Does not own
what the settings do (data.py, profiles_cache.py, trainer.py).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from p2p_local.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MODES = ("p2p", "mt_lora", "oppu")
PROFILE_MODES = ("user", "query", "both")
PRECISIONS = ("auto", "no", "bf16", "fp16")
SPLITS = ("random", "ood")


def _fail(section: str, name: str, value: Any, rule: str) -> ConfigError:
    return ConfigError(f"[{section}] {name} = {value!r}: {rule}")


def _int(section: str, name: str, value: Any, low: int, high: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (
        high is not None and value > high
    ):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise _fail(section, name, value, f"must be an integer {bound}")


def _num(
    section: str, name: str, value: Any, low: float, high: float, *, open_low: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if open_low else value >= low) and value <= high
    if not ok:
        rel = ">" if open_low else ">="
        raise _fail(section, name, value, f"must be a number {rel} {low} and <= {high}")


def _names(settings: Any, section: str, name: str, rule: str) -> tuple[str, ...]:
    """Store the list field ``name`` of a frozen ``settings`` as a tuple of non-empty names."""
    value = tuple(getattr(settings, name))
    object.__setattr__(settings, name, value)
    if not all(isinstance(v, str) and v for v in value):
        raise _fail(section, name, value, rule)
    return value


@dataclass(frozen=True)
class RunSettings:
    """``[run]``: what to train and how long.

    mode:             "p2p" trains the hypernetwork; "mt_lora" one plain LoRA on every training
                      user's examples (the MT-LoRA baseline); "oppu" one plain LoRA on one user's
                      own history, starting from an MT-LoRA adapter (see ``[oppu]``).
    out_dir:          where checkpoints, logs and the result go (relative to the working dir).
    seed:             seeds initialisation, dropout and the data order.
    max_steps:        optimizer steps.
    batch_size:       examples per process per micro-batch.
    grad_accum:       micro-batches per optimizer step. Global batch =
                      batch_size * processes * grad_accum.
    max_seq_len:      tokens per example (prompt + target); longer prompts are shortened.
    max_target_tokens: the target is cut to this many tokens.
    max_batch_tokens: run each micro-batch as length-sorted pieces of at most this many padded
                      tokens (0 = one piece). Same gradient, less padding: faster on a CPU.
    log_every:        steps between loss-log lines (and progress updates of the loss).
    eval_every:       steps between held-out losses (0 = only at the end).
    checkpoint_every: steps between resumable checkpoints (0 = only at the end).
    keep_checkpoints: how many resumable checkpoints to keep (oldest deleted).
    grad_checkpointing: recompute the base model's activations in the backward pass (less
                      memory, ~30% more time).
    mixed_precision:  "auto" = bf16 autocast on a GPU, fp32 on CPU; or "no", "bf16", "fp16".
    cpu:              force the CPU even when a GPU is present.
    progress:         show a progress bar (main process only).
    threads:          torch CPU threads per process (0 = torch's default).
    init_from:        mode p2p only: a hypernetwork checkpoint folder whose weights start this
                      run (a longer run continued from a shipped checkpoint with a fresh
                      schedule); "" = a freshly initialised hypernetwork.
    init_shared:      mode p2p with [hypernet] shared_lora = true: an MT-LoRA (its run folder or
                      a PEFT folder) the hypernetwork's shared LoRA starts from, so training
                      starts at that adapter for every user; "" = a zero shared LoRA.
    """

    mode: str = "p2p"
    out_dir: str = "runs/p2p"
    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    max_seq_len: int = 256
    max_target_tokens: int = 96
    max_batch_tokens: int = 0
    log_every: int = 10
    eval_every: int = 200
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    grad_checkpointing: bool = False
    mixed_precision: str = "auto"
    cpu: bool = False
    progress: bool = True
    threads: int = 0
    init_from: str = ""
    init_shared: str = ""

    def __post_init__(self) -> None:
        s = "run"
        if self.mode not in MODES:
            raise _fail(s, "mode", self.mode, f"must be one of {', '.join(MODES)}")
        if not isinstance(self.out_dir, str) or not self.out_dir.strip():
            raise _fail(s, "out_dir", self.out_dir, "must be a non-empty path")
        _int(s, "seed", self.seed, 0)
        _int(s, "max_steps", self.max_steps, 1)
        _int(s, "batch_size", self.batch_size, 1, 4096)
        _int(s, "grad_accum", self.grad_accum, 1, 1024)
        _int(s, "max_seq_len", self.max_seq_len, 16, 32768)
        _int(s, "max_target_tokens", self.max_target_tokens, 1, self.max_seq_len - 8)
        _int(s, "max_batch_tokens", self.max_batch_tokens, 0)
        _int(s, "log_every", self.log_every, 1)
        _int(s, "eval_every", self.eval_every, 0)
        _int(s, "checkpoint_every", self.checkpoint_every, 0)
        _int(s, "keep_checkpoints", self.keep_checkpoints, 1)
        _int(s, "threads", self.threads, 0, 1024)
        if self.mixed_precision not in PRECISIONS:
            raise _fail(s, "mixed_precision", self.mixed_precision, f"must be one of {PRECISIONS}")
        if not isinstance(self.init_from, str):
            raise _fail(s, "init_from", self.init_from, "must be a path string")
        if self.init_from and self.mode != "p2p":
            raise _fail(s, "init_from", self.init_from, "applies to mode \"p2p\" only "
                        "(mt_lora and oppu start from [oppu] init)")
        if not isinstance(self.init_shared, str):
            raise _fail(s, "init_shared", self.init_shared, "must be a path string")
        if self.init_shared and (self.mode != "p2p" or self.init_from):
            raise _fail(s, "init_shared", self.init_shared, "applies to a fresh hypernetwork "
                        "only (mode \"p2p\", no init_from)")
        for name in ("grad_checkpointing", "cpu", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise _fail(s, name, getattr(self, name), "must be true or false")


@dataclass(frozen=True)
class OptimSettings:
    """``[optim]``: AdamW with linear warmup then linear decay to 0 (the paper's recipe).

    lr:              peak learning rate (paper: 2e-5 for 20k steps at batch 32).
    weight_decay:    AdamW weight decay (paper: 1e-2).
    warmup_steps:    linear warmup from 0 to ``lr``.
    min_lr_ratio:    the decay ends at ``lr * min_lr_ratio``.
    grad_clip:       clip the global gradient norm to this (0 = off; paper: 1.0).
    label_smoothing: cross-entropy label smoothing (paper: 0.1).
    reg_weight:      weight of mean(A^2) + mean(B^2) of the generated LoRA (paper: 1e-3).
    rating_ce_weight: weight of an extra cross-entropy on rating tasks' answers (0 = off, the
                     paper's recipe): -log p(rating), p renormalised over the rating scale's
                     tokens at the reply's first token, per rating example of the micro-batch
                     (divided by its examples). A rating is one token among a batch's ~200
                     reply tokens, so the token-mean CE gives it little of the gradient.
    rating_risk_weight: the same for the expected absolute rating error, sum_k p(k) |k -
                     rating| (0 = off). Cross-entropy makes the greedy answer the most likely
                     rating (the mode); this term moves it toward the rating that minimises the
                     absolute error (the median), which is what MAE scores.
    contrast_weight: weight of a hinge asking each training reply to fit its own user's
                     profile better than another user's of the same task (0 = off, the paper's
                     recipe): max(0, contrast_margin + CE(own) - CE(other)) per example, CE
                     averaged over its reply tokens, the gradient through both. It costs a
                     second forward and backward of the base model per step (mode "p2p" only,
                     without grad_checkpointing).
    contrast_margin: the hinge's margin, in nats per reply token.
    anchor_tasks:    tasks of ``[data] tasks`` this run does not train on: their training
                     profiles hold the network to the adapters it started with (``[run]
                     init_from``), so a stage can teach one task without moving the others.
    anchor_weight:   weight of that hold: per step, ``batch_size`` anchor profiles, each
                     one's relative distance sum ||BA - B0A0||^2 / sum ||B0A0||^2 to the
                     starting network's updates (``LoraWeights.relative_distance``), averaged.
    beta1, beta2, eps: AdamW's.
    """

    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    label_smoothing: float = 0.1
    reg_weight: float = 1e-3
    rating_ce_weight: float = 0.0
    rating_risk_weight: float = 0.0
    contrast_weight: float = 0.0
    contrast_margin: float = 0.1
    anchor_tasks: tuple[str, ...] = ()
    anchor_weight: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        s = "optim"
        _num(s, "lr", self.lr, 0.0, 1.0, open_low=True)
        _num(s, "weight_decay", self.weight_decay, 0.0, 10.0)
        _int(s, "warmup_steps", self.warmup_steps, 0)
        _num(s, "min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        _num(s, "grad_clip", self.grad_clip, 0.0, 1e6)
        _num(s, "label_smoothing", self.label_smoothing, 0.0, 0.99)
        _num(s, "reg_weight", self.reg_weight, 0.0, 1e3)
        _num(s, "rating_ce_weight", self.rating_ce_weight, 0.0, 1e3)
        _num(s, "rating_risk_weight", self.rating_risk_weight, 0.0, 1e3)
        _num(s, "contrast_weight", self.contrast_weight, 0.0, 1e3)
        _num(s, "contrast_margin", self.contrast_margin, 0.0, 100.0)
        _names(self, s, "anchor_tasks", "must list task names")
        _num(s, "anchor_weight", self.anchor_weight, 0.0, 1e6)
        if bool(self.anchor_tasks) != bool(self.anchor_weight):
            raise _fail(s, "anchor_weight", self.anchor_weight,
                        "and anchor_tasks go together: set both (or neither)")
        _num(s, "beta1", self.beta1, 0.0, 0.9999)
        _num(s, "beta2", self.beta2, 0.0, 0.99999)
        _num(s, "eps", self.eps, 0.0, 1.0, open_low=True)


@dataclass(frozen=True)
class ModelSettings:
    """``[model]``: the frozen base model, the embedder and the LoRA layout.

    base:      registry name ("base" = the registry's default), a GGUF file or a transformers
               folder. Loaded through transformers (a GGUF is dequantized to fp32).
    embedding: the profile embedder (``p2p_local.embedding.load_embedder`` spec; "embedding" =
               the registry's default sentence-transformers model).
    modules:   projections that get a LoRA.
    rank, alpha, rslora: the LoRA's rank, alpha and scaling (alpha/sqrt(r) with rsLoRA).
    summarizer: the model that writes profile summaries (registry name or GGUF file), run by
               llama.cpp.
    """

    base: str = "base"
    embedding: str = "embedding"
    modules: tuple[str, ...] = ("q_proj", "v_proj")
    rank: int = 8
    alpha: float = 16.0
    rslora: bool = True
    summarizer: str = "base"

    def __post_init__(self) -> None:
        s = "model"
        for name in ("base", "embedding", "summarizer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise _fail(s, name, value, "must be a model name or path")
        rule = "must list projection names, e.g. q_proj"
        if not _names(self, s, "modules", rule):
            raise _fail(s, "modules", self.modules, rule)
        _int(s, "rank", self.rank, 1, 1024)
        _num(s, "alpha", self.alpha, 0.0, 1e6, open_low=True)
        if not isinstance(self.rslora, bool):
            raise _fail(s, "rslora", self.rslora, "must be true or false")


@dataclass(frozen=True)
class DataSettings:
    """``[data]``: which users and examples to train on.

    tasks:              task names (``p2p_local.datasets.TASKS``).
    max_users_per_task: train on at most this many training users per task (seeded sample;
                        0 = all).
    max_queries:        held-out queries per user (the training examples of training users).
    max_history:        keep each user's most recent N history items (0 = all).
    split:              "random" or "ood" user split (``p2p_local.eval.splits``); training
                        uses its train users, the held-out loss its validation users; its test
                        users are never read.
    split_seed:         the split's seed (must match the evaluation's).
    splits:             a folder of saved splits, ``<task>.json`` each (e.g. an earlier prepared
                        data folder's ``splits/``), used instead of computing them; "" =
                        compute. An OOD split clusters profile embeddings, so a new profile
                        format would otherwise move users across it; this keeps an earlier
                        run's test users (and any MT-LoRA trained beside it) comparable.
    max_val_examples:   held-out examples scored at each evaluation (a sample seeded by
                        ``split_seed``: the same for every ``[run] seed``).
    prepared:           a prepared data folder to use as it is (skips preparation); "" = build
                        it from the settings above into the cache.
    system_prompt:      a system message put before each prompt ("" = the chat template's own).
    """

    tasks: tuple[str, ...] = ("movielens", "shakespeare", "office", "fortunes")
    max_users_per_task: int = 0
    max_queries: int = 3
    max_history: int = 0
    split: str = "random"
    split_seed: int = 0
    splits: str = ""
    max_val_examples: int = 64
    prepared: str = ""
    system_prompt: str = ""

    def __post_init__(self) -> None:
        s = "data"
        _names(self, s, "tasks", "must list task names")
        if not self.tasks and not self.prepared:
            raise _fail(s, "tasks", self.tasks, "is empty: name a task or a prepared folder")
        _int(s, "max_users_per_task", self.max_users_per_task, 0)
        _int(s, "max_queries", self.max_queries, 1, 1000)
        _int(s, "max_history", self.max_history, 0)
        _int(s, "split_seed", self.split_seed, 0)
        _int(s, "max_val_examples", self.max_val_examples, 0)
        if self.split not in SPLITS:
            raise _fail(s, "split", self.split, f"must be one of {', '.join(SPLITS)}")
        for name in ("prepared", "system_prompt", "splits"):
            if not isinstance(getattr(self, name), str):
                raise _fail(s, name, getattr(self, name), "must be a string")


@dataclass(frozen=True)
class ProfileSettingsT:
    """``[profile]``: how each training user's profile is built and embedded.

    mode:            "user": one per-user profile (summary + statistics) per user; "query":
                     per-query profiles (plus the top-k items BM25 retrieves for the query);
                     "both": each example draws one of the two at random (the model then
                     serves both kinds of adapter).
    k:               items retrieved for a per-query profile.
    recent:          the per-user profile also lists this many most recent items (0..32;
                     0: only the summary and statistics, or k items when there are neither).
    summary_users_per_task: users per task whose profile gets an LLM-written summary (the
                     first N of the training users in a seeded order; ~5 s a user on 2 CPU
                     cores); the others get statistics + retrieval only. 0 = no summaries.
                     Validation users get summaries in the same proportion (rounded down).
    summary_max_history_tokens: history tokens the summarizer reads.
    """

    mode: str = "both"
    k: int = 2
    recent: int = 0
    summary_users_per_task: int = 0
    summary_max_history_tokens: int = 768

    def __post_init__(self) -> None:
        s = "profile"
        if self.mode not in PROFILE_MODES:
            raise _fail(s, "mode", self.mode, f"must be one of {', '.join(PROFILE_MODES)}")
        _int(s, "k", self.k, 0, 32)
        _int(s, "recent", self.recent, 0, 32)
        _int(s, "summary_users_per_task", self.summary_users_per_task, 0)
        _int(s, "summary_max_history_tokens", self.summary_max_history_tokens, 64, 32768)


@dataclass(frozen=True)
class OppuSettings:
    """``[oppu]``: the one-user LoRA of the OPPU baseline (``run.mode = "oppu"``).

    init:  an MT-LoRA result folder (its ``adapter/``) or PEFT folder to start from ("" = a
           fresh PEFT-style LoRA).
    task:  the user's task.
    user:  the user id whose own history is the training data.
    """

    init: str = ""
    task: str = ""
    user: str = ""

    def __post_init__(self) -> None:
        for name in ("init", "task", "user"):
            if not isinstance(getattr(self, name), str):
                raise _fail("oppu", name, getattr(self, name), "must be a string")


_SECTIONS = {
    "run": RunSettings,
    "optim": OptimSettings,
    "model": ModelSettings,
    "data": DataSettings,
    "profile": ProfileSettingsT,
    "oppu": OppuSettings,
}


@dataclass(frozen=True)
class TrainConfig:
    """The whole configuration. ``hypernet`` holds :class:`HyperNetSettings` fields
    (``embedding_dim`` is taken from the embedder and must not be set)."""

    run: RunSettings = field(default_factory=RunSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    profile: ProfileSettingsT = field(default_factory=ProfileSettingsT)
    oppu: OppuSettings = field(default_factory=OppuSettings)
    hypernet: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "embedding_dim" in self.hypernet:
            raise _fail("hypernet", "embedding_dim", self.hypernet["embedding_dim"],
                        "comes from the embedding model: remove it")
        from p2p_local.hypernet.model import HyperNetSettings

        try:
            hypernet = HyperNetSettings.from_dict({**self.hypernet, "embedding_dim": 1})
        except ConfigError as exc:
            raise ConfigError(f"[hypernet] {exc}") from None
        if self.run.init_shared and not hypernet.shared_lora:
            raise _fail("run", "init_shared", self.run.init_shared,
                        "needs [hypernet] shared_lora = true")
        if self.optim.contrast_weight and self.run.mode != "p2p":
            raise _fail("optim", "contrast_weight", self.optim.contrast_weight,
                        "compares profiles, so it needs run.mode = 'p2p'")
        if self.optim.contrast_weight and self.run.grad_checkpointing:
            raise _fail("optim", "contrast_weight", self.optim.contrast_weight,
                        "runs two adapters per batch, which gradient checkpointing cannot "
                        "replay: set [run] grad_checkpointing = false")
        if self.optim.anchor_tasks:
            self._check_anchor()
        if self.run.mode == "oppu" and not (self.oppu.task and self.oppu.user):
            raise _fail(
                "oppu", "user", self.oppu.user, "run.mode = 'oppu' needs [oppu] task and user"
            )

    def _check_anchor(self) -> None:
        anchors, tasks = self.optim.anchor_tasks, self.data.tasks
        if self.run.mode != "p2p" or not self.run.init_from:
            raise _fail("optim", "anchor_tasks", list(anchors),
                        "holds a started hypernetwork in place: it needs run.mode = 'p2p' "
                        "and [run] init_from")
        if tasks and not set(anchors) < set(tasks):
            raise _fail("optim", "anchor_tasks", list(anchors),
                        f"must be some, not all, of [data] tasks {list(tasks)}: the others "
                        "are what the run trains")

    # --- (de)serialisation ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in _SECTIONS:
            section = asdict(getattr(self, name))
            out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
        out["hypernet"] = dict(self.hypernet)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        unknown = sorted(set(data) - set(_SECTIONS) - {"hypernet"})
        if unknown:
            raise ConfigError(
                f"unknown section(s) {', '.join(f'[{u}]' for u in unknown)}: use "
                f"{', '.join(f'[{s}]' for s in [*_SECTIONS, 'hypernet'])}"
            )
        kwargs: dict[str, Any] = {}
        for name, klass in _SECTIONS.items():
            section = data.get(name, {})
            if not isinstance(section, dict):
                raise ConfigError(f"[{name}] must be a table")
            known = {f.name for f in fields(klass)}
            bad = sorted(set(section) - known)
            if bad:
                raise ConfigError(
                    f"[{name}] has unknown field(s) {', '.join(bad)}: known are "
                    f"{', '.join(sorted(known))}"
                )
            kwargs[name] = klass(**section)
        hypernet = data.get("hypernet", {})
        if not isinstance(hypernet, dict):
            raise ConfigError("[hypernet] must be a table")
        return cls(**kwargs, hypernet=dict(hypernet))

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read training config {path}: {exc.strerror}") from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        return cls.from_dict(data)

    def to_toml(self) -> str:
        """The TOML form (what :meth:`load` reads back to an equal config)."""
        lines: list[str] = []
        for name, values in self.to_dict().items():
            lines.append(f"[{name}]")
            for key, value in values.items():
                lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
        return "\n".join(lines)

    def with_overrides(
        self, *, max_steps: int | None = None, out_dir: str | None = None,
        settings: Sequence[str] = (),
    ) -> TrainConfig:
        """This config with command-line overrides: ``settings`` are ``SECTION.KEY=VALUE``
        items (``--set optim.lr=2e-4``; the value in TOML, a bare word taken as a string),
        validated like the file's own keys."""
        cfg = self
        if settings:
            data = self.to_dict()
            for item in settings:
                section, key, value = _parse_setting(item)
                data.setdefault(section, {})[key] = value
            cfg = TrainConfig.from_dict(data)
        run = cfg.run
        if max_steps is not None:
            run = replace(run, max_steps=max_steps)
        if out_dir is not None:
            run = replace(run, out_dir=str(out_dir))
        return replace(cfg, run=run)

    def fingerprint_sections(self, *sections: str) -> dict[str, Any]:
        """Some sections as a dict (all when none named), without the keys of
        :data:`_LATER_KEYS` while they are off: what fingerprints are taken of."""
        data = self.to_dict()
        chosen = {k: data[k] for k in (sections or tuple(data))}
        for (section, key), off in _LATER_KEYS.items():
            if section in chosen and chosen[section].get(key) == off:
                del chosen[section][key]
        return chosen

    def fingerprint(self, *sections: str) -> str:
        """sha256 prefix of some sections (all when none named): names a cache or a run."""
        return digest(self.fingerprint_sections(*sections))


def _parse_setting(item: str) -> tuple[str, str, Any]:
    """One ``--set`` item, ``SECTION.KEY=VALUE``, as (section, key, value)."""
    name, sep, text = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(f"--set {item!r}: write SECTION.KEY=VALUE, e.g. --set optim.lr=2e-4")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()  # a bare word: a string
    return section, key, value


# Keys added after fingerprints had named runs and caches, with the value that behaves as
# before they existed: left out of fingerprints at that value, so those names still hold.
_LATER_KEYS: dict[tuple[str, str], Any] = {
    ("data", "splits"): "",
    ("optim", "rating_ce_weight"): 0.0,
    ("optim", "rating_risk_weight"): 0.0,
    ("optim", "contrast_weight"): 0.0,
    ("optim", "contrast_margin"): 0.1,
    ("optim", "anchor_tasks"): [],
    ("optim", "anchor_weight"): 0.0,
    ("profile", "recent"): 0,
}


def digest(data: Any) -> str:
    """The 16-hex-digit sha256 prefix of ``data`` as sorted JSON (fingerprints, cache keys)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} as TOML")
