"""Reading history files into vaults: JSONL, LaMP question files, ChatGPT exports.

Owns the input schemas, their validation (one :class:`Rejection` with a line number and a
reason per bad line or item, never an exception for bad data), and the streaming ingest loop:
items are committed to the vault in batches, so memory stays flat whatever the file size.

- JSONL is read line by line; a line longer than ``max_line_bytes`` is skipped unread.
- LaMP and ChatGPT files are one JSON array; a small scanner splits it into its top-level
  elements without parsing the whole file, so memory is bounded by the largest element
  (``max_element_bytes``; one LaMP question with its profile, or one ChatGPT conversation).

Does not own where vaults live or how users are named (``p2p_local.api``).
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from p2p_local.errors import ConfigError, InputError
from p2p_local.store.records import KINDS, HistoryItem
from p2p_local.store.vault import AddResult, Vault

FORMATS = ("auto", "jsonl", "lamp", "chatgpt")
_BOM = b"\xef\xbb\xbf"
JSONL_FIELDS = ("text", "input", "output", "kind", "label", "score", "time", "source", "id", "meta")


@dataclass(frozen=True)
class IngestSettings:
    """Limits and batching for ingest.

    batch_size:        items per vault transaction (a crash loses at most one batch).
    max_line_bytes:    longest accepted JSONL line.
    max_element_bytes: largest accepted top-level element of a JSON array file.
    max_errors_kept:   rejections kept in the report (all are counted).
    background_writer: write batches in a background thread while the next one is parsed.
    """

    batch_size: int = 5000
    max_line_bytes: int = 1024 * 1024
    max_element_bytes: int = 64 * 1024 * 1024
    max_errors_kept: int = 1000
    background_writer: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_line_bytes", "max_element_bytes", "max_errors_kept"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class Rejection:
    """A line (or an item within a JSON array element) that was not stored, and why."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class Parsed:
    """A valid item; ``user`` is the file's own user id (LaMP ``user_id``), if any."""

    line: int
    item: HistoryItem
    user: str | None = None


@dataclass(frozen=True)
class IngestReport:
    """The outcome of one ingest. ``users`` maps each target (None: the named user) to its
    :class:`AddResult`; ``stored`` is False when ``strict`` refused the whole file; ``created``
    lists vaults made on the way (LaMP files with user ids) with their recovery codes."""

    path: str
    format: str
    added: int
    duplicates: int
    rejected: int
    errors: tuple[Rejection, ...] = ()
    stored: bool = True
    users: dict[str | None, AddResult] = field(default_factory=dict)
    created: dict[str, str] = field(default_factory=dict)  # new vault name -> recovery code

    @property
    def ok(self) -> bool:
        return self.rejected == 0


# --- JSON helpers -------------------------------------------------------------------------


class _Bad(ValueError):
    """A reason for rejecting one line or item."""


