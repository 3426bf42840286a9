"""The LLM-written behavioural summary of a user's history.

Owns the summary prompt, the policy that fits a history into the model's context window, the
cleaning of the model's output, and the encrypted cache of summaries in the user's vault. The
model arrives as any :class:`~p2p_local.runtime.base.ChatBackend` (llama.cpp by default, chosen
by the caller); this module never loads one.

Fitting the history (``select_items``):

- Budget: ``min(max_history_tokens, n_ctx - prompt - max_tokens - margin)`` tokens, counted with
  the backend's own tokenizer (``count_tokens``). Each item is cut to ``item_max_tokens`` first.
- Recent: the newest items fill ``recent_fraction`` of the budget. "Newest" follows the items'
  ``time`` when every item has one that parses (ISO-8601 or epoch seconds), else their order in
  the history (the vault's insertion order).
- Diverse: the rest of the budget goes to older items picked one at a time as the item least
  like everything picked so far (largest minimum Jaccard distance between word sets; ties go to
  the newer item), from at most ``diversity_pool`` older items spread evenly over the history.
- The chosen items are shown oldest first.

Cleaning (``clean_summary``): markdown heading lines, emphasis and list markers are removed, list
items become sentences, lines are joined into one paragraph, a leading "Summary:"-style label is
dropped, repeated sentences (60% of their content words said in one earlier sentence), any
sentence that copies 8 or more consecutive words of the prompt and any sentence that names a
likely entity of the history (a word capitalized mid-sentence there and never lower-case) are
removed, and the result is cut back to whole sentences within ``max_tokens``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from p2p_local.errors import ConfigError, EmptyHistoryError, ModelError
from p2p_local.profile.retrieval import tokenize
from p2p_local.runtime.base import ChatBackend, GenerationSettings, Message
from p2p_local.store.records import HistoryItem, StoredItem

PROMPT_VERSION = 2  # bump when the prompt or the cleaning changes: old cached summaries go stale
DEFAULT_TASK = (
    "Open-ended chat: answer this user's messages the way this user would find most helpful, "
    "matching how they write and what they prefer."
)
_ECHO_NGRAM = 8
_MARGIN_TOKENS = 16

SYSTEM_PROMPT = (
    "You describe people's habits from examples of what they wrote, rated or chose. "
    "You write plain prose, never lists or headings."
)

INSTRUCTION = (
    "Read the history above. In three to five sentences, describe this person: how they behave, "
    "how they make choices and judge things, and how they write (tone, length, wording). "
    "Keep to what matters for this task: {task} "
    "Do not name people, places, titles or products, do not list topics, and do not guess "
    "age or gender. "
    "Start your answer with \"This user\"."
)


@dataclass(frozen=True)
class SummarySettings:
    """How to summarize.

    max_tokens:         cap on the summary's length in model tokens (16..512).
    max_history_tokens: most tokens of history in the prompt (64..32768); prompt processing
                        dominates the time, so this sets the cost (the default keeps a summary
                        by the default model under ~5 s on 2 CPU cores).
    item_max_tokens:    each item is cut to this many tokens (8..1024).
    recent_fraction:    share of the history budget given to the newest items (0..1).
    diversity_pool:     older items considered for the diverse share (1..100000).
    temperature:        0 means greedy decoding (repeatable); > 0 samples with ``seed``.
    seed:               sampling seed.
    """

    max_tokens: int = 128
    max_history_tokens: int = 512
    item_max_tokens: int = 96
    recent_fraction: float = 0.5
    diversity_pool: int = 256
    temperature: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("max_tokens", self.max_tokens, 16, 512),
            ("max_history_tokens", self.max_history_tokens, 64, 32768),
            ("item_max_tokens", self.item_max_tokens, 8, 1024),
            ("diversity_pool", self.diversity_pool, 1, 100000),
        ]
        for name, value, low, high in checks:
            if not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{name} must be an integer in {low}..{high}, got {value!r}")
        if not 0.0 <= self.recent_fraction <= 1.0:
            raise ConfigError(f"recent_fraction must be in 0..1, got {self.recent_fraction!r}")
        if not 0.0 <= self.temperature <= 5.0:
            raise ConfigError(f"temperature must be in 0..5, got {self.temperature!r}")


@dataclass(frozen=True)
class Summary:
    """A summary and where it came from.

    text:        the cleaned summary (plain text, one paragraph).
    model_id:    the model that wrote it.
    task:        the task description it was written for.
    items_used:  how many history items went into the prompt.
    prompt_tokens: tokens of the whole prompt.
    seconds:     time to choose the items and generate (0 when it came from the cache).
    cached:      True when read back from the vault instead of generated.
    """

    text: str
    model_id: str
    task: str
    items_used: int
    prompt_tokens: int
    seconds: float
    cached: bool = False


class BlobVault(Protocol):
    """What the summary cache needs from a vault (``p2p_local.store.vault.Vault`` has it)."""

    def history_digest(self) -> str: ...
    def put_blob(self, name: str, data: bytes) -> None: ...
    def get_blob(self, name: str) -> bytes | None: ...


# --- choosing the history that fits --------------------------------------------------------


def _timestamp(value: str | float | None) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:  # naive times are taken as UTC, so they compare with aware ones
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def recency_order(items: Sequence[HistoryItem]) -> list[int]:
    """Positions of ``items`` from oldest to newest (see the module docstring)."""
    stamps = [_timestamp(it.time) for it in items]
    if items and all(s is not None for s in stamps):
        return sorted(range(len(items)), key=lambda i: (stamps[i], i))
    return list(range(len(items)))


def render_item(item: HistoryItem) -> str:
    """One history item as one line of plain text, with its rating or label."""
    text = " ".join(item.text.split())
    extras = []
    if item.score is not None:
        extras.append(f"rating {item.score:g}")
    if item.label:
        extras.append(f"label {item.label.strip()}")
    return f"{text} ({', '.join(extras)})" if extras else text


def _truncate(text: str, max_tokens: int, count_tokens: Callable[[str], int]) -> str:
    """``text`` cut at a word boundary to at most ``max_tokens`` tokens."""
    text = text[: max_tokens * 8]  # no token is longer than ~8 characters of ordinary text
    if count_tokens(text) <= max_tokens:
        return text
    words = text.split(" ")
    low, high = 0, len(words)  # binary search for the longest prefix that fits
    while low < high:
        mid = (low + high + 1) // 2
        if count_tokens(" ".join(words[:mid]) + " ...") <= max_tokens:
            low = mid
        else:
            high = mid - 1
    return " ".join(words[:low]) + " ..." if low else ""


@dataclass(frozen=True)
class Selection:
    """The history lines chosen for the prompt, oldest first, and their total tokens."""

    positions: list[int]
    lines: list[str]
    tokens: int


def select_items(
    items: Sequence[HistoryItem],
    budget: int,
    count_tokens: Callable[[str], int],
    settings: SummarySettings,
) -> Selection:
    """Recent plus diverse items within ``budget`` tokens (see the module docstring)."""
    order = recency_order(items)  # oldest .. newest
    chosen: dict[int, tuple[str, int]] = {}
    used = 0

    def try_add(pos: int) -> bool:
        nonlocal used
        line = _truncate(render_item(items[pos]), settings.item_max_tokens, count_tokens)
        if not line:
            return False
        cost = count_tokens("- " + line + "\n")
        if used + cost > budget:
            return False
        chosen[pos] = (line, cost)
        used += cost
        return True

    recent_budget = int(budget * settings.recent_fraction)
    cursor = len(order) - 1
    while cursor >= 0 and used < recent_budget:
        if not try_add(order[cursor]) and used > 0:
            break
        cursor -= 1

    older = order[: cursor + 1]
    if older and used < budget:
        step = max(1, len(older) // settings.diversity_pool)
        pool = older[::-1][::step][: settings.diversity_pool]  # newest first, spread evenly
        words = {p: set(tokenize(items[p].text)) for p in pool}
        picked = [set(tokenize(items[p].text)) for p in chosen]
        distance = {p: min((_jaccard_distance(words[p], w) for w in picked), default=1.0)
                    for p in pool}
        misses = 0
        while distance and used < budget and misses < 8:
            best = max(distance, key=lambda p: (distance[p], p))
            del distance[best]
            if try_add(best):
                misses = 0
                for p in distance:
                    distance[p] = min(distance[p], _jaccard_distance(words[p], words[best]))
            else:
                misses += 1
    positions = sorted(chosen, key=order.index)
    return Selection(
        positions=positions, lines=[chosen[p][0] for p in positions], tokens=used
    )


def _jaccard_distance(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 0.0
    return 1.0 - len(a & b) / len(a | b)


# --- prompting ------------------------------------------------------------------------------


def build_messages(lines: Sequence[str], task: str) -> list[Message]:
    """The chat messages that ask for a summary of the history ``lines``."""
    history = "\n".join(f"- {line}" for line in lines)
    user = f"Things one person wrote, rated or chose:\n{history}\n\n" + INSTRUCTION.format(
        task=task.strip()
    )
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user},
    ]


def _prompt_overhead(backend: ChatBackend, task: str) -> int:
    empty = build_messages([], task)
    return sum(backend.count_tokens(m["content"]) for m in empty) + 32  # + chat template


_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*")
_BULLET = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,2}[.)])\s+")
_EMPHASIS = re.compile(r"(\*\*|__|\*|`)")
_LABEL = re.compile(
    r"^(?:summary|profile|user profile|behavioural summary|behavioral summary|answer|"
    r"description)\s*:\s*",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_NEAR_DUPLICATE = 0.6  # share of a sentence's content words already in one earlier sentence


def _ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


_SUBJECT_WORDS = frozenset({"user", "person", "they", "them", "their"})


def _content_words(sentence: str) -> set[str]:
    """Content words of a sentence (no stopwords, no "this user"/"they" subject words)."""
    return set(tokenize(sentence)) - _SUBJECT_WORDS


def _repeats(sentence: str, earlier: Sequence[set[str]]) -> bool:
    """True when most of the sentence's content words were said in one earlier sentence."""
    words = _content_words(sentence)
    return bool(words) and any(len(words & w) / len(words) >= _NEAR_DUPLICATE for w in earlier)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


