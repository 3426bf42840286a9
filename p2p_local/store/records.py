"""The history item: one thing the user wrote, rated, or said.

Owns the in-memory record type shared by ingest, the vault, profiles and datasets, and its
content hash (used for de-duplication). Does not own parsing (``ingest.py``) or storage
(``vault.py``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from p2p_local.errors import InputError

KINDS = ("text", "pair", "rating", "chat", "tag", "other")


@dataclass(frozen=True)
class HistoryItem:
    """One history item. ``text`` is always set (for pairs it is ``input``/``output`` joined).

    Fields:
        text:   the item's text (what retrieval and summaries read).
        input:  for input/output pairs, the prompt side.
        output: for input/output pairs, what the user wrote or chose.
        kind:   one of ``KINDS``.
        label:  a categorical label (a tag, a category).
        score:  a numeric rating.
        time:   ISO-8601 string or epoch seconds as given; kept verbatim.
        source: where the item came from (``jsonl``, ``lamp``, ``chatgpt``, ...).
        id:     the user's own id for the item, if any (not the dedupe key).
        meta:   any extra JSON-serialisable fields.
    """

    text: str
    input: str | None = None
    output: str | None = None
    kind: str = "text"
    label: str | None = None
    score: float | None = None
    time: str | float | None = None
    source: str | None = None
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise InputError("history item needs a non-empty 'text' (or an 'input'/'output' pair)")
        if self.kind not in KINDS:
            raise InputError(f"history item kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.score is not None and (
            not isinstance(self.score, (int, float)) or not math.isfinite(self.score)
        ):
            raise InputError(f"history item score {self.score!r} must be a finite number")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the empty optional fields left out."""
        out = self._fields_dict()
        if "meta" in out:
            out["meta"] = copy.deepcopy(out["meta"])
        return out

    def _fields_dict(self) -> dict[str, Any]:
        # The set fields (meta only when non-empty), without ``asdict``'s deep copy: hot path.
        out: dict[str, Any] = {"text": self.text, "kind": self.kind}
        for name in _OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.meta:
            out["meta"] = self.meta
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HistoryItem:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def canonical_json(self) -> bytes:
        """Stable bytes for hashing and storage (sorted keys, no whitespace)."""
        return _CANONICAL.encode(self._fields_dict()).encode("utf-8")

    def content_hash(self) -> str:
        """Hex sha256 of the canonical JSON: the de-duplication key."""
        return hashlib.sha256(self.canonical_json()).hexdigest()


_OPTIONAL_FIELDS = tuple(
    f.name for f in fields(HistoryItem) if f.name not in ("text", "kind", "meta")
)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class StoredItem:
    """A history item as read back from a vault, with its row number and content hash."""

    row: int
    digest: str
    item: HistoryItem

    @property
    def short_id(self) -> str:
        """The id shown to users: the first 12 hex digits of the content hash."""
        return self.digest[:12]
