"""What every evaluated method shares: its settings, its contract and the evaluation environment.

Owns :class:`MethodSettings` (retrieval k, context window, answer length, checkpoint and LoRA
paths, OPPU's training budget), :class:`Method` (the contract: ``setup`` once, ``setup_user``
per user, ``plan`` per query -> the messages to send and the adapter to apply),
:class:`Plan`, and :class:`EvalEnv`: the loaded base model (one backend for every method),
the evaluated users and everything methods load lazily and share (summaries, the embedder, the
hypernetwork, the MT-LoRA adapter, the trainable base model for OPPU). Does not own any one
method (their modules), the prompt wording (prompts.py) or scoring and caching (eval/).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, overload

import numpy as np

from p2p_local.baselines.prompts import Context, Prompt, build_messages, cut_text, prompt_budget
from p2p_local.errors import CheckpointError, ConfigError, EvaluationError, P2PError
from p2p_local.profile.builder import PROFILE_FORMAT
from p2p_local.runtime.base import GenerationSettings, Message

if TYPE_CHECKING:
    from p2p_local.adapter import LoraAdapter
    from p2p_local.datasets.base import Query, TaskSpec, UserRecord
    from p2p_local.embedding import TextEmbedder
    from p2p_local.hypernet.checkpoint import Checkpoint
    from p2p_local.profile.builder import Profile
    from p2p_local.runtime import AdapterPayload
    from p2p_local.train.models import BaseModel

# Default answer length per task kind (tokens): a rating or a label is short.
DEFAULT_MAX_TOKENS = {"rating": 8, "classification": 16, "generation": 64}


@dataclass(frozen=True)
class MethodSettings:
    """Settings of the evaluated methods.

    k:               history items BM25 retrieves per query (RAG, PAG, P2P per-query).
    n_ctx:           context window of the base model in tokens (prompts are fitted into it).
    max_tokens:      answer length in tokens; None = by task kind (rating 8, classification
                     16, generation 64).
    item_chars:      each retrieved history item is cut to this many characters.
    history_chars:   each item of the Full History baseline is cut to this many characters.
    summaries:       write an LLM summary of each user's history (PAG needs it; P2P profiles
                     include it, as the shipped checkpoint's summary users had one).
    summary_tokens, summary_history_tokens: the summary's length and the history it reads.
    checkpoint:      hypernetwork checkpoint (directory or weights file); None = the
                     registry's installed ``hypernet``.
    mt_lora:         MT-LoRA adapter: a PEFT folder or an MT-LoRA training run folder.
    oppu_epochs:     passes over the user's own history when training the OPPU LoRA.
    oppu_max_steps:  cap on OPPU's optimizer steps per user.
    oppu_batch_size, oppu_lr, oppu_seq_len: OPPU's batch, peak learning rate, tokens/example.
    system:          a system message before every prompt ("" = none, as in training).
    repeat_penalty:  decoding's repetition penalty (1.0 = plain greedy, the default; see
                     ``GenerationSettings``), the same for every method.
    adapter_scale:   every P2P method's generated update ``B A`` is multiplied by this before
                     it is applied (1.0 = as generated; choose it on validation users,
                     ``EvalSettings.held_out = "val"``, never on the test users).
    seed:            seeds the user order, shuffled donors and random profiles.
    """

    k: int = 2
    n_ctx: int = 2048
    max_tokens: int | None = None
    item_chars: int = 400
    history_chars: int = 600
    summaries: bool = True
    summary_tokens: int = 128
    summary_history_tokens: int = 768
    checkpoint: str | None = None
    mt_lora: str | None = None
    oppu_epochs: int = 1
    oppu_max_steps: int = 64
    oppu_batch_size: int = 4
    oppu_lr: float = 1e-4
    oppu_seq_len: int = 192
    system: str = ""
    seed: int = 0
    repeat_penalty: float = 1.0
    adapter_scale: float = 1.0

    def __post_init__(self) -> None:
        ints = {
            "k": (0, 32), "n_ctx": (64, 131072), "item_chars": (40, 4000),
            "history_chars": (40, 20000), "summary_tokens": (16, 512),
            "summary_history_tokens": (64, 32768), "oppu_epochs": (1, 1000),
            "oppu_max_steps": (1, 100000), "oppu_batch_size": (1, 4096),
            "oppu_seq_len": (32, 32768), "seed": (0, 2**31 - 1),
        }
        for name, (low, high) in ints.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"{name} must be an integer in {low}..{high}, got {value!r}")
        if self.max_tokens is not None and (
            not isinstance(self.max_tokens, int) or not 1 <= self.max_tokens <= 4096
        ):
            raise ConfigError(f"max_tokens must be None or in 1..4096, got {self.max_tokens!r}")
        GenerationSettings(repeat_penalty=self.repeat_penalty)  # checks it
        if not isinstance(self.oppu_lr, (int, float)) or not 0 < self.oppu_lr < 1:
            raise ConfigError(f"oppu_lr must be in (0, 1), got {self.oppu_lr!r}")
        if (not isinstance(self.adapter_scale, (int, float)) or isinstance(self.adapter_scale, bool)
                or not 0 < self.adapter_scale <= 4):
            raise ConfigError(f"adapter_scale must be in (0, 4] (1 = the adapter as generated), "
                              f"got {self.adapter_scale!r}")
        if not isinstance(self.summaries, bool):
            raise ConfigError(f"summaries must be true or false, got {self.summaries!r}")

    def answer_tokens(self, kind: str) -> int:
        return self.max_tokens or DEFAULT_MAX_TOKENS.get(kind, 64)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MethodSpec:
    """A method's name (as the CLI spells it), what it is, and what it needs.

    needs: any of "summary", "checkpoint", "mt_lora", "train" (loads a trainable base model),
           "profile" (its prompt or adapter is made from profile text, so the profile format
           version is part of its cache key).
    uses:  the :class:`MethodSettings` fields its answers depend on, besides the shared ones
           (model, window, answer length, system message), so a cached answer is reused
           exactly when they are unchanged.
    """

    name: str
    description: str
    needs: frozenset[str] = frozenset()
    adapter: str = "none"  # none | shared | user | query
    uses: tuple[str, ...] = ()  # MethodSettings fields that change its answers (cache key)


@dataclass
class Plan:
    """One query's request: messages, the adapter to apply (None = the plain base model)."""

    messages: list[Message]
    payload: AdapterPayload | None = None
    prompt_tokens: int = 0
    notes: list[str] = field(default_factory=list)


