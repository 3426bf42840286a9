"""The profile: summary, statistics and retrieved items as the text the embedder reads.

Owns the profile text format, the embedding instruction, :func:`build_profile` (pure: a list of
history items and an optional summary in, a :class:`Profile` out; used by training and
evaluation without any vault) and :class:`VaultProfiler` (the same for one user's vault, with the
summary cached encrypted in the vault and the BM25 index kept in memory per history digest).

The profile text (``Profile.body``) is::

    ## User Profile: {summary}

    ## User History Statistics: {statistics}

    ## User History:
    - {retrieved item 1}
    - {retrieved item 2}

A section with nothing to say is left out. The per-user profile (no query) has the summary and
the statistics; the per-query profile adds the top-k items BM25 retrieves for the query. If a
per-user profile would be empty (no summary, no labels or scores), it shows the k most recent
items instead, so every profile says something about the user. With ``ProfileSettings.recent``
> 0 the per-user profile always lists that many most recent items after the statistics (a
checkpoint records the settings it was trained with, and profiles for it are built with them).
``Profile.text`` is the body wrapped in :data:`EMBED_INSTRUCTION`, which names the task: that
is what gets embedded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from p2p_local.errors import ConfigError, EmptyHistoryError
from p2p_local.profile.retrieval import (
    DEFAULT_K,
    BM25Index,
    DigestCache,
    RetrievalSettings,
    Retrieved,
)
from p2p_local.profile.statistics import HistoryStatistics, compute_statistics
from p2p_local.profile.summarize import (
    DEFAULT_TASK,
    BlobVault,
    Summary,
    SummarySettings,
    cached_summary,
    read_cached_summary,
    recency_order,
    render_item,
)
from p2p_local.store.records import HistoryItem, StoredItem

if TYPE_CHECKING:
    from collections.abc import Iterator

    from p2p_local.embedding import TextEmbedder
    from p2p_local.runtime.base import ChatBackend

EMPTY_HISTORY = "the history is empty: ingest first: p2p-local ingest FILE"
# Bump when the profile text changes for the same history (sections, statistics wording): the
# training-data and evaluation caches are keyed by it, so they never reuse old profiles.
PROFILE_FORMAT = 2

EMBED_INSTRUCTION = (
    "Represent this user so that a language model can be personalized for them. "
    "Task: {task}\n\n{profile}"
)


@dataclass(frozen=True)
class ProfileSettings:
    """How a profile is put together.

    k:          items retrieved for a query (0..32; the paper's default is 2).
    item_chars: each retrieved item is cut to this many characters (40..4000).
    statistics: include the ``## User History Statistics`` section when the history has
                scores or labels.
    recent:     the per-user profile also lists this many most recent items (0..32) after
                the summary and statistics; 0 lists k of them only when it has nothing else.
    """

    k: int = DEFAULT_K
    item_chars: int = 400
    statistics: bool = True
    recent: int = 0

    def __post_init__(self) -> None:
        RetrievalSettings(k=self.k)
        if not isinstance(self.item_chars, int) or not 40 <= self.item_chars <= 4000:
            raise ConfigError(f"item_chars must be an integer in 40..4000, got {self.item_chars!r}")
        if (isinstance(self.recent, bool) or not isinstance(self.recent, int)
                or not 0 <= self.recent <= 32):
            raise ConfigError(f"recent must be an integer in 0..32, got {self.recent!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "item_chars": self.item_chars, "statistics": self.statistics,
                "recent": self.recent}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileSettings:
        """Read back :meth:`to_dict` (missing keys keep their defaults)."""
        known = {k: data[k] for k in ("k", "item_chars", "statistics", "recent") if k in data}
        return cls(**known)


@dataclass(frozen=True)
class Profile:
    """One user's profile, ready to embed.

    summary:     the LLM-written summary (None when none was given or made).
    statistics:  history statistics (None when no item has a score or a label).
    retrieved:   items retrieved for the query, best first (empty for a per-user profile).
    text:        what the embedder reads: ``body`` wrapped in the embedding instruction.
    body:        the profile sections (see the module docstring).
    task:        the task description named in the instruction.
    query:       the query the items were retrieved for (None: per-user profile).
    embedding:   the profile's vector once embedded (see :meth:`embedded`), else None.
    embedding_model: the embedder's model id, with ``embedding``.
    """

    summary: str | None
    statistics: HistoryStatistics | None
    retrieved: list[Retrieved]
    text: str
    body: str
    task: str
    query: str | None = None
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    embedding_model: str | None = None

    def embedded(self, embedder: TextEmbedder) -> Profile:
        """This profile with its vector from ``embedder``."""
        vector = embedder.embed([self.text])[0]
        return replace(self, embedding=vector, embedding_model=embedder.model_id)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what ``p2p-local profile show --json`` prints)."""
        return {
            "summary": self.summary or "",
            "statistics": self.statistics.to_dict() if self.statistics else None,
            "retrieved": [{"id": r.id, "text": r.text, "score": r.score} for r in self.retrieved],
            "task": self.task,
            "query": self.query,
            "text": self.text,
            "embedding_dim": int(self.embedding.shape[0]) if self.embedding is not None else 0,
            "embedding_model": self.embedding_model or "",
        }


# --- pure functions: items -> profile ------------------------------------------------------


def _cut(text: str, chars: int) -> str:
    text = " ".join(text.split())
    if len(text) <= chars:
        return text
    head = text[: chars - 4].rsplit(" ", 1)[0] or text[: chars - 4]
    return head + " ..."


def render_profile(
    summary: str | None,
    statistics: HistoryStatistics | None,
    history: Sequence[str],
) -> str:
    """The profile sections (see the module docstring); ``history`` lines are already cut."""
    sections = []
    if summary and summary.strip():
        sections.append(f"## User Profile: {' '.join(summary.split())}")
    if statistics is not None:
        sections.append(f"## User History Statistics: {statistics.render()}")
    if history:
        sections.append("## User History:\n" + "\n".join(f"- {line}" for line in history))
    return "\n\n".join(sections)


def wrap_for_embedding(body: str, task: str | None = None) -> str:
    """``body`` inside the embedding instruction for ``task`` (default: chat)."""
    return EMBED_INSTRUCTION.format(task=(task or DEFAULT_TASK).strip(), profile=body)


def item_ids(items: Sequence[HistoryItem | StoredItem]) -> list[str]:
    """Ids shown for items: a vault item's short id, else the item's own id, else its position."""
    out = []
    for i, it in enumerate(items):
        if isinstance(it, StoredItem):
            out.append(it.short_id)
        else:
            out.append(it.id if it.id else str(i))
    return out


def _plain(items: Sequence[HistoryItem | StoredItem]) -> list[HistoryItem]:
    return [it.item if isinstance(it, StoredItem) else it for it in items]


def build_index(items: Sequence[HistoryItem | StoredItem]) -> BM25Index:
    """A BM25 index over ``items`` (their ``text``), with :func:`item_ids` as ids."""
    return BM25Index([it.text for it in _plain(items)], item_ids(items))


def build_profile(
    items: Sequence[HistoryItem | StoredItem],
    *,
    summary: str | None = None,
    query: str | None = None,
    task: str | None = None,
    settings: ProfileSettings | None = None,
    index: BM25Index | None = None,
    statistics: HistoryStatistics | None | bool = True,
) -> Profile:
    """The profile of ``items`` (oldest first), per-user when ``query`` is None.

    ``index`` reuses a prebuilt :func:`build_index` of the same items; ``statistics`` may be
    passed precomputed (``True`` computes it, ``False`` leaves the section out).
    """
    settings = settings or ProfileSettings()
    if not items:
        raise EmptyHistoryError(EMPTY_HISTORY)
    plain = _plain(items)
    task = (task or DEFAULT_TASK).strip()
    if statistics is True:
        stats = compute_statistics(plain) if settings.statistics else None
    elif statistics is False:
        stats = None
    else:
        stats = statistics if settings.statistics else None

    retrieved: list[Retrieved] = []
    if query is not None and settings.k > 0:
        if index is None:
            index = build_index(items)
        elif len(index) != len(items):
            raise ConfigError(f"index has {len(index)} items but the history has {len(items)}")
        retrieved = index.search(query, settings.k)
    lines = [_cut(render_item(plain[r.position]), settings.item_chars) for r in retrieved]
    n_recent = settings.recent
    if (query is None and not n_recent and not (summary and summary.strip()) and stats is None
            and settings.k > 0):
        n_recent = settings.k  # nothing else to say: the k most recent items
    if query is None and n_recent:
        ids = item_ids(items)
        newest = recency_order(plain)[::-1][:n_recent]
        lines = [_cut(render_item(plain[p]), settings.item_chars) for p in newest]
        retrieved = [Retrieved(id=ids[p], text=plain[p].text, score=0.0, position=p)
                     for p in newest]
    body = render_profile(summary, stats, lines)
    return Profile(
        summary=summary.strip() if summary and summary.strip() else None,
        statistics=stats,
        retrieved=retrieved,
        text=wrap_for_embedding(body, task),
        body=body,
        task=task,
        query=query,
    )


# --- one user's vault: cached summary, in-memory index -------------------------------------


class ProfileVault(BlobVault, Protocol):
    """What :class:`VaultProfiler` needs from a vault (``p2p_local.store.vault.Vault`` has it)."""

    def iter_items(self) -> Iterator[StoredItem]: ...
    def count(self) -> int: ...


@dataclass(frozen=True)
class HistoryView:
    """A decrypted history held in memory for one digest: items, BM25 index and statistics."""

    digest: str
    items: list[StoredItem]
    index: BM25Index
    statistics: HistoryStatistics | None


class ProfileViewCache(DigestCache[HistoryView]):
    """Decrypted histories by history digest (a keyed digest: one vault, one content state).

    Held by its owner (a Personalizer, or one profiler by default) and never shared
    process-wide: a server answering many queries decrypts and indexes a history once per
    change, not once per query, and closing the owner drops what it decrypted.
    """

    def __init__(self, max_entries: int = 4) -> None:
        super().__init__(max_entries=max_entries)


class VaultProfiler:
    """Profiles of the history in one open vault.

    backend:  the model that writes summaries, or a zero-argument callable that loads it (then
              it is loaded only when a summary has to be written).
    model_id: the id summaries are cached under (required with a callable backend).
    views:    where decrypted histories are kept (default: a cache of this profiler's own).
    """

    def __init__(
        self,
        vault: ProfileVault,
        backend: ChatBackend | Callable[[], ChatBackend],
        *,
        model_id: str | None = None,
        settings: ProfileSettings | None = None,
        summary_settings: SummarySettings | None = None,
        views: DigestCache[HistoryView] | None = None,
    ) -> None:
        if model_id is None:
            if not hasattr(backend, "chat"):
                raise ConfigError("model_id is required when the backend is passed as a callable")
            from p2p_local.profile.summarize import model_id_of

            model_id = model_id_of(backend)  # type: ignore[arg-type]
        self.vault = vault
        self.backend = backend
        self.model_id = model_id
        self.settings = settings or ProfileSettings()
        self.summary_settings = summary_settings or SummarySettings()
        self._views = views if views is not None else ProfileViewCache()
        self._digests: set[str] = set()  # entries this profiler put in ``views``

    def view(self) -> HistoryView:
        """The decrypted history for the vault's current digest (cached in memory)."""
        digest = self.vault.history_digest()

        def load() -> HistoryView:
            items = list(self.vault.iter_items())
            if not items:
                raise EmptyHistoryError(EMPTY_HISTORY)
            return HistoryView(
                digest=digest,
                items=items,
                index=build_index(items),
                statistics=compute_statistics([s.item for s in items]),
            )

        self._digests.add(digest)
        return self._views.get_or_build(digest, load)

    def drop_cached_history(self) -> None:
        """Forget the decrypted history this profiler holds in memory (call before closing)."""
        for digest in self._digests:
            self._views.pop(digest)
        self._digests.clear()

    def summary(self, task: str | None = None, *, refresh: bool = False) -> Summary:
        """The summary for ``task``: cached in the vault, written by the model when stale."""
        return cached_summary(
            self.vault,
            lambda: self.view().items,
            self.backend,
            model_id=self.model_id,
            task=task,
            settings=self.summary_settings,
            refresh=refresh,
        )

    def cached(self, task: str | None = None) -> Summary | None:
        """The cached summary if still valid, without ever calling the model."""
        return read_cached_summary(
            self.vault, self.model_id, task=task, settings=self.summary_settings
        )

    def profile(self, query: str | None = None, task: str | None = None) -> Profile:
        """The per-user profile (``query`` None) or the per-query profile."""
        if self.vault.count() == 0:
            raise EmptyHistoryError(EMPTY_HISTORY)
        summary = self.summary(task)
        view = self.view()
        return build_profile(
            view.items,
            summary=summary.text,
            query=query,
            task=task,
            settings=self.settings,
            index=view.index,
            statistics=view.statistics,
        )

    def refresh(self, task: str | None = None) -> Summary:
        """Write the summary again, replacing the cached one."""
        if self.vault.count() == 0:
            raise EmptyHistoryError(EMPTY_HISTORY)
        return self.summary(task, refresh=True)