_CAPITALIZED = re.compile(r"\b[A-Z][\w'-]*\b")


def history_entities(lines: Sequence[str]) -> frozenset[str]:
    """Likely names in the history: words capitalized inside a sentence (not at its start)
    that never occur in lower case, e.g. people, places, brands."""
    lower = {w for w in re.findall(r"[\w'-]+", " ".join(lines)) if w[:1].islower()}
    found: set[str] = set()
    for line in lines:
        for sentence in _sentences(line):
            for match in _CAPITALIZED.finditer(sentence):
                word = match.group(0)
                if match.start() == 0 or word == "I" or word.lower() in lower:
                    continue
                found.add(word)
    return frozenset(found)


def _names_entity(sentence: str, entities: frozenset[str]) -> bool:
    return any(w in entities for w in re.findall(r"[\w'-]+", sentence))


def clean_summary(
    raw: str,
    prompt: str,
    count_tokens: Callable[[str], int],
    max_tokens: int,
    entities: frozenset[str] = frozenset(),
) -> str:
    """The model's reply as one plain paragraph (see the module docstring). Sentences that
    name one of ``entities`` are dropped; if that would leave nothing, the names are replaced
    by "someone" instead."""
    lines = []
    for line in raw.splitlines():
        if _HEADING.match(line):  # a heading labels the text; it is not part of it
            continue
        is_item = bool(_BULLET.match(line))
        line = _EMPHASIS.sub("", _BULLET.sub("", line)).strip()
        if not line or line.endswith(":"):  # a lead-in such as "Their habits are:"
            continue
        if is_item and line[-1] not in ".!?":
            line += "."  # list items become sentences
        lines.append(line)
    text = _LABEL.sub("", " ".join(lines).strip())
    prompt_grams = _ngrams(_words(prompt), _ECHO_NGRAM)
    kept: list[str] = []
    seen: list[set[str]] = []
    for sentence in _sentences(text):
        if not _words(sentence) or _repeats(sentence, seen):
            continue
        seen.append(_content_words(sentence))
        if _ngrams(_words(sentence), _ECHO_NGRAM) & prompt_grams:
            continue
        kept.append(sentence)
    if entities:
        without = [x for x in kept if not _names_entity(x, entities)]
        if without:
            kept = without
        else:
            pattern = r"\b(?:" + "|".join(map(re.escape, sorted(entities))) + r")\b"
            kept = [re.sub(r"someone(?:\s+someone)+", "someone", re.sub(pattern, "someone", x))
                    for x in kept]
    # Whole sentences within the cap; an unfinished last sentence is dropped if others exist.
    out: list[str] = []
    for sentence in kept:
        if count_tokens(" ".join([*out, sentence])) > max_tokens:
            break
        out.append(sentence)
    if len(out) > 1 and out[-1][-1:] not in ".!?\"'":
        out.pop()
    if not out and kept:  # one long sentence: cut it at a word boundary
        return _truncate(kept[0], max_tokens, count_tokens)
    return " ".join(out)