class Method:
    """One evaluated method. Subclasses set ``spec`` and implement :meth:`plan`."""

    spec: ClassVar[MethodSpec]

    def __init__(self, env: EvalEnv) -> None:
        self.env = env

    @property
    def name(self) -> str:
        return self.spec.name

    def setup(self) -> None:
        """Once per run, before any user (load what the method needs)."""

    def setup_user(self, user: UserRecord) -> float | None:
        """Once per user before their queries, timed as the method's per-user cost. Returns
        the seconds to report instead of the measured time (e.g. the original training time of
        a LoRA read back from a cache), or None."""
        return None

    def plan(self, user: UserRecord, query: Query) -> Plan:
        raise NotImplementedError

    def finish_user(self, user: UserRecord) -> None:
        """After the user's last query (drop per-user state)."""

    def fingerprint(self) -> dict[str, Any]:
        """What, besides the shared settings, changes this method's answers (cache key)."""
        s = self.env.settings
        used = {name: getattr(s, name) for name in self.spec.uses
                if _LATER_FIELDS.get(name, _UNSET) != getattr(s, name)}
        if "summary" in self.spec.needs and s.summaries:
            used["summary"] = [s.summary_tokens, s.summary_history_tokens]
        if "profile" in self.spec.needs:
            used["profile_format"] = PROFILE_FORMAT
        return used

    def close(self) -> None:
        """Free what :meth:`setup` loaded."""


# MethodSettings fields added after answers had been cached, with the value that behaves as
# before they existed: left out of cache keys at that value, so those answers still match.
_UNSET = object()
_LATER_FIELDS: dict[str, Any] = {"adapter_scale": 1.0}


