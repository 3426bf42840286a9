"""One loaded base model shared by several users, with per-user adapters swapped under a lock.

Owns :class:`Engine`: the chat backend (llama.cpp or transformers) loaded once, the lock that
makes "apply this user's adapter, generate, done" one atomic step, and a shared, locked
embedder for profiles. Several users' :class:`~p2p_local.api.Personalizer` objects (and the
local server) share one engine from as many threads as they like; each reply runs with exactly
the adapter it asked for. A stream holds the lock from the moment it is opened until it ends or
is closed, so another user's adapter can never be swapped in mid-reply, and every reply starts
from an empty context, so it is the same whatever ran before it.

It does not build adapters (the facade does) and knows nothing about users or vaults.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2p_local.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from p2p_local.embedding import TextEmbedder
    from p2p_local.registry import ProgressFn
    from p2p_local.runtime import AdapterPayload
    from p2p_local.runtime.base import ChatBackend, GenerationSettings, Message

__all__ = ["Engine", "ReplyStream"]


class _UseLock:
    """A mutex that any thread may release (a stream may be closed from another thread) and
    that refuses, instead of deadlocking, a second acquire by the thread that holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    def acquire(self) -> None:
        me = threading.get_ident()
        if self._owner == me:
            raise InputError(
                "this thread still holds an unfinished reply stream of the same model: read "
                "it to the end or close() it before asking for another reply"
            )
        self._lock.acquire()
        self._owner = me

    def release(self) -> None:
        self._owner = None
        self._lock.release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class ReplyStream(Iterator[str]):
    """The pieces of one reply. Holds the engine's lock until it is exhausted or closed:
    iterate it to the end, or call :meth:`close` (a ``with`` block does) to stop early.
    Read and close it in one thread."""

    def __init__(self, pieces: Iterator[str], release: Any) -> None:
        self._pieces = pieces
        self._release = release

    def __iter__(self) -> ReplyStream:
        return self

    def __next__(self) -> str:
        if self._release is None:
            raise StopIteration
        try:
            piece = next(self._pieces)
        except BaseException:
            self.close()
            raise
        return piece

    @property
    def closed(self) -> bool:
        return self._release is None

    def close(self) -> None:
        """Stop generating now and release the model (idempotent)."""
        release, self._release = self._release, None
        if release is None:
            return
        try:
            close = getattr(self._pieces, "close", None)
            if close is not None:
                close()
        finally:
            release()

    def __enter__(self) -> ReplyStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass


class Engine:
    """A base model loaded once and shared: by several users' Personalizers, by threads.

    backend:  ``llamacpp`` (hot-swaps GGUF adapters; the default) or ``hf`` (transformers).
    model:    a registry name (``base``) or a model path; fetched on first load if missing.
    progress: reports a first-time model fetch.
    Extra keyword arguments go to the backend's constructor (e.g. ``n_ctx``).

    The model loads on first use (:meth:`load` loads it now). Every reply goes through
    :meth:`chat` or :meth:`stream`, which take the lock, put the requested adapter on the model
    (None: the base model alone), generate and release; replies are serialized, never mixed.
    """

    def __init__(self, backend: str = "llamacpp", model: str | Path = "base", *,
                 progress: ProgressFn | None = None, **backend_kwargs: Any) -> None:
        from p2p_local.runtime import BACKENDS

        if backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.name = backend
        self.model = model
        self._progress = progress
        self._backend_kwargs = backend_kwargs
        self._backend: Any = None
        self._owns_backend = True
        self._embedder: _LockedEmbedder | None = None
        self._embedders: dict[int | None, _LockedEmbedder] = {}  # by tokens read per text
        self._use = _UseLock()  # held for a whole reply (swap + generation)
        self._load_lock = threading.Lock()  # loading the models once
        self._closed = False
        self.swaps = 0  # adapter changes applied so far (each clears the KV cache)
        self.replies = 0

    @classmethod
    def from_backend(cls, backend: ChatBackend, *, model: str | Path = "base",
                     owned: bool = False) -> Engine:
        """An engine over an already loaded backend (closed with the engine only if
        ``owned``). ``model`` names what it runs (``base``: the registry's base model)."""
        engine = cls(backend.name, model)
        engine._backend = backend
        engine._owns_backend = owned
        return engine

    # --- models -------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._backend is not None

    def load(self, *, progress: ProgressFn | None = None) -> ChatBackend:
        """The backend, loaded now if needed (fetching a missing model)."""
        if self._backend is None:
            with self._load_lock:
                if self._closed:
                    raise InputError("this engine was closed: create a new one")
                if self._backend is None:
                    from p2p_local.runtime import load_backend

                    self._backend = load_backend(
                        self.name, self.model, progress=progress or self._progress,
                        **self._backend_kwargs,
                    )
        return self._backend

    @property
    def backend(self) -> ChatBackend:
        """The loaded backend. Use it directly only under :meth:`session`."""
        return self.load()

    def embedder(self) -> TextEmbedder:
        """The registry's embedding model, loaded once and shared (calls are serialized)."""
        return self.embedder_for(None)

    def embedder_for(self, model_id: str | None) -> TextEmbedder:
        """The registry's embedding model read the way ``model_id`` says (``...+len512``:
        512 tokens; no suffix: the model's own length), so the vectors match the ones a
        hypernetwork was trained on. None: the default reading. Loaded once per reading."""
        from p2p_local.embedding import DEFAULT_MAX_SEQ_LENGTH, max_seq_length_of

        length = DEFAULT_MAX_SEQ_LENGTH if model_id is None else max_seq_length_of(model_id)
        with self._load_lock:
            if length not in self._embedders:
                from p2p_local.embedding import Embedder

                self._embedders[length] = _LockedEmbedder(Embedder(max_seq_length=length))
            self._embedder = self._embedders[length]
        return self._embedders[length]

    def base_backend(self) -> ChatBackend:
        """A view of the model that always answers without an adapter (for profile summaries):
        each call takes the lock like any reply. Closing the view leaves the model loaded."""
        return _BaseModelView(self)

    # --- replies ------------------------------------------------------------------------------

    def session(self, adapter: AdapterPayload | None, *, keep_context: bool = False
                ) -> _Session:
        """``with engine.session(adapter) as backend:`` - the lock held, ``adapter`` applied
        (None: no adapter). For work that needs more than one call under one adapter.
        ``keep_context`` as for :meth:`chat`."""
        return _Session(self, adapter, keep_context)

    def chat(self, messages: list[Message], settings: GenerationSettings | None = None, *,
             adapter: AdapterPayload | None = None, keep_context: bool = False) -> str:
        """The full reply to ``messages`` from the base model with ``adapter`` applied.

        ``keep_context``: when the adapter is the one the previous reply used, keep the model's
        context (llama.cpp: the KV cache), so only the part of the prompt after the longest
        prefix it shares with what ran before is evaluated: a growing conversation costs its
        new turn, not the whole history. Off by default, so a reply depends on its own prompt
        alone (a reused prefix is batched differently, which can change floating-point
        results and so a greedy reply)."""
        with self.session(adapter, keep_context=keep_context) as backend:
            return backend.chat(messages, _settings(settings))

    def stream(self, messages: list[Message], settings: GenerationSettings | None = None, *,
               adapter: AdapterPayload | None = None, keep_context: bool = False
               ) -> ReplyStream:
        """The reply piece by piece; holds the lock until the stream ends or is closed.
        ``keep_context`` as for :meth:`chat`.

        Problems with the request (an over-long conversation) raise here, before any piece."""
        backend = self.load()
        self._use.acquire()
        try:
            self._apply(backend, adapter, keep_context=keep_context)
            pieces = backend.stream(messages, _settings(settings))
        except BaseException:
            self._use.release()
            raise
        self.replies += 1
        return ReplyStream(iter(pieces), self._use.release)

    def prompt_tokens(self, messages: list[Message]) -> int:
        """Tokens of the chat prompt for ``messages`` (template included)."""
        backend = self.load()
        tokens = getattr(backend, "prompt_tokens", None)
        with self._tokenizer_lock():
            if tokens is not None:
                return len(tokens(messages))
            return sum(backend.count_tokens(m["content"]) for m in messages)

    def count_tokens(self, text: str) -> int:
        backend = self.load()
        with self._tokenizer_lock():
            return backend.count_tokens(text)

    def _tokenizer_lock(self) -> Any:
        # llama.cpp tokenizes from read-only vocab tables (safe beside a running reply); a
        # transformers fast tokenizer is not re-entrant, so it waits for the model's lock.
        return contextlib.nullcontext() if self.name == "llamacpp" else self._use

    def _apply(self, backend: Any, adapter: AdapterPayload | None, *,
               keep_context: bool = False) -> None:
        from p2p_local.runtime import apply_adapter

        before = (backend.has_adapter, backend.adapter_source)
        apply_adapter(backend, adapter)
        swapped = (backend.has_adapter, backend.adapter_source) != before
        if swapped:
            self.swaps += 1
        # A reply starts from an empty context unless asked otherwise: reusing the KV prefix
        # of whatever ran before changes how the prompt is batched, and so the floating-point
        # result. Never across a swap: that prefix was computed with another adapter.
        reset = getattr(backend, "reset", None)
        if reset is not None and (swapped or not keep_context):
            reset()

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Free the model (waits for a running reply to finish)."""
        with self._load_lock:
            self._closed = True
            backend, self._backend = self._backend, None
            self._embedder = None
            self._embedders.clear()
        if backend is not None and self._owns_backend:
            with self._use:
                backend.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Session:
    def __init__(self, engine: Engine, adapter: AdapterPayload | None,
                 keep_context: bool = False) -> None:
        self._engine = engine
        self._adapter = adapter
        self._keep_context = keep_context

    def __enter__(self) -> Any:
        engine = self._engine
        backend = engine.load()
        engine._use.acquire()
        try:
            engine._apply(backend, self._adapter, keep_context=self._keep_context)
        except BaseException:
            engine._use.release()
            raise
        engine.replies += 1
        return backend

    def __exit__(self, *exc: object) -> None:
        self._engine._use.release()


class _BaseModelView:
    """The ChatBackend protocol over an engine, always without an adapter."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.name = engine.name

    @property
    def model_path(self) -> Path | None:
        return getattr(self._engine.backend, "model_path", None)

    def chat(self, messages: list[Message], settings: GenerationSettings) -> str:
        return self._engine.chat(messages, settings, adapter=None)

    def stream(self, messages: list[Message], settings: GenerationSettings) -> Iterator[str]:
        return self._engine.stream(messages, settings, adapter=None)

    def n_ctx(self) -> int:
        return self._engine.backend.n_ctx()

    def count_tokens(self, text: str) -> int:
        return self._engine.count_tokens(text)

    def close(self) -> None:
        """The engine owns the model: nothing to free here."""


class _LockedEmbedder:
    """An embedder shared by threads: one call at a time (fast tokenizers are not re-entrant)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.model_id: str = inner.model_id
        self.dim: int = inner.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self._inner.embed(texts)

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return self._inner.count_tokens(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _settings(settings: GenerationSettings | None) -> GenerationSettings:
    if settings is not None:
        return settings
    from p2p_local.runtime.base import GenerationSettings

    return GenerationSettings()
