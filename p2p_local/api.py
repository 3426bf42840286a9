"""The facade that apps embed: :class:`Personalizer`, one user's personalization.

Orchestration only: each method calls the stage that owns the work (the vault in
``p2p_local.store``; profiles, adapters and chat in their packages). The CLI is a thin shell
over these same methods. Heavy libraries (torch, transformers, llama.cpp) are imported inside
the methods that need them, so importing this module stays cheap.

Typical use::

    p = Personalizer.create("alice", passphrase)      # p.recovery_code: show it once
    p.ingest_file("history.jsonl")
    p.stats().items
    p = Personalizer("alice", passphrase=passphrase)  # later: open it again
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from p2p_local import paths
from p2p_local.errors import InputError, VaultNotFoundError
from p2p_local.store._crypto import KdfParams
from p2p_local.store.ingest import IngestReport, IngestSettings, Progress, ingest_file
from p2p_local.store.records import HistoryItem, StoredItem
from p2p_local.store.vault import AddResult, Vault, VaultStats

if TYPE_CHECKING:
    from p2p_local.adapter import AdapterBuild, LoraAdapter
    from p2p_local.embedding import TextEmbedder
    from p2p_local.engine import Engine
    from p2p_local.export import ExportResult as AdapterExportResult
    from p2p_local.hypernet.checkpoint import Checkpoint, CheckpointInfo
    from p2p_local.profile.builder import Profile, ProfileSettings, VaultProfiler
    from p2p_local.profile.summarize import Summary, SummarySettings
    from p2p_local.registry import ProgressFn
    from p2p_local.runtime import AdapterPayload
    from p2p_local.runtime.base import ChatBackend, GenerationSettings, Message

__all__ = ["Personalizer", "ExportResult", "ModelChat", "lamp_user_name"]

_OPEN_VAULTS_WHILE_INGESTING = 16


@dataclass(frozen=True)
class ExportResult:
    """A plaintext export written by :meth:`Personalizer.export_data`."""

    path: Path
    items: int


def lamp_user_name(base: str, user_id: str) -> str:
    """The vault name for a LaMP ``user_id`` ingested under ``base``: ``<base>.<user_id>``.

    Characters outside ``[A-Za-z0-9._-]`` become ``_``; when that changes the id (or the name
    would pass 64 characters) a short hash of the original id is appended, so distinct ids
    never share a vault.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", user_id)
    name = f"{base}.{safe}"
    if safe != user_id or len(name) > 64:
        tag = hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:8]
        name = f"{base}.{safe[: max(1, 54 - len(base))]}-{tag}"
    return paths.validate_user_name(name)


