"""Quotes by author as a complete-the-quote task, from Debian's fortune cookie packages.

Sources: ``fortunes`` 1:1.99.1-7.3 with its dependency ``fortunes-min`` (same version) and
``fortune-anarchism`` 1.8.0-1 (Debian bookworm), read from ``usr/share/games/fortunes/`` (every
cookie file; the ``.dat`` indexes are skipped). BSD-licensed fortune files; the quotes
themselves belong to their authors: fetched into the local cache only, never committed.

Parsing and choices:
- Cookies are separated by ``%`` lines. A cookie is kept when its last lines are an indented
  attribution ``-- Author, source`` (continuation lines allowed); the quote is the text above.
  Cookies holding several attributed quotes (dialogue collections) are skipped; old
  overstrike accents (``e<backspace>'``) are removed.
- The author is the attribution's first line cut at the first ",", ";", " (", " [", " <",
  quote mark, " in " or " on " (so ``Larry Wall in <msg-id>`` -> ``Larry Wall``), with trailing
  dots and quotes removed. It must start with a capital letter, and a short stoplist drops
  attributions that name no author ("Anonymous", "Unknown", "Seen on ...", "From ...").
  Spellings are not merged ("G. B. Shaw" and "George Bernard Shaw" stay apart). A quote that
  repeats, or lies inside, another quote of the same author (comparing letters and digits
  only) is dropped, so no held-out quote also sits in that author's history.
- Users: authors with >= 5 distinct quotes (``min_items``), id ``fortune.<Author>``.
- A quote can be a query when it has >= 6 words. Its input is a prompt with the first part of the
  quote, its output the rest: the split is after a sentence end (., !, ?) nearest the middle
  within 30-70 % of the words, else after a clause mark (, ; : --), else at the middle word.
- Queries: a seeded random choice (``seed`` and the author) of at most ``max_queries`` eligible
  quotes and at most half the author's quotes. History: the other quotes in file order, as
  ``kind="text"`` items with ``label`` = the cookie file (a topic, e.g. "anarchism").
"""

from __future__ import annotations

import math
import random
import re
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from p2p_local.datasets.base import (
    ConvertSettings,
    Query,
    TaskDataset,
    TaskSpec,
    UserRecord,
    query_count,
    safe_id,
    sample_users,
    trim_history,
    unique_ids,
)
from p2p_local.datasets.fetch import FORTUNE_ANARCHISM, FORTUNES, FORTUNES_MIN, fetch
from p2p_local.errors import DatasetError
from p2p_local.store.records import HistoryItem

NAME = "fortunes"
SOURCES = (FORTUNES, FORTUNES_MIN, FORTUNE_ANARCHISM)
MIN_QUOTES = 5
MIN_QUERY_WORDS = 6
SPEC = TaskSpec(
    name=NAME,
    description="Complete a quotation in the voice of its author, given its first part.",
    kind="generation",
)
_DIR = Path("usr") / "share" / "games" / "fortunes"
_ATTRIBUTION = re.compile(r"^\s+--\s*(\S.*)$")
_CUT = re.compile(r",|;|\s\(|\s\[|\s<|[\"\u201c]|\s+in\s+|\s+on\s+")
_NO_AUTHOR = re.compile(
    r"^(anonymous|unknown|author unknown|seen|overheard|graffiti|from|discussion|winning)\b", re.I
)
_OVERSTRIKE = re.compile(r".\x08")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")
_CLAUSE_END = re.compile(r"([,;:]|--)[\"')\]]*$")


@dataclass(frozen=True)
class Cookie:
    """One attributed quote: file (topic), index in the file, author, text."""

    file: str
    index: int
    author: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.file}:{self.index}"


@dataclass(frozen=True)
class QuoteSplit:
    prefix: str
    rest: str


def author_of(attribution: str) -> str | None:
    """The author named by an attribution line (without the ``--``), or None."""
    name = _CUT.split(_OVERSTRIKE.sub("", attribution).strip(), maxsplit=1)[0]
    name = " ".join(name.split()).strip(" .'\"")
    if len(name) < 2 or not name[0].isupper() or _NO_AUTHOR.match(name):
        return None
    return name


