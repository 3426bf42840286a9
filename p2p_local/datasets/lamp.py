"""LaMP / LongLaMP files to task records and back.

Owns :func:`read_lamp` (a questions file ``[{"id", "input", "profile": [...], "user_id"?}]``
plus an optional outputs file ``{"task", "golds": [{"id", "output"}]}``) and :func:`write_lamp`
(any :class:`TaskDataset` to those two files). Does not download LaMP (no hub here): the files
come from the user.

Mapping of a profile entry to a :class:`HistoryItem`:
- ``text`` = the entry's ``title``, ``text``, ``abstract`` and ``description`` joined by newlines
  (LongLaMP's other string fields, e.g. ``reviewText`` or ``content``, when none of those exist);
- ``score`` = ``float(score)`` when it parses (kind ``rating``); ``label`` = ``tag`` or
  ``category`` (kind ``tag``); otherwise kind ``text``; ``time`` = ``date``; ``id`` = ``id``;
- ``input`` / ``output`` (written for pair items by :func:`write_lamp`) make a ``pair`` item;
- ``meta["lamp"]`` keeps the entry's original fields, so writing it back is exact.

Users: questions that share a ``user_id`` form one user (their profiles merged, first seen
first); a question without ``user_id`` is a user of its own (LaMP's user-based split). Each
query remembers which history items its own profile held (``meta["profile"]``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2p_local.datasets.base import (
    Query,
    TaskDataset,
    TaskSpec,
    UserRecord,
    validate_dataset,
)
from p2p_local.errors import DatasetError
from p2p_local.store.records import HistoryItem

_TEXT_FIELDS = ("title", "text", "abstract", "description")
_RATING = ("1", "2", "3", "4", "5")

# Known tasks (names as in the outputs files' "task"); others default to generation.
LAMP_TASKS: dict[str, TaskSpec] = {
    "LaMP_1": TaskSpec("LaMP_1", "Personalized citation identification: which of two papers "
                       "would the author cite?", "classification", ("[1]", "[2]")),
    "LaMP_2": TaskSpec("LaMP_2", "Personalized tagging or categorization of an item.",
                       "classification"),
    "LaMP_3": TaskSpec("LaMP_3", "Personalized product rating from 1 to 5.", "rating", _RATING),
    "LaMP_4": TaskSpec("LaMP_4", "Personalized news headline generation.", "generation"),
    "LaMP_5": TaskSpec("LaMP_5", "Personalized scholarly title generation.", "generation"),
    "LaMP_6": TaskSpec("LaMP_6", "Personalized email subject generation.", "generation"),
    "LaMP_7": TaskSpec("LaMP_7", "Personalized tweet paraphrasing.", "generation"),
}


@dataclass(frozen=True)
class LampFiles:
    """Where :func:`write_lamp` wrote the two files."""

    questions: Path
    outputs: Path


def _load_json(source: Path | str | list[Any] | dict[str, Any], what: str) -> Any:
    if isinstance(source, (list, dict)):
        return source
    path = Path(source)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise DatasetError(f"LaMP {what} file {path} does not exist") from e
    except json.JSONDecodeError as e:
        raise DatasetError(f"LaMP {what} file {path} is not valid JSON: {e}") from e


def spec_for(task: str, golds: list[str] | None = None) -> TaskSpec:
    """The spec of a LaMP task name; classification labels come from ``golds`` if unknown."""
    known = LAMP_TASKS.get(task.replace("-", "_"))
    if known is None:
        return TaskSpec(task, f"{task}: personalized text generation.", "generation")
    if known.kind == "classification" and not known.labels and golds:
        return TaskSpec(task, known.description, known.kind, tuple(sorted(set(golds))))
    return TaskSpec(task, known.description, known.kind, known.labels)


def profile_item(entry: dict[str, Any]) -> HistoryItem:
    """One profile entry as a history item (see the module docstring)."""
    if not isinstance(entry, dict):
        raise DatasetError(f"a LaMP profile entry must be an object, got {type(entry).__name__}")
    fields = {k: v for k, v in entry.items() if k != "id"}
    parts = [str(fields[k]).strip() for k in _TEXT_FIELDS if str(fields.get(k) or "").strip()]
    if not parts:  # LongLaMP names its fields differently: use any other string field
        skip = {"score", "tag", "category", "date", "user_id"}
        parts = [v.strip() for k, v in fields.items() if k not in skip and isinstance(v, str)
                 and v.strip()]
    label = fields.get("tag") or fields.get("category")
    label = str(label) if label not in (None, "") else None
    if not parts:
        parts = [label] if label else []
    if not parts:
        raise DatasetError(f"LaMP profile entry {entry.get('id')!r} has no text in any field")
    score: float | None = None
    try:
        if fields.get("score") not in (None, ""):
            score = float(fields["score"])
    except (TypeError, ValueError):
        score = None
    kind = "rating" if score is not None else "tag" if label else "text"
    pair = isinstance(fields.get("input"), str) and isinstance(fields.get("output"), str)
    date = fields.get("date")
    return HistoryItem(
        text="\n".join(parts),
        input=fields["input"] if pair else None,
        output=fields["output"] if pair else None,
        kind="pair" if pair and kind == "text" else kind,
        label=label,
        score=score,
        time=date if isinstance(date, (str, int, float)) and date != "" else None,
        source="lamp",
        id=str(entry["id"]) if entry.get("id") is not None else None,
        meta={"lamp": fields},
    )


def read_lamp(
    questions: Path | str | list[dict[str, Any]],
    outputs: Path | str | dict[str, Any] | None = None,
    *,
    task: str | None = None,
    spec: TaskSpec | None = None,
) -> TaskDataset:
    """Read LaMP/LongLaMP question (+ outputs) files into a :class:`TaskDataset`.

    The task name comes from ``spec``, else ``task``, else the outputs file's ``"task"``.
    """
    qs = _load_json(questions, "questions")
    if not isinstance(qs, list):
        raise DatasetError("a LaMP questions file must hold a JSON list of questions")
    golds: dict[str, str] = {}
    out_task = None
    if outputs is not None:
        out = _load_json(outputs, "outputs")
        if not isinstance(out, dict) or not isinstance(out.get("golds"), list):
            raise DatasetError('a LaMP outputs file must be {"task": ..., "golds": [...]}')
        out_task = out.get("task")
        for g in out["golds"]:
            golds[str(g["id"])] = str(g["output"])
    name = spec.name if spec else task or out_task
    if not name:
        raise DatasetError("name the task: pass task=... or an outputs file with a 'task' field")
    spec = spec or spec_for(name, list(golds.values()))

    users: dict[str, dict[str, Any]] = {}
    qids: set[str] = set()
    for q in qs:
        if not isinstance(q, dict) or "id" not in q or "input" not in q:
            raise DatasetError('each LaMP question needs "id" and "input"')
        qid = str(q["id"])
        if qid in qids:
            raise DatasetError(f"LaMP question id {qid!r} appears twice")
        qids.add(qid)
        raw_user = q.get("user_id")
        uid = str(raw_user) if raw_user is not None else qid
        user = users.setdefault(
            uid, {"history": [], "keys": {}, "queries": [], "lamp_user_id": raw_user}
        )
        indices = []
        for entry in q.get("profile") or []:
            item = profile_item(entry)
            key = item.canonical_json()
            if key not in user["keys"]:
                user["keys"][key] = len(user["history"])
                user["history"].append(item)
            indices.append(user["keys"][key])
        extra = {k: v for k, v in q.items() if k not in ("id", "input", "profile", "user_id")}
        user["queries"].append(
            Query(
                id=qid,
                input=str(q["input"]),
                output=golds.get(qid),
                meta={"profile": indices, **({"lamp": extra} if extra else {})},
            )
        )
    unknown = set(golds) - qids
    if unknown:
        raise DatasetError(
            f"{len(unknown)} gold output(s) match no question (e.g. id {sorted(unknown)[0]!r}): "
            "are the questions and outputs files from the same split?"
        )
    records = [
        UserRecord(
            user_id=uid,
            task=spec.name,
            history=u["history"],
            queries=u["queries"],
            meta={"lamp_user_id": u["lamp_user_id"]},
        )
        for uid, u in users.items()
    ]
    dataset = TaskDataset(spec, records, ("lamp",))
    validate_dataset(dataset)
    return dataset


def profile_entry(item: HistoryItem, fallback_id: str) -> dict[str, Any]:
    """A history item as a LaMP profile entry (exact for items read from LaMP)."""
    if isinstance(item.meta.get("lamp"), dict):
        return {"id": item.id if item.id is not None else fallback_id, **item.meta["lamp"]}
    entry: dict[str, Any] = {"id": item.id if item.id is not None else fallback_id,
                             "text": item.text}
    if item.score is not None:
        entry["score"] = str(int(item.score)) if float(item.score).is_integer() else str(item.score)
    if item.label is not None:
        entry["tag"] = item.label
    if item.input is not None and item.output is not None:
        entry["input"], entry["output"] = item.input, item.output
    if item.time is not None:
        entry["date"] = item.time
    return entry


def write_lamp(
    dataset: TaskDataset,
    questions_path: Path | str,
    outputs_path: Path | str,
    *,
    task: str | None = None,
) -> LampFiles:
    """Write ``dataset`` as a LaMP questions file and outputs file.

    Every query becomes a question whose profile is the user's history (or, for data read from
    LaMP, the question's own profile); ``user_id`` is written for every question except those
    read from LaMP files that had none.
    """
    questions: list[dict[str, Any]] = []
    golds: list[dict[str, str]] = []
    for user in dataset.users:
        entries = [profile_entry(h, f"{user.user_id}-h{i}") for i, h in enumerate(user.history)]
        for q in user.queries:
            idx = q.meta.get("profile")
            profile = [entries[i] for i in idx] if isinstance(idx, list) else entries
            question: dict[str, Any] = {"id": q.id, "input": q.input, "profile": profile}
            if "lamp_user_id" not in user.meta:
                question["user_id"] = user.user_id
            elif user.meta["lamp_user_id"] is not None:
                question["user_id"] = user.meta["lamp_user_id"]
            if isinstance(q.meta.get("lamp"), dict):
                question.update(q.meta["lamp"])
            questions.append(question)
            if q.output is not None:
                golds.append({"id": q.id, "output": q.output})
    qpath, opath = Path(questions_path), Path(outputs_path)
    for path, data in ((qpath, questions), (opath, {"task": task or dataset.spec.name,
                                                     "golds": golds})):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False)
    return LampFiles(qpath, opath)