def _generate(backend: ChatBackend, messages: list[Message], settings: GenerationSettings) -> str:
    """The reply, streamed, stopping early once the model starts repeating a sentence
    (small models loop under greedy decoding; the rest would be cut by cleaning anyway)."""
    text = ""
    pieces = backend.stream(messages, settings)
    try:
        for piece in pieces:
            text += piece
            if not any(c in piece for c in ".!?\n"):
                continue
            done = _sentences(text)[:-1]  # the last one may still be growing
            if len(done) >= 2 and _repeats(done[-1], [_content_words(s) for s in done[:-1]]):
                break
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()  # ends the backend's generation now (and releases its lock)
    return text


def model_id_of(backend: ChatBackend) -> str:
    """The id a backend's summaries are cached under: its ``model_id`` when it has one, else
    its name plus the file name of its ``model_path``, else its name."""
    explicit = getattr(backend, "model_id", None)
    if explicit:
        return str(explicit)
    path = getattr(backend, "model_path", None)
    return f"{backend.name}:{Path(path).name}" if path else str(backend.name)


def summarize(
    items: Sequence[HistoryItem],
    backend: ChatBackend,
    *,
    task: str | None = None,
    settings: SummarySettings | None = None,
) -> Summary:
    """A behavioural summary of ``items`` for ``task`` written by ``backend``.

    Raises :class:`ModelError` when the model's reply is empty after cleaning, twice.
    """
    settings = settings or SummarySettings()
    task = (task or DEFAULT_TASK).strip()
    if not items:
        raise EmptyHistoryError("the history is empty: ingest first: p2p-local ingest FILE")
    room = backend.n_ctx() - _prompt_overhead(backend, task) - settings.max_tokens - _MARGIN_TOKENS
    budget = min(settings.max_history_tokens, room)
    if budget < settings.item_max_tokens // 2:
        raise ConfigError(
            f"the model's context ({backend.n_ctx()} tokens) leaves {budget} tokens for history: "
            "lower max_tokens or use a larger context"
        )
    start = _time.perf_counter()
    selection = select_items(items, budget, backend.count_tokens, settings)
    messages = build_messages(selection.lines, task)
    prompt = "\n".join(m["content"] for m in messages)
    entities = history_entities(selection.lines)
    text = ""
    for attempt in range(2):  # greedy first; if that says nothing usable, one sampled retry
        gen = GenerationSettings(
            max_tokens=settings.max_tokens,
            temperature=settings.temperature if attempt == 0 else max(settings.temperature, 0.7),
            seed=settings.seed + attempt,
        )
        raw = _generate(backend, messages, gen)
        text = clean_summary(raw, prompt, backend.count_tokens, settings.max_tokens, entities)
        if text:
            break
    if not text:
        raise ModelError(
            f"model {model_id_of(backend)!r} wrote no usable summary: "
            "try a larger base model or set a summary yourself"
        )
    return Summary(
        text=text,
        model_id=model_id_of(backend),
        task=task,
        items_used=len(selection.positions),
        prompt_tokens=sum(backend.count_tokens(m["content"]) for m in messages),
        seconds=_time.perf_counter() - start,
    )