def parse_cookies(text: str, file: str) -> list[Cookie]:
    """The attributed cookies of one fortune file."""
    out: list[Cookie] = []
    chunks = re.split(r"^%\s*$", text.replace("\r\n", "\n"), flags=re.M)
    for index, chunk in enumerate(chunks):
        lines = chunk.strip("\n").split("\n")
        # The attribution: the last "-- " line, followed only by indented continuation lines.
        at = None
        for i in range(len(lines) - 1, 0, -1):
            if _ATTRIBUTION.match(lines[i]):
                at = i
                break
            if not lines[i][:1].isspace():
                break
        if at is None:
            continue
        match = _ATTRIBUTION.match(lines[at])
        assert match is not None
        body = [_OVERSTRIKE.sub("", x).rstrip() for x in lines[:at]]
        if any(_ATTRIBUTION.match(x) for x in body):
            continue  # several attributed quotes in one cookie: no single author
        author = author_of(match.group(1))
        quote = textwrap.dedent("\n".join(body)).strip()
        if author and quote:
            out.append(Cookie(file, index, author, quote))
    return out


def split_quote(text: str) -> QuoteSplit | None:
    """Split a quote into a prompt part and the rest (None when under 6 words)."""
    words = list(re.finditer(r"\S+", text))
    n = len(words)
    if n < MIN_QUERY_WORDS:
        return None
    lo, hi = max(2, math.ceil(0.3 * n)), min(n - 2, math.floor(0.7 * n))
    middle = n / 2
    cut = None
    for pattern in (_SENTENCE_END, _CLAUSE_END):
        candidates = [j for j in range(lo, hi + 1) if pattern.search(words[j - 1].group())]
        if candidates:
            cut = min(candidates, key=lambda j: (abs(j - middle), j))
            break
    if cut is None:
        cut = max(lo, min(hi, round(middle)))
    end = words[cut - 1].end()
    return QuoteSplit(text[:end].strip(), text[end:].strip())


def _distinct(cookies: list[Cookie]) -> list[Cookie]:
    """Drop quotes whose letters and digits repeat, or lie inside, another quote of the list."""
    keys = [re.sub(r"[^a-z0-9]", "", c.text.lower()) for c in cookies]
    keep = []
    for i, c in enumerate(cookies):
        dup = any(
            j != i and keys[i] in keys[j] and (len(keys[i]) < len(keys[j]) or j < i)
            for j in range(len(cookies))
        )
        if not dup and keys[i]:
            keep.append(c)
    return keep


def prompt(prefix: str) -> str:
    return f"Complete this quotation in your own words, going on from where it stops:\n\n{prefix}"


def read_cookies(package_dirs: list[Path]) -> list[Cookie]:
    cookies: list[Cookie] = []
    for pkg in package_dirs:
        folder = pkg / _DIR
        if not folder.is_dir():
            raise DatasetError(f"{folder} is missing: the fortunes package layout changed")
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.endswith((".dat", ".u8")):
                raw = path.read_text(encoding="utf-8", errors="replace")
                cookies.extend(parse_cookies(raw, path.name))
    return cookies


def convert(package_dirs: list[Path], settings: ConvertSettings | None = None) -> TaskDataset:
    """Build the task from the extracted fortune packages."""
    settings = settings or ConvertSettings()
    by_author: dict[str, list[Cookie]] = defaultdict(list)
    for c in read_cookies(package_dirs):
        by_author[c.author].append(c)
    by_author = {a: _distinct(cs) for a, cs in by_author.items()}

    threshold = settings.threshold(MIN_QUOTES)
    authors = sorted(a for a, cs in by_author.items() if len(cs) >= threshold)
    ids = unique_ids(authors, "fortune")
    users: list[UserRecord] = []
    for author in authors:
        cookies = by_author[author]
        splits = {c.id: split_quote(c.text) for c in cookies}
        eligible = [c for c in cookies if splits[c.id] is not None]
        n_q = query_count(len(cookies), len(eligible), settings.max_queries)
        if n_q == 0:
            continue
        rng = random.Random(f"{settings.seed}:{author}")
        chosen = sorted(rng.sample(range(len(eligible)), n_q))
        held = {eligible[i].id for i in chosen}
        queries = []
        for c in cookies:
            split = splits[c.id]
            if c.id in held and split is not None:
                queries.append(
                    Query(
                        id=safe_id("fortune", c.file, str(c.index)),
                        input=prompt(split.prefix),
                        output=split.rest,
                        meta={"item_id": c.id, "prefix": split.prefix},
                    )
                )
        history = [
            HistoryItem(text=c.text, kind="text", label=c.file, source=NAME, id=c.id)
            for c in cookies
            if c.id not in held
        ]
        users.append(
            UserRecord(
                user_id=ids[author],
                task=NAME,
                history=trim_history(history, settings.max_history),
                queries=queries,
                meta={"name": author, "quotes": len(cookies)},
            )
        )
    return TaskDataset(SPEC, sample_users(users, settings), tuple(s.label for s in SOURCES))


def load(settings: ConvertSettings | None = None, *, root: Path | None = None) -> TaskDataset:
    """Fetch the three Debian packages (once) and convert them."""
    return convert([fetch(s, root) for s in SOURCES], settings)