class Personalizer:
    """One user's encrypted history and, built on it, their personalized model.

    Open an existing user with exactly one of ``passphrase``, ``recovery_code`` or
    ``use_keychain=True``; create one with :meth:`create`.

    Several users (and threads) can share one loaded base model: pass the same
    :class:`~p2p_local.engine.Engine` as ``engine``. Each reply then takes the engine's lock,
    puts this user's adapter on the model, generates and releases it, so replies never mix.
    Without ``engine`` the Personalizer makes its own on first use (and closes it).
    """

    # --- opening and creating -----------------------------------------------------------

    def __init__(
        self,
        user: str = "default",
        *,
        passphrase: str | None = None,
        recovery_code: str | None = None,
        use_keychain: bool = False,
        engine: Engine | None = None,
    ) -> None:
        self.user = paths.validate_user_name(user)
        if passphrase is None and recovery_code is None and not use_keychain:
            raise InputError(
                f"opening user {user!r} needs the passphrase (or the recovery code, or the "
                "keychain): set P2P_LOCAL_PASSPHRASE or pass --passphrase-file"
            )
        directory = paths.user_dir(self.user)
        if not Vault.exists(directory):
            raise VaultNotFoundError(
                f"no vault for user {self.user!r}: create one with `p2p-local init --user "
                f"{self.user}`"
            )
        vault = Vault.open(
            directory,
            passphrase=passphrase,
            recovery_code=recovery_code,
            use_keychain=use_keychain,
        )
        self._setup(vault, passphrase=passphrase, recovery_code=None, engine=engine)

    def _setup(self, vault: Vault, *, passphrase: str | None, recovery_code: str | None,
               engine: Engine | None = None) -> None:
        """Per-instance state, shared by ``__init__`` and :meth:`create` (add new state here)."""
        self.vault = vault
        self.recovery_code = recovery_code  # set only by create(): show it once
        self._passphrase = passphrase  # kept to open sibling vaults (LaMP user ids)
        self._user_lock = threading.RLock()  # one adapter build at a time for this user
        self._engines: dict[str, Engine] = {} if engine is None else {engine.name: engine}
        self._own_engines: list[Engine] = []  # made here, closed with this Personalizer

    @classmethod
    def create(
        cls,
        user: str,
        passphrase: str,
        *,
        kdf: KdfParams | None = None,
        use_keychain: bool = False,
        engine: Engine | None = None,
    ) -> Personalizer:
        """Create ``user``'s vault. ``recovery_code`` is set on the result: show it once."""
        name = paths.validate_user_name(user)
        created = Vault.create(paths.user_dir(name), passphrase, kdf=kdf, use_keychain=use_keychain)
        self = cls.__new__(cls)
        self.user = name
        self._setup(created.vault, passphrase=passphrase, recovery_code=created.recovery_code,
                    engine=engine)
        return self

    @staticmethod
    def exists(user: str) -> bool:
        return Vault.exists(paths.user_dir(user))

    @staticmethod
    def list_users() -> list[str]:
        """The users that have a vault in the data directory, sorted."""
        root = paths.users_dir()
        return sorted(p.name for p in root.iterdir() if p.is_dir() and Vault.exists(p))

    @staticmethod
    def has_keychain_slot(user: str) -> bool:
        """Whether ``user``'s vault can be opened from the OS keychain (no key needed)."""
        path = paths.user_dir(user) / "vault.key"
        try:
            slots = json.loads(path.read_bytes()).get("slots", [])
        except (OSError, ValueError, AttributeError):
            return False
        return any(isinstance(s, dict) and s.get("type") == "keychain" for s in slots)

    @staticmethod
    def destroy(user: str) -> bool:
        """Crypto-shred ``user``'s vault (keys first, then data). Needs no passphrase."""
        return Vault.destroy(paths.user_dir(user))

    @property
    def path(self) -> Path:
        return self.vault.directory

    # --- history (the encrypted vault) ----------------------------------------------------

    def ingest_file(
        self,
        path: str | Path,
        *,
        format: str = "auto",
        strict: bool = False,
        settings: IngestSettings | None = None,
        progress: Progress | None = None,
    ) -> IngestReport:
        """Add a history file (JSONL, LaMP questions, ChatGPT ``conversations.json``).

        Items of a LaMP file that carry ``user_id`` go to the vault ``<user>.<user_id>``
        (:func:`lamp_user_name`), created with this vault's passphrase when missing (their
        recovery codes are in ``report.created``). Report keys are vault user names.
        """
        opened: OrderedDict[str, Vault] = OrderedDict()
        created: dict[str, str] = {}

        def resolve(user_id: str | None) -> Vault:
            if user_id is None:
                return self.vault
            name = lamp_user_name(self.user, user_id)
            if name in opened:
                opened.move_to_end(name)
                return opened[name]
            vault = self._sibling(name, created)
            opened[name] = vault
            if len(opened) > _OPEN_VAULTS_WHILE_INGESTING:
                opened.popitem(last=False)[1].close()
            return vault

        try:
            report = ingest_file(
                Path(path),
                resolve,
                format=format,
                strict=strict,
                settings=settings,
                progress=progress,
            )
        finally:
            for vault in opened.values():
                vault.close()
        users: dict[str | None, AddResult] = {
            (self.user if k is None else lamp_user_name(self.user, k)): v
            for k, v in report.users.items()
        }
        return dataclasses.replace(report, users=users, created=created)

    def _sibling(self, name: str, created: dict[str, str]) -> Vault:
        if self._passphrase is None:
            raise InputError(
                "this file holds several users (LaMP user_id): open the vault with the "
                "passphrase, which the per-user vaults share"
            )
        directory = paths.user_dir(name)
        if Vault.exists(directory):
            return Vault.open(directory, passphrase=self._passphrase)
        made = Vault.create(directory, self._passphrase, kdf=self.vault.kdf_params)
        created[name] = made.recovery_code
        return made.vault

    def add_items(self, items: Iterable[HistoryItem]) -> AddResult:
        """Store history items (duplicates by content are skipped)."""
        return self.vault.add(items)

    def ingest(self, items: Iterable[HistoryItem | dict]) -> AddResult:
        """Store history items given as :class:`HistoryItem` or as dicts with its fields
        (``{"text": ..., "kind": "rating", "score": 4}``); for files use :meth:`ingest_file`."""
        def item(it: HistoryItem | dict) -> HistoryItem:
            if isinstance(it, HistoryItem):
                return it
            if isinstance(it, dict):
                return HistoryItem.from_dict(it)
            raise InputError(f"a history item must be a HistoryItem or a dict, got {it!r}")

        return self.vault.add(item(it) for it in items)

    def count(self) -> int:
        return self.vault.count()

    def iter_history(self) -> Iterator[StoredItem]:
        """Every item, oldest first, decrypted in memory."""
        return self.vault.iter_items()

    def history(self, *, limit: int | None = None, offset: int = 0) -> list[StoredItem]:
        if offset < 0 or (limit is not None and limit < 0):
            raise InputError(f"limit and offset must be >= 0, got {limit} and {offset}")
        out: list[StoredItem] = []
        for i, stored in enumerate(self.vault.iter_items()):
            if i < offset:
                continue
            if limit is not None and len(out) >= limit:
                break
            out.append(stored)
        return out

    def get_item(self, id_prefix: str) -> StoredItem:
        return self.vault.get(id_prefix)

    def search_history(self, query: str, *, limit: int | None = 20) -> list[StoredItem]:
        """Items whose text, input, output or label contain every word of ``query`` (any case)."""
        terms = [t.casefold() for t in query.split()]
        if not terms:
            raise InputError("the search query is empty: give one or more words")
        out: list[StoredItem] = []
        for stored in self.vault.iter_items():
            it = stored.item
            hay = " ".join(x for x in (it.text, it.input, it.output, it.label) if x).casefold()
            if all(t in hay for t in terms):
                out.append(stored)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def stats(self) -> VaultStats:
        """Item counts by kind and source, blob count and size on disk."""
        return self.vault.stats()

    def history_digest(self) -> str:
        return self.vault.history_digest()

    def export_data(self, out: str | Path, *, overwrite: bool = False) -> ExportResult:
        """Write the decrypted history as JSONL (PLAINTEXT, 0600, atomically). Re-ingesting the
        file into the same vault adds nothing."""
        out = Path(out)
        if out.is_dir():
            raise InputError(f"{out} is a folder: give a file path such as {out / 'export.jsonl'}")
        if out.exists() and not overwrite:
            raise InputError(f"{out} exists: choose another path or allow overwriting")

        def fill(fh: BinaryIO) -> int:
            n = 0
            for stored in self.vault.iter_items():
                line = json.dumps(stored.item.to_dict(), ensure_ascii=False) + "\n"
                fh.write(line.encode("utf-8"))
                n += 1
            return n

        try:
            n = paths.atomic_write_with(out, fill)
        except OSError as exc:
            # mkdir/open report a file standing where a folder should be as these two
            in_the_way = isinstance(exc, (FileExistsError, NotADirectoryError))
            reason = "a file is in the way" if in_the_way else exc.strerror or str(exc)
            raise InputError(
                f"cannot write {out} ({reason}): its folder {out.parent} does not exist and "
                "cannot be created, or is not writable; create the folder or choose a path "
                "in a writable one"
            ) from None
        return ExportResult(path=out, items=n)

    # --- profile (summary + statistics + retrieved items, embedded) ---------------------------

    def configure_profile(
        self,
        *,
        summary_backend: ChatBackend | None = None,
        embedder: TextEmbedder | None = None,
        settings: ProfileSettings | None = None,
        summary_settings: SummarySettings | None = None,
    ) -> None:
        """Choose the models and settings behind :meth:`profile` (each None keeps the default:
        the registry's ``base`` model in llama.cpp for summaries, loaded only when a summary has
        to be written, its ``embedding`` model, and the profile settings the hypernetwork in
        use was trained with)."""
        state = self.__dict__
        for key, value in (
            ("_summary_backend", summary_backend),
            ("_embedder", embedder),
            ("_profile_settings", settings),
            ("_summary_settings", summary_settings),
        ):
            if value is not None:
                state[key] = value
        if embedder is not None:
            state["_embedder_chosen"] = True
        state.pop("_profiler", None)

    @property
    def embedder(self) -> TextEmbedder:
        """The profile embedder (loaded on first use; shared through the engine)."""
        if self.__dict__.get("_embedder") is None:
            # Read profiles the way the installed hypernetwork was trained to read them.
            info = self.hypernetwork_info()
            wanted = info.embedding_model if info is not None else None
            self.__dict__["_embedder"] = self._shared_engine().embedder_for(wanted)
        return self.__dict__["_embedder"]

    def profiler(self) -> VaultProfiler:
        """The profile builder over this vault (summary cached encrypted in the vault)."""
        state = self.__dict__
        if state.get("_profiler") is None:
            from p2p_local.profile.builder import ProfileViewCache, VaultProfiler

            backend = state.get("_summary_backend")
            model_id = None
            if backend is None:
                from p2p_local.registry import load_registry

                entry = load_registry().get("base")
                model_id = f"{entry.name}@{entry.sha256[:12]}"
                backend = self._default_summary_backend
            state["_profiler"] = VaultProfiler(
                self.vault,
                backend,
                model_id=model_id,
                settings=state.get("_profile_settings") or self._trained_profile_settings(),
                summary_settings=state.get("_summary_settings"),
                # this user's decrypted history, kept across profilers until close()
                views=state.setdefault("_profile_views", ProfileViewCache()),
            )
        return state["_profiler"]

    def _trained_profile_settings(self) -> ProfileSettings | None:
        # Build profiles the way the hypernetwork in use was trained to read them.
        info = self.hypernetwork_info()
        return info.profile() if info is not None else None

    def _default_summary_backend(self) -> ChatBackend:
        # The engine's base model without an adapter (no second copy of the model).
        if self.__dict__.get("_summary_llm") is None:
            self.__dict__["_summary_llm"] = self.engine("llamacpp").base_backend()
        return self.__dict__["_summary_llm"]

    def profile(self, query: str | None = None, task: str | None = None) -> Profile:
        """The embedded profile: per-user (summary + statistics) when ``query`` is None, else
        per-query (plus the items BM25 retrieves for it). ``task`` describes what the profile
        is for (default: open-ended chat). The summary is written once per history and task and
        cached encrypted in the vault. Raises EmptyHistoryError on an empty history."""
        return self.profiler().profile(query=query, task=task).embedded(self.embedder)

    def refresh(self, task: str | None = None) -> Summary:
        """Write the profile summary again (replacing the cached one) and return it."""
        summary = self.profiler().refresh(task=task)
        self._forget_adapter()  # the adapter was made from the old summary
        return summary

    # --- adapter (the hypernetwork's LoRA for this user) --------------------------------------

    def configure_adapter(self, *, checkpoint: str | Path | None = None) -> None:
        """Use the hypernetwork checkpoint at ``checkpoint`` (a directory or weights file)
        instead of the registry's ``hypernet`` model. With neither, there is no personalized
        adapter: :meth:`adapter` raises CheckpointError and chat uses the base model."""
        self.__dict__["_checkpoint_path"] = Path(checkpoint) if checkpoint is not None else None
        for key in ("_checkpoint", "_checkpoint_info", "_payload"):
            self.__dict__.pop(key, None)
        if not self.__dict__.get("_embedder_chosen"):  # the embedder follows the checkpoint
            self.__dict__.pop("_embedder", None)
        self.__dict__.pop("_profiler", None)  # and so do the profile settings

    def hypernetwork_info(self) -> CheckpointInfo | None:
        """What the hypernetwork in use was made for, or None when none is installed."""
        state = self.__dict__
        if "_checkpoint_info" not in state:
            from p2p_local.adapter import find_checkpoint
            from p2p_local.hypernet.checkpoint import read_checkpoint_info

            path = find_checkpoint(state.get("_checkpoint_path"))
            state["_checkpoint_info"] = None if path is None else read_checkpoint_info(path)
        return state["_checkpoint_info"]

    def hypernetwork(self) -> Checkpoint:
        """The loaded hypernetwork (checked against the base model); CheckpointError if none."""
        state = self.__dict__
        if state.get("_checkpoint") is None:
            from p2p_local.adapter import NO_HYPERNET
            from p2p_local.errors import CheckpointError
            from p2p_local.hypernet.checkpoint import load_checkpoint
            from p2p_local.registry import load_registry

            info = self.hypernetwork_info()
            if info is None or info.path is None:
                raise CheckpointError(NO_HYPERNET)
            entry = load_registry().get("base")
            state["_checkpoint"] = load_checkpoint(
                info.path, base_model=f"{entry.name}@{entry.sha256[:12]}"
            )
        return state["_checkpoint"]

    def build_adapter(
        self, query: str | None = None, *, task: str | None = None, rebuild: bool = False
    ) -> AdapterBuild:
        """The user's LoRA from the hypernetwork: per-user (``query`` None; cached encrypted in
        the vault, keyed by checkpoint, history and task) or per-query (never cached).

        Raises CheckpointError when no hypernetwork is installed, EmptyHistoryError on an
        empty history."""
        import time

        from p2p_local.adapter import (
            USER_ADAPTER_BLOB,
            AdapterBuild,
            decode_cached,
            encode_cached,
            generate,
        )
        from p2p_local.errors import CheckpointError

        info = self.hypernetwork_info()
        if info is None:
            from p2p_local.adapter import NO_HYPERNET

            raise CheckpointError(NO_HYPERNET)
        key = f"{info.checkpoint_id}:{self.vault.history_digest()}:{task or ''}"
        if query is None and not rebuild:
            cached = decode_cached(self.vault.get_blob(USER_ADAPTER_BLOB), key)
            if cached is not None:
                return AdapterBuild(cached, key, True, False, 0.0, 0.0)
        start = time.perf_counter()
        prof = self.profile(query=query, task=task)
        checkpoint = self.hypernetwork()
        if prof.embedding_model != checkpoint.info.embedding_model:
            raise CheckpointError(
                f"the hypernetwork expects embeddings from {checkpoint.info.embedding_model!r}, "
                f"but profiles are embedded with {prof.embedding_model!r}: use the embedding "
                "model it was trained with (p2p-local models)"
            )
        mid = time.perf_counter()
        adapter = generate(
            checkpoint.hypernet,
            prof.embedding,
            base_model=checkpoint.info.base_model,
            checkpoint_id=checkpoint.info.checkpoint_id,
        )
        end = time.perf_counter()
        if query is None:
            self.vault.put_blob(USER_ADAPTER_BLOB, encode_cached(key, adapter))
        else:
            key += ":" + hashlib.sha256(query.encode("utf-8")).hexdigest()[:16]
        return AdapterBuild(adapter, key, False, query is not None, mid - start, end - mid)

    def adapter(self, query: str | None = None, *, task: str | None = None) -> LoraAdapter:
        """The user's personalized LoRA (see :meth:`build_adapter`)."""
        return self.build_adapter(query, task=task).adapter

    def export(
        self,
        format: str,
        out: str | Path,
        *,
        plaintext: bool = False,
        passphrase: str | None = None,
        task: str | None = None,
    ) -> AdapterExportResult:
        """Export the user's adapter as ``peft`` or ``gguf``. Encrypted (a sealed file) with
        ``passphrase`` - by default the vault's own - unless ``plaintext``, which writes the
        files PEFT / llama.cpp load."""
        from p2p_local.export import FORMATS, export_adapter

        if format not in FORMATS:
            raise InputError(f"unknown export format {format!r}: use one of {', '.join(FORMATS)}")
        passphrase = passphrase or self._passphrase
        if not plaintext and not passphrase:
            raise InputError(
                "an encrypted export needs a passphrase: give one (the vault was opened "
                "without a passphrase), or ask for a plaintext export"
            )
        adapter = self.adapter(task=task)
        return export_adapter(
            adapter, format, Path(out), passphrase=passphrase, plaintext=plaintext,
            base_model_name=adapter.base_model or None,
        )

    def _forget_adapter(self) -> None:
        from p2p_local.adapter import USER_ADAPTER_BLOB

        self.vault.delete_blob(USER_ADAPTER_BLOB)
        self.__dict__.pop("_payload", None)

    # --- chat (the base model with the user's adapter) ---------------------------------------

    def chat(
        self,
        messages: list[Message],
        settings: GenerationSettings | None = None,
        *,
        stream: bool = False,
        backend: str = "llamacpp",
        use_adapter: bool = True,
        keep_context: bool = False,
        progress: ProgressFn | None = None,
    ) -> str | Iterator[str]:
        """The assistant's reply to ``messages`` (text pieces as they come when ``stream``).

        ``backend`` is ``llamacpp`` or ``hf``; it loads once per Personalizer (the first use
        fetches a missing model, reporting to ``progress``). With ``use_adapter`` the user's
        personalized adapter is applied when one exists; otherwise the base model answers.
        ``keep_context`` (for a conversation that grows turn by turn, llama.cpp): evaluate only
        what the prompt adds to the previous reply's, see :meth:`~p2p_local.engine.Engine.chat`.
        Nothing is stored: see :meth:`remember`.

        Thread-safe: the reply runs under the engine's lock with this user's adapter. A stream
        (a :class:`~p2p_local.engine.ReplyStream`) holds the lock until it ends or is closed.
        """
        engine = self.engine(backend, progress=progress)
        engine.load(progress=progress)
        payload = self.personal_adapter(backend) if use_adapter else None
        if stream:
            return engine.stream(messages, settings, adapter=payload, keep_context=keep_context)
        return engine.chat(messages, settings, adapter=payload, keep_context=keep_context)

    def engine(self, backend: str = "llamacpp", *, progress: ProgressFn | None = None) -> Engine:
        """The engine this user's replies run on for ``backend``: the one passed in, else one
        made here on first use (its model loads on first reply)."""
        engine = self._engines.get(backend)
        if engine is None:
            from p2p_local.engine import Engine

            made = Engine(backend, "base", progress=progress)  # cheap: loads on first use
            engine = self._engines.setdefault(backend, made)  # atomic: one wins a race
            if engine is made:
                self._own_engines.append(made)
        return engine

    def _shared_engine(self) -> Engine:
        """The engine passed in (whatever its backend), else this user's llama.cpp one."""
        if self._engines:
            return next(iter(self._engines.values()))
        return self.engine("llamacpp")

    def chat_backend(self, name: str = "llamacpp", *, progress: ProgressFn | None = None
                     ) -> ChatBackend:
        """The chat backend ``name`` on the registry's base model (loaded on first use).
        Shared with other users of the same engine: use it only through :meth:`chat` or
        under ``self.engine(name).session(adapter)``."""
        return self.engine(name).load(progress=progress)

    def personal_adapter(self, backend: str = "llamacpp") -> AdapterPayload | None:
        """The user's adapter in the form ``backend`` takes, or None when there is none yet."""
        with self._user_lock:
            return self._active_adapter(self.chat_backend(backend))

    def _active_adapter(self, backend: ChatBackend) -> AdapterPayload | None:
        """Hook for the personalized adapter: build (or fetch from the vault) the user's
        adapter for ``backend`` (``backend.name`` is ``llamacpp`` or ``hf``) and return it, or
        None to chat with the base model. Called before every reply, so cache the result."""
        from p2p_local.errors import EmptyHistoryError

        info = self.hypernetwork_info()
        if info is None:
            return None  # no trained hypernetwork installed: the base model answers
        state = self.__dict__
        key = f"{info.checkpoint_id}:{self.vault.history_digest()}:"
        cached = state.get("_payload")
        if cached is not None and cached[0] == (key, backend.name):
            return cached[1]
        try:
            build = self.build_adapter()
        except EmptyHistoryError:
            return None  # nothing to personalize from yet
        payload = _adapter_payload(build.adapter, backend.name, build.key)
        state["_payload"] = ((key, backend.name), payload)
        return payload

    def remember(self, texts: Iterable[str]) -> AddResult:
        """Store the user's own chat messages in the vault (kind ``chat``, source ``chat``)."""
        items = [HistoryItem(text=t, kind="chat", source="chat") for t in texts if t.strip()]
        return self.vault.add(items)

    # --- keys -------------------------------------------------------------------------------

    def change_passphrase(self, new_passphrase: str) -> None:
        """Rewrap the vault key under ``new_passphrase`` (the old one stops working)."""
        self.vault.change_passphrase(new_passphrase)
        self._passphrase = new_passphrase

    def reset_recovery_code(self) -> str:
        """A new recovery code (the old one stops working); show it to the user once."""
        return self.vault.reset_recovery_code()

    def forget(self) -> None:
        """Close and crypto-shred this user's vault: every key slot, then the data."""
        self.close()
        Vault.destroy(self.path)

    # --- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        for engine in self._own_engines:
            engine.close()  # a shared engine stays open for its other users
        self._own_engines.clear()
        self._engines.clear()
        profiler = self.__dict__.pop("_profiler", None)
        if profiler is not None:
            profiler.drop_cached_history()  # decrypted items leave memory with the vault
        views = self.__dict__.pop("_profile_views", None)
        if views is not None:
            views.clear()
        summary_llm = self.__dict__.pop("_summary_llm", None)
        if summary_llm is not None:
            summary_llm.close()
        self.vault.close()

    def __enter__(self) -> Personalizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ModelChat:
    """Chat with a registered model alone: no vault, no adapter (``chat --no-adapter``).

    The backend (``llamacpp`` or ``hf``) loads on first use, fetching a missing model.
    """

    def __init__(self, backend: str = "llamacpp", *, model: str = "base",
                 progress: ProgressFn | None = None) -> None:
        from p2p_local.runtime import BACKENDS

        if backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.backend_name = backend
        self.model = model
        self._progress = progress
        self._backend: ChatBackend | None = None

    @property
    def backend(self) -> ChatBackend:
        """The loaded backend (loaded now if needed)."""
        return self.load()

    def load(self, *, progress: ProgressFn | None = None) -> ChatBackend:
        """Load the backend now (fetching a missing model, reporting to ``progress``)."""
        if self._backend is None:
            from p2p_local.runtime import load_backend

            self._backend = load_backend(self.backend_name, self.model,
                                         progress=progress or self._progress)
        return self._backend

    def chat(self, messages: list[Message], settings: GenerationSettings | None = None, *,
             stream: bool = False) -> str | Iterator[str]:
        """The reply to ``messages`` (text pieces as they come when ``stream``)."""
        from p2p_local.runtime.base import GenerationSettings

        settings = settings or GenerationSettings()
        if stream:
            return self.backend.stream(messages, settings)
        return self.backend.chat(messages, settings)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> ModelChat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _adapter_payload(adapter: LoraAdapter, backend: str, key: str) -> AdapterPayload:
    """``adapter`` in the form ``backend`` takes: GGUF bytes (llama.cpp) or PEFT tensors."""
    from p2p_local.runtime import AdapterPayload

    if backend == "llamacpp":
        from p2p_local.export.gguf import gguf_adapter_bytes

        return AdapterPayload(key=key, gguf_bytes=gguf_adapter_bytes(adapter))
    from p2p_local.export.peft import peft_config, peft_state_dict

    return AdapterPayload(
        key=key, peft_config=peft_config(adapter), state_dict=peft_state_dict(adapter)
    )