def _reject_constant(name: str) -> Any:
    raise _Bad(f"{name} is not valid JSON (only finite numbers are allowed)")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Bad(f"number {text} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_parse_float)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _loads(data: bytes, what: str) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Bad(f"invalid UTF-8 at byte {exc.start} of the {what}") from None
    try:
        value = _DECODER.decode(text)
    except _Bad:
        raise
    except json.JSONDecodeError as exc:
        raise _Bad(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise _Bad("JSON nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad("contains an unpaired UTF-16 surrogate escape (like \\ud800)") from None
    return value


def _jtype(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _opt_str(obj: dict[str, Any], name: str, *, numbers: bool = False) -> str | None:
    value = obj.get(name)
    if value is None or isinstance(value, str):
        return value
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _Bad(f"'{name}' must be a string, got {_jtype(value)}")


def item_from_json(obj: object, *, source: str | None = None) -> HistoryItem:
    """One JSONL object to a :class:`HistoryItem` (raises :class:`InputError` with the reason).

    Schema: ``text``, or an ``input``/``output`` pair (then ``text`` defaults to both joined by
    a newline); optional ``kind`` (text|pair|rating|chat|tag|other; default pair for pairs,
    rating when a score is given, else text), ``label`` (string), ``score`` (finite number),
    ``time`` (string or number), ``source`` (default: the ``source`` argument, else unset; unset
    keeps exported files re-ingestable as exact duplicates), ``id`` (string or integer),
    ``meta`` (object). Other keys are kept in ``meta``.
    """
    try:
        return _item_from_json(obj, source)
    except _Bad as exc:
        raise InputError(str(exc)) from None


def _item_from_json(obj: object, source: str | None) -> HistoryItem:
    if not isinstance(obj, dict):
        raise _Bad(f"expected a JSON object, got {_jtype(obj)}")
    text = _opt_str(obj, "text")
    inp = _opt_str(obj, "input")
    out = _opt_str(obj, "output")
    pair = inp is not None or out is not None
    if pair and (inp is None or out is None):
        raise _Bad("'input' and 'output' go together: give both, or use 'text'")
    if text is None or not text.strip():
        if not pair:
            raise _Bad("missing 'text' (or an 'input'/'output' pair)")
        text = f"{inp}\n{out}"
        if not text.strip():
            raise _Bad("'input' and 'output' are both empty")
    score = obj.get("score")
    if score is not None and (
        isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score)
    ):
        raise _Bad(f"'score' must be a finite number, got {_jtype(score)}")
    kind = obj.get("kind")
    if kind is None:
        kind = "pair" if pair else ("rating" if score is not None else "text")
    elif kind not in KINDS:
        raise _Bad(f"'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    when = obj.get("time")
    if when is not None and (isinstance(when, bool) or not isinstance(when, (str, int, float))):
        raise _Bad(f"'time' must be a string or a number, got {_jtype(when)}")
    meta = obj.get("meta")
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        raise _Bad(f"'meta' must be an object, got {_jtype(meta)}")
    extra = {k: v for k, v in obj.items() if k not in JSONL_FIELDS}
    if extra:
        meta = {**extra, **meta}
    src = obj.get("source", source)
    if src is not None and not isinstance(src, str):
        raise _Bad(f"'source' must be a string, got {_jtype(src)}")
    return HistoryItem(
        text=text,
        input=inp,
        output=out,
        kind=kind,
        label=_opt_str(obj, "label", numbers=True),
        score=score,
        time=when,
        source=src,
        id=_opt_str(obj, "id", numbers=True),
        meta=meta,
    )


# --- JSONL -----------------------------------------------------------------------------------


def _parse_jsonl(fh: BinaryIO, settings: IngestSettings) -> Iterator[Parsed | Rejection]:
    cap = settings.max_line_bytes
    lineno = 0
    while True:
        raw = fh.readline(cap + 2)
        if not raw:
            return
        lineno += 1
        if lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if not raw.endswith(b"\n") and len(raw) >= cap + 2:
            while raw and not raw.endswith(b"\n"):  # skip the rest of the line unread
                raw = fh.readline(1 << 20)
            yield Rejection(lineno, f"line is longer than the {cap}-byte limit")
            continue
        body = raw.rstrip(b"\n").rstrip(b"\r")
        if not body.strip():
            continue  # blank lines are allowed
        try:
            yield Parsed(lineno, _item_from_json(_loads(body, "line"), None))
        except _Bad as exc:
            yield Rejection(lineno, str(exc))
        except InputError as exc:  # HistoryItem's own checks
            yield Rejection(lineno, str(exc))


# --- JSON arrays (LaMP, ChatGPT) ---------------------------------------------------------------

_OUTSIDE = re.compile(rb'[{}\[\]",]')
_INSIDE = re.compile(rb'["\\]')
_WHITESPACE = b" \t\r\n"


@dataclass(frozen=True)
class _Element:
    index: int
    line: int
    data: bytes | None
    error: str | None = None


def _iter_array(fh: BinaryIO, max_bytes: int, chunk: int = 1 << 20) -> Iterator[_Element]:
    """The top-level elements of a JSON array, as raw bytes, scanning in constant memory.

    Only the structure is scanned (brackets, strings, commas); each element is parsed later
    on its own, so one bad element does not spoil the rest.
    """
    state = "start"  # start -> between -> element -> between ... -> end
    line = 1
    index = 0
    depth = 0
    in_str = escape = expect_comma = oversize = False
    pieces: list[bytes] = []
    size = el_line = 0
    first = True
    while True:
        buf = fh.read(chunk)
        if not buf:
            break
        if first and buf.startswith(_BOM):
            buf = buf[len(_BOM) :]
        first = False
        i, n = 0, len(buf)
        while i < n:
            if state == "element":
                start = i
                done = False
                while i < n:
                    if escape:
                        escape = False
                        i += 1
                    elif in_str:
                        m = _INSIDE.search(buf, i)
                        if m is None:
                            i = n
                        elif buf[m.start()] == 0x5C:  # backslash: skip the escaped byte
                            i = m.start() + 2
                            if i > n:
                                escape, i = True, n
                        else:
                            in_str, i = False, m.end()
                    else:
                        m = _OUTSIDE.search(buf, i)
                        if m is None:
                            i = n
                            continue
                        c = buf[m.start()]
                        if c == 0x22:  # "
                            in_str, i = True, m.end()
                        elif c in (0x7B, 0x5B):  # { [
                            depth, i = depth + 1, m.end()
                        elif c in (0x7D, 0x5D) and depth > 0:  # } ]
                            depth, i = depth - 1, m.end()
                            done = depth == 0
                        elif depth == 0:  # ',' or ']' ends a scalar element
                            i, done = m.start(), True
                        else:
                            i = m.end()
                        if done:
                            break
                seg = buf[start:i]
                line += seg.count(b"\n")
                if not oversize:
                    size += len(seg)
                    if size > max_bytes:
                        oversize, pieces = True, []
                    else:
                        pieces.append(seg)
                if done:
                    if oversize:
                        yield _Element(
                            index, el_line, None, f"larger than the {max_bytes}-byte limit"
                        )
                    else:
                        yield _Element(index, el_line, b"".join(pieces))
                    index += 1
                    state, pieces, size, oversize, expect_comma = "between", [], 0, False, True
                continue
            c = buf[i]
            if c in _WHITESPACE:
                line += c == 0x0A
                i += 1
            elif state == "start":
                if c != 0x5B:
                    raise InputError("the file is not a JSON array (it should start with '[')")
                state, i = "between", i + 1
            elif state == "between":
                if c == 0x5D:  # ]
                    state, i = "end", i + 1
                elif c == 0x2C and expect_comma:
                    expect_comma, i = False, i + 1
                elif c in (0x2C, 0x7D):  # a stray ',' or '}'
                    yield _Element(index, line, None, f"unexpected {chr(c)!r}")
                    i += 1
                else:
                    if expect_comma:
                        yield _Element(index, line, None, "missing ',' before this element")
                    state, depth, in_str, escape = "element", 0, False, False
                    el_line, pieces, size, oversize = line, [], 0, False
            else:  # after the closing bracket
                yield _Element(index, line, None, "unexpected data after the end of the array")
                return
    if state == "start":
        raise InputError("the file is empty: expected a JSON array")
    if state != "end":
        yield _Element(
            index,
            el_line if state == "element" else line,
            None,
            "the file ends before the array is closed (is it truncated?)",
        )


def _array_records(
    fh: BinaryIO,
    settings: IngestSettings,
    convert: Callable[[Any, int], Iterator[Parsed | Rejection]],
    what: str,
) -> Iterator[Parsed | Rejection]:
    for el in _iter_array(fh, settings.max_element_bytes):
        label = f"{what} {el.index}"
        if el.data is None:
            yield Rejection(el.line, f"{label}: {el.error}")
            continue
        try:
            obj = _loads(el.data, what)
        except _Bad as exc:
            yield Rejection(el.line, f"{label}: {exc}")
            continue
        if not isinstance(obj, dict):
            yield Rejection(el.line, f"{label}: expected a JSON object, got {_jtype(obj)}")
            continue
        for rec in convert(obj, el.line):
            if isinstance(rec, Rejection):
                yield Rejection(rec.line, f"{label}: {rec.reason}")
            else:
                yield rec


# --- LaMP -------------------------------------------------------------------------------------

_LAMP_TEXT_FIELDS = ("text", "title", "abstract", "description", "reviewText", "content")


def lamp_profile_item(p: object) -> HistoryItem:
    """One LaMP/LongLaMP profile entry to a history item (raises :class:`InputError`).

    - ``description`` + ``tag`` (LaMP-2 movies): a tag item labelled with the tag.
    - ``title`` + ``abstract`` (LaMP-1/5): a pair, abstract -> title.
    - ``text`` + ``title`` + ``category`` (LaMP-2 news): a tag item labelled with the category.
    - ``text`` + ``title`` (LaMP-4): a pair, article -> headline.
    - ``text`` + ``score`` (LaMP-3): a rating (scores given as strings are converted).
    - ``text`` alone (LaMP-7): a text item.
    ``date`` becomes ``time``, ``id`` stays the item's id; other fields go to ``meta``.
    """
    try:
        return _lamp_item(p)
    except _Bad as exc:
        raise InputError(str(exc)) from None


def _lamp_item(p: object) -> HistoryItem:
    if not isinstance(p, dict):
        raise _Bad(f"profile entry must be an object, got {_jtype(p)}")
    get = {
        k: _opt_str(p, k, numbers=k in ("id", "tag", "category"))
        for k in (
            "text",
            "title",
            "abstract",
            "description",
            "tag",
            "category",
            "id",
            "date",
            "reviewText",
            "content",
        )
    }
    used = {"id", "date", "score", "overall"}
    score = p.get("score", p.get("overall"))
    if score is not None:
        try:
            score = float(score)
        except (TypeError, ValueError):
            raise _Bad(f"'score' must be a number, got {score!r}") from None
        if isinstance(p.get("score"), bool) or not math.isfinite(score):
            raise _Bad(f"'score' must be a finite number, got {p.get('score')!r}")
    text, title, abstract = get["text"], get["title"], get["abstract"]
    kw: dict[str, Any] = {}
    if get["description"] and get["tag"]:
        kw = {"text": get["description"], "kind": "tag", "label": get["tag"]}
        used |= {"description", "tag"}
    elif title and abstract:
        kw = {"text": f"{abstract}\n{title}", "kind": "pair", "input": abstract, "output": title}
        used |= {"title", "abstract"}
    elif text and title and get["category"]:
        kw = {"text": f"{title}\n{text}", "kind": "tag", "label": get["category"]}
        used |= {"text", "title", "category"}
    elif text and title:
        kw = {"text": f"{text}\n{title}", "kind": "pair", "input": text, "output": title}
        used |= {"text", "title"}
    else:
        body = next((get[k] for k in _LAMP_TEXT_FIELDS if get.get(k)), None)
        if not body or not body.strip():
            raise _Bad(
                "profile entry has no text (expected 'text', 'title'/'abstract' or 'description')"
            )
        name = next(k for k in _LAMP_TEXT_FIELDS if get.get(k) == body)
        used.add(name)
        kw = {"text": body, "kind": "rating" if score is not None else "text"}
    meta = {k: v for k, v in p.items() if k not in used}
    return HistoryItem(**kw, score=score, time=get["date"], source="lamp", id=get["id"], meta=meta)


def _lamp_convert(obj: dict[str, Any], line: int) -> Iterator[Parsed | Rejection]:
    profile = obj.get("profile")
    if not isinstance(profile, list):
        yield Rejection(line, "question has no 'profile' list")
        return
    uid = obj.get("user_id")
    if uid is not None and (isinstance(uid, bool) or not isinstance(uid, (str, int))):
        yield Rejection(line, f"'user_id' must be a string or an integer, got {_jtype(uid)}")
        return
    user = None if uid is None else str(uid)
    for j, entry in enumerate(profile):
        try:
            yield Parsed(line, _lamp_item(entry), user)
        except (_Bad, InputError) as exc:
            yield Rejection(line, f"profile entry {j}: {exc}")


# --- ChatGPT export -----------------------------------------------------------------------


def _chatgpt_convert(obj: dict[str, Any], line: int) -> Iterator[Parsed | Rejection]:
    mapping = obj.get("mapping")
    if not isinstance(mapping, dict):
        yield Rejection(line, "conversation has no 'mapping' object")
        return
    title = obj.get("title") if isinstance(obj.get("title"), str) else None
    conv_time = obj.get("create_time")
    found: list[tuple[float, Parsed]] = []
    for node_id, node in mapping.items():
        msg = node.get("message") if isinstance(node, dict) else None
        if not isinstance(msg, dict):
            continue  # the root and system nodes carry no message
        author = msg.get("author")
        if not isinstance(author, dict) or author.get("role") != "user":
            continue
        meta_flags = msg.get("metadata")
        if isinstance(meta_flags, dict) and meta_flags.get("is_visually_hidden_from_conversation"):
            continue
        content = msg.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list):
            yield Rejection(line, f"message {node_id}: no 'content.parts' list")
            continue
        text = "\n".join(p for p in parts if isinstance(p, str)).strip()
        if not text:
            continue  # an image or file upload without text
        when = msg.get("create_time")
        if not isinstance(when, (int, float)) or isinstance(when, bool):
            when = conv_time if isinstance(conv_time, (int, float)) else None
        item = HistoryItem(
            text=text,
            kind="chat",
            time=when,
            source="chatgpt",
            id=str(msg.get("id") or node_id),
            meta={"conversation": title} if title else {},
        )
        found.append((float(when) if when is not None else math.inf, Parsed(line, item)))
    found.sort(key=lambda pair: pair[0])
    for _, parsed in found:
        yield parsed


# --- detection and the ingest loop -----------------------------------------------------------


def detect_format(path: Path) -> str:
    """``jsonl``, ``lamp`` or ``chatgpt``, from the extension and the first element."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    with open(path, "rb") as fh:
        head = fh.read(4096)
        if head.startswith(_BOM):
            head = head[len(_BOM) :]
        if not head.lstrip().startswith(b"["):
            return "jsonl"
        fh.seek(0)
        first = next(iter(_iter_array(fh, 64 * 1024 * 1024)), None)
    if first is None or first.data is None:
        return "lamp"
    try:
        obj = _loads(first.data, "element")
    except _Bad:
        obj = None
    if isinstance(obj, dict) and "mapping" in obj:
        return "chatgpt"
    if isinstance(obj, dict) and "profile" in obj:
        return "lamp"
    raise InputError(
        f"{path} is a JSON array but neither a LaMP questions file (objects with 'profile') "
        "nor a ChatGPT export (objects with 'mapping'): pass --format"
    )


def _records(fh: BinaryIO, fmt: str, settings: IngestSettings) -> Iterator[Parsed | Rejection]:
    if fmt == "jsonl":
        return _parse_jsonl(fh, settings)
    if fmt == "lamp":
        return _array_records(fh, settings, _lamp_convert, "question")
    return _array_records(fh, settings, _chatgpt_convert, "conversation")


def iter_records(
    path: Path, format: str = "auto", settings: IngestSettings | None = None
) -> Iterator[Parsed | Rejection]:
    """Every valid item and every rejection of a file, in file order (streamed)."""
    settings = settings or IngestSettings()
    fmt = _resolve_format(Path(path), format)
    with _open_input(Path(path)) as fh:
        yield from _records(fh, fmt, settings)


def _resolve_format(path: Path, format: str) -> str:
    if format not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if not path.is_file():
        raise InputError(f"cannot read {path}: no such file")
    return detect_format(path) if format == "auto" else format


def _open_input(path: Path) -> BinaryIO:
    try:
        return open(path, "rb", buffering=1 << 20)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


Resolve = Callable[[str | None], Vault]
Progress = Callable[[int, int], None]


def ingest_file(
    path: Path,
    resolve: Resolve,
    *,
    format: str = "auto",
    strict: bool = False,
    settings: IngestSettings | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Stream ``path`` into vaults. ``resolve(user_id)`` gives the vault for a file's own user
    id (None for items without one). Good items are committed in batches; bad ones are
    reported. With ``strict`` the file is validated first and stored only when every line is
    good (in one transaction when all items go to one vault)."""
    path = Path(path)
    settings = settings or IngestSettings()
    fmt = _resolve_format(path, format)
    total = path.stat().st_size
    errors: list[Rejection] = []
    rejected = 0

    def reject(rec: Rejection) -> None:
        nonlocal rejected
        rejected += 1
        if len(errors) < settings.max_errors_kept:
            errors.append(rec)

    if strict:
        targets: set[str | None] = set()
        with _open_input(path) as fh:
            for n, rec in enumerate(_records(fh, fmt, settings)):
                if isinstance(rec, Rejection):
                    reject(rec)
                else:
                    targets.add(rec.user)
                if progress and n % settings.batch_size == 0:
                    progress(fh.tell() // 2, total)
        if rejected:
            return IngestReport(str(path), fmt, 0, 0, rejected, tuple(errors), stored=False)
        if targets <= {None}:
            vault = resolve(None)
            with vault.writer() as w:
                users = _store(path, fmt, settings, w.add, None, progress, total, half=True)
            return _report(path, fmt, users, (), 0)

    per_user = _store(
        path, fmt, settings, None, resolve, progress, total, half=strict, reject=reject
    )
    return _report(path, fmt, per_user, tuple(errors), rejected)


def _report(
    path: Path,
    fmt: str,
    users: dict[str | None, AddResult],
    errors: tuple[Rejection, ...],
    rejected: int,
) -> IngestReport:
    return IngestReport(
        str(path),
        fmt,
        added=sum(r.added for r in users.values()),
        duplicates=sum(r.duplicates for r in users.values()),
        rejected=rejected,
        errors=errors,
        users=users,
    )


class _Writer:
    """Applies batches to vaults, in one background thread when ``threaded`` (parsing then
    overlaps each commit's disk waits); a failure surfaces in the caller's thread. At most one
    batch waits in the queue, so memory stays bounded."""

    def __init__(self, add: Callable[[str | None, list[HistoryItem]], AddResult], threaded: bool):
        self._add = add
        self.results: dict[str | None, AddResult] = {}
        self._error: BaseException | None = None
        self._queue: queue.Queue[tuple[str | None, list[HistoryItem]] | None] | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=1)
            self._thread = threading.Thread(target=self._run, name="vault-writer", daemon=True)
            self._thread.start()

    def _apply(self, user: str | None, items: list[HistoryItem]) -> None:
        res = self._add(user, items)
        prev = self.results.get(user, AddResult(0, 0))
        self.results[user] = AddResult(prev.added + res.added, prev.duplicates + res.duplicates)

    def _run(self) -> None:
        assert self._queue is not None
        while (job := self._queue.get()) is not None:
            if self._error is None:  # after a failure, drain without writing
                try:
                    self._apply(*job)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    self._error = exc

    def submit(self, user: str | None, items: list[HistoryItem]) -> None:
        if self._error is not None:
            raise self._error
        if self._queue is None:
            self._apply(user, items)
        else:
            self._queue.put((user, items))

    def close(self) -> None:
        """Wait for queued batches; raise the writer's failure, if any."""
        if self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = None
        if self._error is not None:
            raise self._error


def _store(
    path: Path,
    fmt: str,
    settings: IngestSettings,
    add_one: Callable[[list[HistoryItem]], AddResult] | None,
    resolve: Resolve | None,
    progress: Progress | None,
    total: int,
    *,
    half: bool,
    reject: Callable[[Rejection], None] | None = None,
) -> dict[str | None, AddResult]:
    """The storing pass: buffer items per target and hand them to the writer in batches."""

    def add(user: str | None, items: list[HistoryItem]) -> AddResult:
        if add_one is not None:
            return add_one(items)
        return resolve(user).add(items)  # type: ignore[misc]

    # One transaction (add_one) stays in the caller's thread, which holds the vault's lock.
    writer = _Writer(add, threaded=settings.background_writer and add_one is None)
    buffers: dict[str | None, list[HistoryItem]] = {}
    buffered = 0

    def flush() -> None:
        nonlocal buffered
        for user, items in buffers.items():
            writer.submit(user, items)
        buffers.clear()
        buffered = 0

    try:
        with _open_input(path) as fh:
            for rec in _records(fh, fmt, settings):
                if isinstance(rec, Rejection):
                    if reject is None or half:  # the file changed since it was validated
                        raise InputError(f"{path} changed while it was being ingested: {rec}")
                    reject(rec)
                    continue
                buffers.setdefault(rec.user, []).append(rec.item)
                buffered += 1
                if buffered >= settings.batch_size:
                    flush()
                    if progress:
                        pos = fh.tell()
                        progress(total // 2 + pos // 2 if half else pos, total)
            flush()
    except BaseException:
        with contextlib.suppress(BaseException):
            writer.close()  # let queued good batches finish; the first error is the one raised
        raise
    writer.close()
    if progress:
        progress(total, total)
    return writer.results