# --- the encrypted cache --------------------------------------------------------------------


def summary_blob_name(model_id: str, task: str) -> str:
    """The vault blob that holds the summary for this model and task."""
    key = hashlib.sha256(f"{model_id}\0{task.strip()}".encode()).hexdigest()[:32]
    return f"profile-summary-{key}"


def _cache_key(digest: str, model_id: str, task: str, settings: SummarySettings) -> dict:
    return {
        "version": PROMPT_VERSION,
        "history_digest": digest,
        "model_id": model_id,
        "task": task.strip(),
        "settings": asdict(settings),
    }


def read_cached_summary(
    vault: BlobVault,
    model_id: str,
    *,
    task: str | None = None,
    settings: SummarySettings | None = None,
    digest: str | None = None,
) -> Summary | None:
    """The cached summary if it is still valid for the vault's current history, else None.

    Valid means: same history digest, model id, task, settings and prompt version.
    """
    settings = settings or SummarySettings()
    task = (task or DEFAULT_TASK).strip()
    key = _cache_key(digest or vault.history_digest(), model_id, task, settings)
    blob = vault.get_blob(summary_blob_name(model_id, task))
    if blob is None:
        return None
    try:
        entry = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    return Summary(
        text=str(entry["text"]),
        model_id=model_id,
        task=task,
        items_used=int(entry.get("items_used", 0)),
        prompt_tokens=int(entry.get("prompt_tokens", 0)),
        seconds=0.0,
        cached=True,
    )


