"""BM25 retrieval over a user's decrypted history.

Owns the tokenizer, the :class:`BM25Index` (rank-bm25's ``BM25Okapi``) and :class:`DigestCache`,
the in-memory cache of indexes keyed by the vault's history digest. Does not own decryption
(the vault hands over the items) or how the hits are written into a profile (``builder.py``).

Tokenization (the same for documents and queries):

1. Unicode case folding (``str.casefold``: lowercase, ``ß`` -> ``ss``);
2. split into runs of Unicode letters and digits (``[^\\W_]+``): punctuation, underscores and
   whitespace separate words, so ``"don't"`` -> ``["don", "t"]``;
3. drop the words in :data:`STOPWORDS` (a small English list, plus contraction fragments).

Ranking: BM25Okapi scores; ties (including items that share no word with the query) are broken
in favour of the more recent item, i.e. the later position in the history. A search always
returns ``min(k, len(history))`` items, as the reference P2P profile does, so every profile has
the same shape. IDF values are floored at a small positive number, so on tiny histories a word
that occurs in most items still counts for, never against, an item that contains it.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from rank_bm25 import BM25Okapi

from p2p_local.errors import ConfigError

MAX_K = 32
DEFAULT_K = 2

# Small on purpose: function words only, so short histories keep their content words.
STOPWORDS: frozenset[str] = frozenset(
    """
    a an and are as at be been but by for from had has have he her hers him his i if in into is
    it its me my of on or our she so than that the their them then there these they this to
    was we were what when which who will with you your
    s t d ll m re ve
    """.split()
)

T = TypeVar("T")
_WORD = re.compile(r"[^\W_]+")
_IDF_FLOOR = 1e-3


def tokenize(text: str) -> list[str]:
    """Words of ``text`` as retrieval sees them (see the module docstring)."""
    return [w for w in _WORD.findall(text.casefold()) if w not in STOPWORDS]


@dataclass(frozen=True)
class RetrievalSettings:
    """How many items to retrieve.

    k: items returned per query (0..32; the paper's default is 2).
    """

    k: int = DEFAULT_K

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or not 0 <= self.k <= MAX_K:
            raise ConfigError(f"k must be an integer in 0..{MAX_K}, got {self.k!r}")


@dataclass(frozen=True)
class Retrieved:
    """One hit: the item's id, its text, its BM25 score and its position in the history."""

    id: str
    text: str
    score: float
    position: int


class BM25Index:
    """A BM25Okapi index over a fixed list of texts.

    ``ids`` name the items in results (default: their positions as strings). Positions are the
    order given, oldest first; the most recent item wins ties.
    """

    def __init__(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> None:
        if ids is not None and len(ids) != len(texts):
            raise ConfigError(f"ids has {len(ids)} entries but there are {len(texts)} texts")
        self.texts: list[str] = list(texts)
        self.ids: list[str] = list(ids) if ids is not None else [str(i) for i in range(len(texts))]
        corpus = [tokenize(t) for t in self.texts]
        # rank-bm25 divides by the mean document length: no words anywhere means no index.
        self._bm25: BM25Okapi | None = None
        if any(corpus):
            self._bm25 = BM25Okapi(corpus)
            for word, idf in self._bm25.idf.items():
                if idf < _IDF_FLOOR:
                    self._bm25.idf[word] = _IDF_FLOOR

    def __len__(self) -> int:
        return len(self.texts)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every item for ``query`` (float64, one per item)."""
        words = tokenize(query)
        if self._bm25 is None or not words:
            return np.zeros(len(self.texts), dtype=np.float64)
        return np.asarray(self._bm25.get_scores(words), dtype=np.float64)

    def search(self, query: str, k: int = DEFAULT_K) -> list[Retrieved]:
        """The top ``k`` items for ``query``, best first (see the module docstring for ties)."""
        RetrievalSettings(k=k)
        n = min(k, len(self.texts))
        if n == 0:
            return []
        scores = self.scores(query)
        positions = np.arange(len(scores))
        # lexsort sorts by the last key first: score descending, then position descending.
        order = np.lexsort((-positions, -scores))[:n]
        return [
            Retrieved(id=self.ids[i], text=self.texts[i], score=float(scores[i]), position=int(i))
            for i in order
        ]


class DigestCache(Generic[T]):
    """A small thread-safe LRU keyed by history digest (e.g. of indexes): decrypted text stays
    in memory only, and a new digest (the history changed) simply misses."""

    def __init__(self, max_entries: int = 4) -> None:
        if max_entries < 1:
            raise ConfigError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, digest: str, build: Callable[[], T]) -> T:
        """The cached value for ``digest``; on a miss ``build()`` makes it."""
        with self._lock:
            if digest in self._entries:
                self._entries.move_to_end(digest)
                return self._entries[digest]
        value = build()
        with self._lock:
            self._entries[digest] = value
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def get(self, digest: str) -> T | None:
        with self._lock:
            return self._entries.get(digest)

    def pop(self, digest: str) -> T | None:
        """Remove and return the entry for ``digest`` (None when absent)."""
        with self._lock:
            return self._entries.pop(digest, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