def adapter_digest(adapter: LoraAdapter) -> str:
    """A sha256 prefix of an adapter's targets and tensors (stable across processes, unlike its
    safetensors bytes, whose metadata order varies)."""
    h = hashlib.sha256(json.dumps(adapter.targets.to_dict(), sort_keys=True).encode())
    for name in sorted(adapter.a):
        for tensor in (adapter.a[name], adapter.b[name]):
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class EvalEnv:
    """The base model and what the methods of one evaluation share.

    backend:   a loaded chat backend (llama.cpp or transformers) answering for every method.
    spec:      the task.
    users:     the evaluated users, in evaluation order (shuffled donors come from them).
    settings:  :class:`MethodSettings`.
    out_dir:   where caches go (summaries, OPPU adapters); None = memory only.
    model_spec: the base model as the registry or a path names it (for the trainable copy and
               the checkpoint's base-model check).
    embedder, train_base: ready-made instances to share (else loaded on first use).
    """

    def __init__(
        self,
        backend: Any,
        spec: TaskSpec,
        users: list[UserRecord],
        settings: MethodSettings,
        *,
        out_dir: Path | None = None,
        model_spec: str = "base",
        embedder: TextEmbedder | None = None,
        train_base: BaseModel | None = None,
    ) -> None:
        self.backend = backend
        self.spec = spec
        self.users = users
        self.settings = settings
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.model_spec = model_spec
        self._embedder = embedder
        self._train_base = train_base
        self._checkpoint: Checkpoint | None = None
        self._mt_lora: LoraAdapter | None = None
        self._mt_lora_loaded = False
        self._base_id: str | None = None
        self._summaries: dict[str, str] = {}
        self.summary_seconds: dict[str, float] = {}
        self._indexes: dict[str, Any] = {}
        self._statistics: dict[str, Any] = {}
        self._load_summaries()

    # --- generation --------------------------------------------------------------------

    @property
    def generation(self) -> GenerationSettings:
        return GenerationSettings(max_tokens=self.settings.answer_tokens(self.spec.kind),
                                  temperature=0.0, seed=self.settings.seed,
                                  repeat_penalty=self.settings.repeat_penalty)

    def n_ctx(self) -> int:
        return min(int(self.backend.n_ctx()), self.settings.n_ctx)

    def count_prompt(self, messages: list[Message]) -> int:
        """Tokens of ``messages`` as the backend sees them (chat template included)."""
        tokens = getattr(self.backend, "prompt_tokens", None)
        if tokens is not None:
            return len(tokens(messages))
        return sum(self.backend.count_tokens(m["content"]) + 8 for m in messages) + 8

    def prompt(self, query: Query, context: Context | None = None) -> Prompt:
        """The fitted prompt for ``query`` with ``context`` (see prompts.py)."""
        budget = prompt_budget(self.n_ctx(), self.generation.max_tokens)
        return build_messages(query.input, context, count_prompt=self.count_prompt,
                              budget=budget, system=self.settings.system)

    def payload(self, adapter: LoraAdapter, key: str) -> AdapterPayload:
        """``adapter`` in the form the backend takes (GGUF bytes or PEFT tensors)."""
        from p2p_local.runtime import AdapterPayload

        if self.backend.name == "llamacpp":
            from p2p_local.export.gguf import gguf_adapter_bytes

            return AdapterPayload(key=key, gguf_bytes=gguf_adapter_bytes(adapter))
        from p2p_local.export.peft import peft_config, peft_state_dict

        return AdapterPayload(key=key, peft_config=peft_config(adapter),
                              state_dict=peft_state_dict(adapter))

    # --- history views -------------------------------------------------------------------

    def index(self, user: UserRecord) -> Any:
        """The BM25 index of the user's history (built once)."""
        if user.user_id not in self._indexes:
            from p2p_local.profile.builder import build_index

            self._indexes[user.user_id] = build_index(user.history)
        return self._indexes[user.user_id]

    def statistics(self, user: UserRecord) -> Any:
        if user.user_id not in self._statistics:
            from p2p_local.profile.statistics import compute_statistics

            self._statistics[user.user_id] = compute_statistics(user.history)
        return self._statistics[user.user_id]

    def retrieved_lines(self, user: UserRecord, query: str, k: int | None = None) -> list[str]:
        """The top-k history items for ``query``, rendered and cut, best first."""
        from p2p_local.profile.summarize import render_item

        k = self.settings.k if k is None else k
        if k == 0 or not user.history:
            return []
        hits = self.index(user).search(query, k)
        return [cut_text(render_item(user.history[h.position]), self.settings.item_chars)
                for h in hits]

    def profile(self, user: UserRecord, *, query: str | None = None, summary: bool = True,
                statistics: bool = True, k: int | None = None, recent: int = 0) -> Profile:
        """The user's profile as training builds it (``profile.builder.build_profile``;
        ``recent``: most recent items a per-user profile lists, as the checkpoint records)."""
        from p2p_local.profile.builder import ProfileSettings, build_profile

        k = self.settings.k if k is None else k
        text = self.summary(user) if summary else None
        return build_profile(
            user.history, summary=text, query=query, task=self.spec.description,
            settings=ProfileSettings(k=k, item_chars=self.settings.item_chars, recent=recent),
            index=self.index(user) if query is not None and k else None,
            statistics=self.statistics(user) if statistics else False,
        )

    # --- summaries (cached in out_dir/summaries.jsonl) ---------------------------------------

    def _summary_key(self, user: UserRecord) -> str:
        from p2p_local.profile.summarize import PROMPT_VERSION

        s = self.settings
        return _hash(PROMPT_VERSION, user.user_id, [h.content_hash() for h in user.history],
                     self.spec.description, s.summary_tokens, s.summary_history_tokens,
                     str(getattr(self.backend, "model_path", "")))[:32]

    def _summary_file(self) -> Path | None:
        return self.out_dir / "summaries.jsonl" if self.out_dir is not None else None

    def _load_summaries(self) -> None:
        path = self._summary_file()
        if path is None or not path.is_file():
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                self._summaries[entry["key"]] = entry["text"]
                self.summary_seconds.setdefault(entry["user"], float(entry["seconds"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line cut by a crash

    def summary(self, user: UserRecord) -> str | None:
        """The LLM summary of the user's history (None when summaries are off or the history
        is empty). Written by the base model without any adapter, cached."""
        if not self.settings.summaries or not user.history:
            return None
        key = self._summary_key(user)
        if key in self._summaries:
            return self._summaries[key]
        from p2p_local.profile.summarize import SummarySettings, summarize
        from p2p_local.runtime import apply_adapter

        apply_adapter(self.backend, None)  # the summary is the base model's, never adapted
        settings = SummarySettings(max_tokens=self.settings.summary_tokens,
                                   max_history_tokens=self.settings.summary_history_tokens)
        start = time.perf_counter()
        made = summarize(user.history, self.backend, task=self.spec.description,
                         settings=settings)
        seconds = time.perf_counter() - start
        self._summaries[key] = made.text
        self.summary_seconds[user.user_id] = seconds
        path = self._summary_file()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"key": key, "user": user.user_id, "text": made.text,
                                     "seconds": round(seconds, 4)}) + "\n")
        return made.text

    # --- shared models -----------------------------------------------------------------

    def embedder(self) -> TextEmbedder:
        if self._embedder is None:
            from p2p_local.embedding import load_embedder

            self._embedder = load_embedder(None)
        return self._embedder

    def base_model_id(self) -> str:
        """``name@sha12`` of the base model (as checkpoints record it)."""
        if self._base_id is None:
            from p2p_local.train.models import model_id_for

            self._base_id = model_id_for(self.model_spec)[1]
        return self._base_id

    def checkpoint(self) -> Checkpoint:
        """The hypernetwork (``settings.checkpoint`` or the installed one), checked against the
        base and embedding models in use."""
        if self._checkpoint is None:
            from p2p_local.adapter import find_checkpoint
            from p2p_local.hypernet.checkpoint import load_checkpoint

            path = find_checkpoint(self.settings.checkpoint)
            if path is None:
                raise CheckpointError(
                    "the p2p methods need a hypernetwork and none is installed: pass "
                    "--checkpoint DIR, install one with `p2p-local models add NAME DIR --role "
                    "hypernet --default`, or leave them out (--methods base,rag,pag,full-history)"
                )
            ckpt = load_checkpoint(path, base_model=self.base_model_id())
            if self._embedder is None:
                self._embedder = embedder_for(ckpt.info.embedding_model)
            emb = self._embedder
            if ckpt.info.embedding_model != emb.model_id:
                raise CheckpointError(
                    f"the hypernetwork expects embeddings from {ckpt.info.embedding_model!r} but "
                    f"the embedder is {emb.model_id!r}: evaluate with the embedding model it "
                    "was trained with"
                )
            self._checkpoint = ckpt
        return self._checkpoint

    def adapter_for(self, embedding: np.ndarray) -> LoraAdapter:
        """The hypernetwork's LoRA for one profile embedding."""
        from p2p_local.adapter import generate

        ckpt = self.checkpoint()
        return generate(ckpt.hypernet, embedding, base_model=ckpt.info.base_model,
                        checkpoint_id=ckpt.info.checkpoint_id)

    @overload
    def mt_lora(self, *, required: Literal[True] = True) -> LoraAdapter: ...
    @overload
    def mt_lora(self, *, required: Literal[False]) -> LoraAdapter | None: ...
    def mt_lora(self, *, required: bool = True) -> LoraAdapter | None:
        """The MT-LoRA adapter from ``settings.mt_lora``, else the registry's default
        ``mt-lora`` entry (None when there is neither and not ``required``)."""
        if not self._mt_lora_loaded:
            from p2p_local.registry import default_path

            spec = default_path("mt-lora", self.settings.mt_lora or None)
            if spec is not None:
                from p2p_local.train.run import load_init_adapter

                self._mt_lora = load_init_adapter(str(spec))
            self._mt_lora_loaded = True
        if self._mt_lora is None and required:
            raise EvaluationError(
                "the mt-lora method needs the MT-LoRA adapter: pass --mt-lora DIR (a PEFT "
                "folder, or the run folder of `p2p-local train` with run.mode = \"mt_lora\"), "
                "or install one with `p2p-local models add NAME DIR --role mt-lora --default`"
            )
        return self._mt_lora

    def train_base(self) -> BaseModel:
        """The base model in transformers (fp32), for training OPPU LoRAs (loaded once)."""
        if self._train_base is None:
            self._train_base = load_train_base(self.model_spec)
        return self._train_base

    def donor(self, user: UserRecord) -> UserRecord:
        """Another evaluated user whose profile stands in for ``user``'s (a fixed derangement:
        the next user in a seeded order)."""
        if len(self.users) < 2:
            raise EvaluationError("a shuffled profile needs at least 2 evaluated users: "
                                  "raise --users")
        ids = sorted(u.user_id for u in self.users)
        order = np.random.default_rng([self.settings.seed, 11]).permutation(len(ids)).tolist()
        ring = [ids[i] for i in order]
        donor_id = ring[(ring.index(user.user_id) + 1) % len(ring)]
        return next(u for u in self.users if u.user_id == donor_id)

    def close(self) -> None:
        self._checkpoint = None
        self._train_base = None