def write_cached_summary(
    vault: BlobVault, summary: Summary, digest: str, settings: SummarySettings | None = None
) -> None:
    """Store ``summary`` (made from the history with ``digest``) encrypted in the vault.

    One blob per model and task: a newer summary replaces the stale one.
    """
    settings = settings or SummarySettings()
    entry = {
        "key": _cache_key(digest, summary.model_id, summary.task, settings),
        "text": summary.text,
        "items_used": summary.items_used,
        "prompt_tokens": summary.prompt_tokens,
    }
    name = summary_blob_name(summary.model_id, summary.task)
    vault.put_blob(name, json.dumps(entry, sort_keys=True).encode("utf-8"))


def cached_summary(
    vault: BlobVault,
    items: Sequence[HistoryItem | StoredItem] | Callable[[], Sequence[HistoryItem | StoredItem]],
    backend: ChatBackend | Callable[[], ChatBackend],
    *,
    model_id: str | None = None,
    task: str | None = None,
    settings: SummarySettings | None = None,
    refresh: bool = False,
) -> Summary:
    """The summary for the vault's current history: from the encrypted cache when still valid,
    else written by the model and cached (``refresh`` skips the lookup).

    ``items`` and ``backend`` may be zero-argument callables, so that a cache hit neither
    decrypts the history nor loads a model; a callable backend needs ``model_id``.
    """
    settings = settings or SummarySettings()
    task = (task or DEFAULT_TASK).strip()
    lazy_backend = not hasattr(backend, "chat")
    if model_id is None:
        if lazy_backend:
            raise ConfigError("model_id is required when the backend is passed as a callable")
        model_id = model_id_of(backend)  # type: ignore[arg-type]
    digest = vault.history_digest()  # before reading: an item added meanwhile makes it stale
    if not refresh:
        hit = read_cached_summary(vault, model_id, task=task, settings=settings, digest=digest)
        if hit is not None:
            return hit
    got = items() if callable(items) else items
    history = [it.item if isinstance(it, StoredItem) else it for it in got]
    model = backend() if lazy_backend else backend  # type: ignore[operator]
    summary = summarize(history, model, task=task, settings=settings)  # type: ignore[arg-type]
    if summary.model_id != model_id:
        summary = Summary(**{**asdict(summary), "model_id": model_id})
    write_cached_summary(vault, summary, digest, settings)
    return summary
