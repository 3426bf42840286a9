"""Scripted dialogue (plays, TV transcripts) to reply-in-character users.

Owns the conversion shared by ``shakespeare.py`` and ``office.py``: scenes of speeches in, one
user per speaker out. Does not parse any file format.

Rules:
- Consecutive speeches by the same speaker within a scene are merged into one speech.
- A speaker becomes a user when they have at least ``threshold`` speeches (after merging).
- A speech can be a query when the scene has an earlier speech (by someone else, after the
  merge); the query's input is a prompt quoting that previous speech and its speaker, its
  output is the speaker's reply.
- Queries are the speaker's last eligible speeches (at most ``max_queries``, at most half of
  their speeches); history is every speech of theirs before the first query, oldest first:
  ``kind="pair"`` items (previous speech -> reply) or ``kind="text"`` for a scene opener.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from p2p_local.datasets.base import (
    ConvertSettings,
    Query,
    UserRecord,
    pair_text,
    query_count,
    trim_history,
    unique_ids,
)
from p2p_local.store.records import HistoryItem


@dataclass(frozen=True)
class Speech:
    speaker: str
    text: str


@dataclass(frozen=True)
class Scene:
    """A run of speeches where each one answers the one before. ``key`` groups speakers
    (e.g. the play): speakers with the same name in different keys are different users."""

    id: str
    key: str
    speeches: list[Speech]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Turn:
    id: str
    text: str
    prev_speaker: str | None
    prev_text: str | None
    meta: dict[str, Any]


def reply_prompt(prev_speaker: str, prev_text: str) -> str:
    return (
        "Reply to this line in your own voice, as you would say it.\n\n"
        f"{prev_speaker}: {prev_text}"
    )


def merge(speeches: Sequence[Speech]) -> list[Speech]:
    """Join consecutive speeches by the same speaker; drop empty ones."""
    out: list[Speech] = []
    for s in speeches:
        text = s.text.strip()
        if not text or not s.speaker:
            continue
        if out and out[-1].speaker == s.speaker:
            out[-1] = Speech(s.speaker, f"{out[-1].text}\n{text}")
        else:
            out.append(Speech(s.speaker, text))
    return out


def dialogue_users(
    scenes: Sequence[Scene],
    *,
    task: str,
    prefix: str,
    source: str,
    threshold: int,
    settings: ConvertSettings,
    prompt: Callable[[str, str], str] = reply_prompt,
) -> list[UserRecord]:
    turns: dict[tuple[str, str], list[_Turn]] = defaultdict(list)
    for scene in scenes:
        prev: Speech | None = None
        for pos, s in enumerate(merge(scene.speeches)):
            turns[(scene.key, s.speaker)].append(
                _Turn(
                    id=f"{scene.id}:{pos}",
                    text=s.text,
                    prev_speaker=prev.speaker if prev else None,
                    prev_text=prev.text if prev else None,
                    meta=scene.meta,
                )
            )
            prev = s

    speakers = sorted(k for k, v in turns.items() if len(v) >= threshold)
    labels = {k: f"{k[0]}.{k[1]}" if k[0] else k[1] for k in speakers}
    ids = unique_ids([labels[k] for k in speakers], prefix)
    users: list[UserRecord] = []
    for key, name in speakers:
        seq = turns[(key, name)]
        eligible = [i for i, t in enumerate(seq) if t.prev_text is not None]
        n_q = query_count(len(seq), len(eligible), settings.max_queries)
        if n_q == 0:
            continue
        chosen = eligible[-n_q:]
        history = [_history_item(t, source) for t in seq[: chosen[0]]]
        queries = []
        for i in chosen:
            t = seq[i]
            assert t.prev_speaker is not None and t.prev_text is not None
            queries.append(
                Query(
                    id=f"{prefix}:{t.id}",
                    input=prompt(t.prev_speaker, t.prev_text),
                    output=t.text,
                    meta={"item_id": t.id, "previous_speaker": t.prev_speaker, **t.meta},
                )
            )
        if not history:
            continue
        users.append(
            UserRecord(
                user_id=ids[labels[(key, name)]],
                task=task,
                history=trim_history(history, settings.max_history),
                queries=queries,
                meta={"name": name, "group": key, "speeches": len(seq)},
            )
        )
    return users


def _history_item(t: _Turn, source: str) -> HistoryItem:
    if t.prev_text is None:
        return HistoryItem(text=t.text, kind="text", source=source, id=t.id, meta=dict(t.meta))
    return HistoryItem(
        text=pair_text(f"{t.prev_speaker}: {t.prev_text}", t.text),
        input=f"{t.prev_speaker}: {t.prev_text}",
        output=t.text,
        kind="pair",
        source=source,
        id=t.id,
        meta=dict(t.meta),
    )