def load_train_base(model_spec: str = "base") -> BaseModel:
    """The base model (registry name or path) in transformers, fp32, frozen, for training
    LoRAs; a GGUF loads from the dequantized copy the transformers backend caches."""
    from p2p_local.train.models import BaseModel, load_base, model_id_for

    path, model_id = model_id_for(model_spec)
    if path.is_file():
        from p2p_local.runtime.hf import convert_gguf

        base = load_base(str(convert_gguf(path)))
        return BaseModel(base.model, base.tokenizer, model_id, path)
    return load_base(str(path))


def embedder_for(model_id: str) -> TextEmbedder:
    """The embedder whose ``model_id`` is ``model_id`` (``name@sha12`` of a registered
    sentence-transformers model, optionally ``+lenN`` for its sequence length); any other id
    gets the default embedder (and the caller's id check then explains the mismatch)."""
    from p2p_local.embedding import Embedder, load_embedder
    from p2p_local.registry import load_registry

    base, _, length = model_id.partition("+len")
    name, _, digest = base.partition("@")
    try:
        entry = load_registry().get(name)
    except P2PError:
        return load_embedder(None)
    if entry.kind != "sentence-transformers" or not entry.sha256.startswith(digest):
        return load_embedder(None)
    return Embedder(load_registry().path(name), max_seq_length=int(length) if length else None)
