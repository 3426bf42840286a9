"""The evaluation harness: held-out users, every method, cached answers, one report.

Owns :class:`EvalSettings`, :func:`load_data` (a built-in task by name, or LaMP question /
output files), :func:`select_users` (the held-out users of a random or OOD split, computed as
training computes it, or every user of a LaMP file), :func:`run_evaluation` and the
:class:`EvalReport` it returns (JSON and a Markdown table, ``report.py``).

For each method, for each user: ``setup_user`` (timed: the method's per-user cost, e.g. the
P2P adapter or the OPPU training), then each query: ``plan`` -> apply the adapter -> greedy
answer from the one loaded base model -> parse (timed together: the per-instance inference
time). Every answer is appended to ``<out>/predictions/<method>-<fingerprint>.jsonl`` as soon
as it exists, so an interrupted run resumes where it stopped; the fingerprint covers the
data, the model, the settings and the method's own inputs (checkpoint, adapters), so changed
settings never reuse stale answers. The report keeps each answer's main-metric score
(``per_query`` in ``results.json``: ids and scores, no text), so per-user comparisons
(``paired.py``) can be redone from the results file alone, on any machine. LLM summaries are
written once per user, before the methods run, and timed separately. Does not own the methods
(``baselines/``) or the metrics (``metrics.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from p2p_local.baselines import METHODS, EvalEnv, MethodSettings, create, parse_methods
from p2p_local.datasets.base import TaskDataset, UserRecord
from p2p_local.errors import ConfigError, DatasetError, EvaluationError
from p2p_local.eval.metrics import (
    METRICS,
    Constant,
    Scores,
    best_constant,
    parse_answer,
    score,
)
from p2p_local.eval.paired import MAIN_METRIC, query_scores
from p2p_local.eval.splits import Split, SplitSettings, ood_split, random_split, read_split

SPLITS = ("random", "ood", "all")
Log = Callable[[str], None]
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
FORMAT = "p2p-local-eval"


@dataclass(frozen=True)
class EvalSettings:
    """One evaluation.

    data:        a built-in task name (``p2p_local.datasets.TASKS``) or a LaMP questions file.
    outputs:     the LaMP outputs file (gold answers); None = the questions file's name with
                 ``questions`` replaced by ``outputs``, when that file exists.
    split:       "random" / "ood": the held-out test users of that split of the task (as
                 training splits it: ``split_seed``, and for OOD the per-user profiles of the
                 histories loaded with ``queries``); "all": every user (the default for LaMP
                 files, whose users are held out already). None = random for built-in tasks.
    split_file:  a saved split (``Split.to_dict()`` JSON, e.g. the training data folder's
                 ``splits/<task>.json``) instead of computing one.
    held_out:    "test" (default): the split's test users; "val": its validation users, for
                 choosing settings (e.g. ``method.adapter_scale``) without looking at the test
                 users. On the OOD split the validation users are not out of distribution.
    methods:     method names (``p2p_local.baselines.METHODS``).
    users:       evaluate at most this many held-out users (a seeded sample); None = all.
    queries:     held-out queries per user of a built-in task (at most N of the user's items;
                 the history is the rest). Keep it equal to training's ``data.max_queries``
                 (8 in the shipped recipes, the default) so the profiles are built from the
                 same history training saw and a recomputed OOD split is training's.
    split_seed:  the split's seed (training's ``data.split_seed``).
    backend:     "llamacpp" (default, fast) or "hf" (transformers + PEFT).
    model:       the base model: a registry name or a GGUF path.
    threads:     CPU threads for llama.cpp (None = all cores).
    method:      :class:`~p2p_local.baselines.common.MethodSettings`.
    """

    data: str
    outputs: str | None = None
    split: str | None = None
    split_file: str | None = None
    held_out: str = "test"
    methods: tuple[str, ...] = ("base", "rag", "pag", "full-history", "p2p", "p2p-per-query",
                                "p2p-shuffled", "p2p-per-query-shuffled", "p2p-random",
                                "p2p-summary-only", "p2p-retrieval-only")
    users: int | None = None
    queries: int = 8
    split_seed: int = 0
    backend: str = "llamacpp"
    model: str = "base"
    threads: int | None = None
    method: MethodSettings = field(default_factory=MethodSettings)

    def __post_init__(self) -> None:
        if not isinstance(self.data, str) or not self.data.strip():
            raise ConfigError("data must name a built-in task or a LaMP questions file")
        if self.split is not None and self.split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        object.__setattr__(self, "methods", tuple(parse_methods(list(self.methods))))
        if "p2p-summary-only" in self.methods and not self.method.summaries:
            raise ConfigError("p2p-summary-only needs the LLM summaries: turn summaries on or "
                              "leave the method out")
        if self.held_out not in ("test", "val"):
            raise ConfigError(f"held_out must be test or val, got {self.held_out!r}")
        if self.users is not None and (not isinstance(self.users, int) or self.users < 1):
            raise ConfigError(f"users must be None or an integer >= 1, got {self.users!r}")
        if not isinstance(self.queries, int) or not 1 <= self.queries <= 1000:
            raise ConfigError(f"queries must be an integer in 1..1000, got {self.queries!r}")
        if not isinstance(self.split_seed, int) or self.split_seed < 0:
            raise ConfigError(f"split_seed must be an integer >= 0, got {self.split_seed!r}")
        if self.backend not in ("llamacpp", "hf"):
            raise ConfigError(f"backend must be llamacpp or hf, got {self.backend!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"threads must be None or an integer >= 1, got {self.threads!r}")


# --- data and users ---------------------------------------------------------------------------


def is_builtin(data: str) -> bool:
    from p2p_local.datasets import TASKS

    return data in TASKS


def load_data(settings: EvalSettings) -> TaskDataset:
    """The task: a built-in corpus (fetched on first use) or LaMP files."""
    if is_builtin(settings.data):
        from p2p_local.datasets import load_task

        return load_task(settings.data, max_queries=settings.queries)
    from p2p_local.datasets.lamp import read_lamp

    questions = Path(settings.data).expanduser()
    if not questions.is_file():
        from p2p_local.datasets import TASKS

        raise DatasetError(
            f"--data {settings.data!r} is neither a built-in task ({', '.join(sorted(TASKS))}) "
            "nor an existing LaMP questions file"
        )
    outputs = Path(settings.outputs).expanduser() if settings.outputs else None
    if outputs is None and "questions" in questions.name:
        guess = questions.with_name(questions.name.replace("questions", "outputs"))
        outputs = guess if guess.is_file() else None
    if outputs is None:
        raise DatasetError(
            f"no gold outputs for {questions}: pass --outputs FILE (the LaMP outputs JSON)"
        )
    return read_lamp(questions, outputs)


@dataclass(frozen=True)
class UserSelection:
    """Who is evaluated (in order) and who trained (for the best-constant baseline)."""

    split: str
    eval_users: list[UserRecord]
    train_users: list[UserRecord]
    skipped: int = 0
    split_info: Split | None = None


def select_users(
    dataset: TaskDataset,
    settings: EvalSettings,
    embed: Callable[[list[str]], np.ndarray] | None = None,
) -> UserSelection:
    """The held-out users of ``settings.split`` (see :class:`EvalSettings`), a seeded sample
    of ``settings.users`` of them; users without history or gold answers are skipped."""
    kind = settings.split or ("random" if is_builtin(settings.data) else "all")
    split: Split | None = None
    if settings.split_file:
        split = read_split(settings.split_file)
        kind = split.kind
    elif kind == "random":
        split = random_split(dataset.user_ids(), SplitSettings(seed=settings.split_seed))
    elif kind == "ood":
        from p2p_local.profile.builder import ProfileSettings, build_profile

        if embed is None:
            raise EvaluationError("the OOD split needs profile embeddings: pass an embedder")
        profile = ProfileSettings(k=settings.method.k)
        texts = [build_profile(u.history, task=dataset.spec.description, settings=profile).text
                 for u in dataset.users]
        split = ood_split(dataset.user_ids(), embed(texts),
                          SplitSettings(seed=settings.split_seed))
    if split is None:
        if settings.held_out != "test":
            raise EvaluationError(f"the {kind!r} split has no validation users: use "
                                  "--split random or ood, or a --split-file")
        test_ids, train_ids = dataset.user_ids(), []
    else:
        test_ids = list(split.val if settings.held_out == "val" else split.test)
        train_ids = list(split.train)
        unknown = set(test_ids) - set(dataset.user_ids())
        if unknown:
            raise DatasetError(f"{len(unknown)} test user(s) of the split are not in the data, "
                               f"e.g. {sorted(unknown)[0]!r}: use the split made for this task")
    by_id = {u.user_id: u for u in dataset.users}
    usable = [uid for uid in sorted(test_ids)
              if by_id[uid].history and any(q.output for q in by_id[uid].queries)]
    order = np.random.default_rng([settings.method.seed, 3]).permutation(len(usable)).tolist()
    chosen = [usable[i] for i in order][: settings.users or len(usable)]
    if not chosen:
        raise EvaluationError(
            f"no held-out users with history and gold answers in {dataset.spec.name!r} "
            f"({kind} split): check the data or the split"
        )
    return UserSelection(kind, [by_id[u] for u in chosen], [by_id[u] for u in train_ids],
                         len(test_ids) - len(usable), split)


# --- the answer cache --------------------------------------------------------------------------


class AnswerCache:
    """Records (one JSON object a line) keyed by ``key_field``, appended as they are made."""

    def __init__(self, path: Path | None, key_field: str) -> None:
        self.path = path
        self.key_field = key_field
        self.records: dict[str, dict[str, Any]] = {}
        if path is not None and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self.records[str(rec[key_field])] = rec
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut by a crash: that answer is made again

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def add(self, record: dict[str, Any]) -> None:
        self.records[str(record[self.key_field])] = record
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                fh.flush()


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodResult:
    """One method's scores and costs.

    seconds_per_query:      mean time of one answer (profile / retrieval / adapter work for
                            that query, applying the adapter, generating).
    setup_seconds_per_user: mean per-user preparation (P2P: profile embedding + hypernetwork
                            + export; OPPU: training; 0 for prompt methods).
    query_scores:           each answer's main-metric score, in the order of the report's
                            ``queries`` (empty when read from a file that has none).
    """

    name: str
    scores: Scores
    seconds_per_query: float
    setup_seconds_per_user: float
    n_users: int
    fingerprint: str
    notes: dict[str, Any] = field(default_factory=dict)
    query_scores: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.scores.to_dict(),
            "seconds_per_query": round(self.seconds_per_query, 4),
            "setup_seconds_per_user": round(self.setup_seconds_per_user, 4),
            "n_users": self.n_users,
        }


@dataclass(frozen=True)
class EvalReport:
    """Everything one evaluation measured (see ``report.py`` for its forms).

    queries: (user id, query id) of every scored query, in the order of each method's
             ``query_scores``.
    """

    task: str
    kind: str
    split: str
    n_users: int
    n_queries: int
    results: dict[str, MethodResult]
    best_constant: Constant | None
    meta: dict[str, Any]
    queries: tuple[tuple[str, str], ...] = ()

    def summary(self) -> dict[str, Any]:
        """What ``p2p-local eval --json`` prints."""
        out: dict[str, Any] = {
            "task": self.task,
            "split": self.split,
            "n_users": self.n_users,
            "n_queries": self.n_queries,
            "results": {name: r.to_dict() for name, r in self.results.items()},
        }
        if self.best_constant is not None:
            out["best_constant"] = {"answer": self.best_constant.answer,
                                    **self.best_constant.scores.to_dict()}
        return out

    def to_dict(self) -> dict[str, Any]:
        out = {"format": FORMAT, **self.summary(), "kind": self.kind,
               "methods": {n: {"fingerprint": r.fingerprint, "notes": r.notes}
                           for n, r in self.results.items()},
               "meta": self.meta}
        scored = {n: list(r.query_scores) for n, r in self.results.items()
                  if self.queries and len(r.query_scores) == len(self.queries)}
        if scored:
            out["per_query"] = {"metric": MAIN_METRIC[self.kind][0],
                                "user_ids": [u for u, _ in self.queries],
                                "query_ids": [q for _, q in self.queries], "scores": scored}
            constant = self.best_constant
            if constant is not None and len(constant.query_scores) == len(self.queries):
                out["per_query"]["best_constant"] = list(constant.query_scores)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalReport:
        """Read back what :meth:`to_dict` wrote (``results.json``)."""
        if data.get("format") != FORMAT:
            raise EvaluationError("not a p2p-local evaluation result (results.json)")
        kind = data["kind"]
        metric_names = set(METRICS[kind])
        per_query = data.get("per_query") or {}
        queries = tuple(zip(per_query.get("user_ids", []), per_query.get("query_ids", []),
                            strict=True))
        results = {}
        for name, r in data["results"].items():
            scores = Scores({m: float(r[m]) for m in metric_names}, int(r["n"]),
                            int(r["unparsable"]), kind)
            info = data.get("methods", {}).get(name, {})
            results[name] = MethodResult(
                name, scores, float(r["seconds_per_query"]), float(r["setup_seconds_per_user"]),
                int(r["n_users"]), info.get("fingerprint", ""), info.get("notes", {}),
                tuple(float(v) for v in per_query.get("scores", {}).get(name, ())))
        constant = None
        if data.get("best_constant"):
            c = data["best_constant"]
            constant = Constant(str(c["answer"]), {}, Scores(
                {m: float(c[m]) for m in metric_names}, int(c["n"]), 0, kind),
                tuple(float(v) for v in per_query.get("best_constant", ())))
        return cls(data["task"], kind, data["split"], int(data["n_users"]),
                   int(data["n_queries"]), results, constant, data.get("meta", {}), queries)

    def markdown(self) -> str:
        from p2p_local.eval.report import markdown_table

        return markdown_table(self)

    def save(self, out_dir: Path) -> tuple[Path, Path]:
        """Write ``results.json`` and ``results.md`` into ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        j, m = out_dir / RESULTS_JSON, out_dir / RESULTS_MD
        j.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        m.write_text(self.markdown(), encoding="utf-8")
        return j, m


# --- running -----------------------------------------------------------------------------------


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _data_digest(spec: Any, users: list[UserRecord]) -> str:
    h = hashlib.sha256(json.dumps([spec.name, spec.kind, list(spec.labels)]).encode())
    for u in users:
        h.update(u.user_id.encode())
        for item in u.history:
            h.update(item.content_hash().encode())
        for q in u.queries:
            h.update(json.dumps([q.id, q.input, q.output]).encode())
    return h.hexdigest()[:16]


def load_backend(settings: EvalSettings) -> Any:
    """The base model in the chosen backend (one instance answers for every method)."""
    from p2p_local.train.models import model_id_for

    path, _ = model_id_for(settings.model)
    if settings.backend == "llamacpp":
        from p2p_local.runtime.llamacpp import LlamaCppBackend

        return LlamaCppBackend(path, n_ctx=settings.method.n_ctx, n_threads=settings.threads)
    from p2p_local.runtime.hf import HFBackend

    return HFBackend(path)


class _Progress:
    """A rich progress bar on a terminal (stderr); silent elsewhere."""

    def __init__(self, enabled: bool) -> None:
        from p2p_local.progress import step_bar

        self.bar: Any = step_bar() if enabled else None
        if self.bar is not None:
            self.bar.start()

    def task(self, name: str, total: int, done: int = 0) -> Any:
        if self.bar is None:
            return None
        return self.bar.add_task(name, total=total, completed=done)

    def advance(self, task: Any) -> None:
        if self.bar is not None and task is not None:
            self.bar.advance(task)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def run_evaluation(
    settings: EvalSettings,
    *,
    out_dir: Path | None = None,
    backend: Any = None,
    embedder: Any = None,
    train_base: Any = None,
    dataset: TaskDataset | None = None,
    progress: bool = True,
    log: Log | None = None,
) -> EvalReport:
    """Evaluate ``settings.methods`` on the held-out users; cache answers under ``out_dir``.

    ``backend``, ``embedder``, ``train_base`` and ``dataset`` may be passed ready-made (else
    loaded); a passed backend is not closed. Results are saved to ``out_dir`` when given.
    """
    say = log or (lambda _text: None)
    started = time.perf_counter()
    dataset = dataset if dataset is not None else load_data(settings)
    spec = dataset.spec
    shared: dict[str, Any] = {"embedder": embedder}

    def get_embedder() -> Any:
        if shared["embedder"] is None:
            from p2p_local.embedding import load_embedder

            shared["embedder"] = load_embedder(None)
        return shared["embedder"]

    selection = select_users(dataset, settings, lambda texts: get_embedder().embed(texts))
    users = selection.eval_users
    say(f"{spec.name}: {len(users)} {selection.split}-split users, "
        f"{sum(len(u.queries) for u in users)} queries, methods {', '.join(settings.methods)}")
    own_backend = backend is None
    if own_backend:
        backend = load_backend(settings)
    env = EvalEnv(backend, spec, users, settings.method, out_dir=out_dir,
                  model_spec=settings.model, embedder=shared["embedder"], train_base=train_base)
    bar = _Progress(progress)
    try:
        methods = [create(name, env) for name in settings.methods]
        data_fp = _data_digest(spec, users)
        base_fp = {
            "data": data_fp, "backend": backend.name,
            "model": env.base_model_id(), "generation": env.generation.cache_key(),
            "settings": [settings.method.n_ctx, settings.method.system],
        }
        fps = {m.name: _digest([m.name, base_fp, m.fingerprint()]) for m in methods}
        if settings.method.summaries and any("summary" in m.spec.needs for m in methods):
            task = bar.task("summaries", len(users))
            for user in users:
                env.summary(user)
                bar.advance(task)
        results: dict[str, MethodResult] = {}
        for method in methods:
            results[method.name] = _run_method(method, env, users, fps[method.name], out_dir,
                                               bar, say)
    finally:
        bar.close()
        from p2p_local.runtime import apply_adapter

        apply_adapter(backend, None)
        if own_backend:
            backend.close()
    constant = _best_constant(spec, users, selection)
    meta = _meta(settings, env, selection, time.perf_counter() - started)
    scored = tuple((u.user_id, q.id) for u in users for q in u.queries if q.output)
    report = EvalReport(
        task=spec.name, kind=spec.kind, split=selection.split, n_users=len(users),
        n_queries=len(scored), results=results, best_constant=constant, meta=meta,
        queries=scored,
    )
    if out_dir is not None:
        report.save(Path(out_dir))
    return report


def _run_method(method: Any, env: EvalEnv, users: list[UserRecord], fp: str,
                out_dir: Path | None, bar: _Progress, say: Log) -> MethodResult:
    from p2p_local.runtime import apply_adapter

    spec = env.spec
    folder = Path(out_dir) if out_dir is not None else None
    answers = AnswerCache(folder / "predictions" / f"{method.name}-{fp}.jsonl" if folder
                          else None, "query_id")
    setups = AnswerCache(folder / "setup" / f"{method.name}-{fp}.jsonl" if folder else None,
                         "user_id")
    queries = [(u, q) for u in users for q in u.queries if q.output]
    done = sum(1 for _, q in queries if q.id in answers)
    if done:
        say(f"{method.name}: {done} of {len(queries)} answers cached")
    task = bar.task(method.name, len(queries), done)
    gen = env.generation
    if done < len(queries):
        method.setup()
    for user in users:
        todo = [q for q in user.queries if q.output and q.id not in answers]
        if not todo:
            continue
        start = time.perf_counter()
        reported = method.setup_user(user)
        seconds = reported if reported is not None else time.perf_counter() - start
        if user.user_id not in setups:
            setups.add({"user_id": user.user_id, "seconds": round(seconds, 5)})
        for q in todo:
            start = time.perf_counter()
            plan = method.plan(user, q)
            apply_adapter(env.backend, plan.payload)
            raw = env.backend.chat(plan.messages, gen)
            elapsed = time.perf_counter() - start
            answers.add({
                "query_id": q.id, "user_id": user.user_id, "raw": raw,
                "prediction": parse_answer(raw, spec.kind, spec.labels), "gold": q.output,
                "seconds": round(elapsed, 5), "prompt_tokens": plan.prompt_tokens,
                "notes": plan.notes,
            })
            bar.advance(task)
        method.finish_user(user)
    method.close()
    apply_adapter(env.backend, None)
    preds = [answers.get(q.id)["prediction"] for _, q in queries]  # type: ignore[index]
    golds = [str(q.output) for _, q in queries]
    scores = score(spec.kind, preds, golds, spec.labels)
    per_query = query_scores(spec.kind, preds, golds, spec.labels)
    secs = [float(answers.get(q.id)["seconds"]) for _, q in queries]  # type: ignore[index]
    user_ids = {u.user_id for u in users}
    setup_secs = [float(r["seconds"]) for uid, r in setups.records.items() if uid in user_ids]
    notes: dict[str, Any] = {"description": method.spec.description}
    steps = getattr(method, "steps", None)
    if steps:
        notes["oppu_steps_mean"] = float(np.mean(list(steps.values())))
    return MethodResult(
        name=method.name, scores=scores, seconds_per_query=float(np.mean(secs)),
        setup_seconds_per_user=float(np.mean(setup_secs)) if setup_secs else 0.0,
        n_users=len(users), fingerprint=fp, notes=notes, query_scores=tuple(per_query),
    )


def _best_constant(spec: Any, users: list[UserRecord], selection: UserSelection
                   ) -> Constant | None:
    """Most common training answer: the training users' gold answers, or (no training users,
    e.g. LaMP files) the ratings / labels in the evaluated users' histories."""
    if spec.kind == "generation":
        return None
    answers = [q.output for u in selection.train_users for q in u.queries if q.output]
    if not answers:
        for u in users:
            for item in u.history:
                if spec.kind == "rating" and item.score is not None:
                    answers.append(f"{item.score:g}")
                elif spec.kind == "classification" and item.label:
                    answers.append(item.label)
    golds = [str(q.output) for u in users for q in u.queries if q.output]
    constant = best_constant(spec.kind, answers, golds, spec.labels)
    if constant is None:
        return None
    per_query = query_scores(spec.kind, [constant.answer] * len(golds), golds, spec.labels)
    return replace(constant, query_scores=tuple(per_query))


def _meta(settings: EvalSettings, env: EvalEnv, selection: UserSelection,
          wall: float) -> dict[str, Any]:
    import p2p_local

    summary_secs = [env.summary_seconds[u.user_id] for u in selection.eval_users
                    if u.user_id in env.summary_seconds]
    meta: dict[str, Any] = {
        "data": settings.data,
        "split": selection.split,
        "split_seed": settings.split_seed,
        "users_skipped": selection.skipped,
        "user_ids": [u.user_id for u in selection.eval_users],
        "backend": env.backend.name,
        "model": env.base_model_id(),
        "settings": {**{k: v for k, v in settings.__dict__.items() if k != "method"},
                     "method": settings.method.to_dict()},
        "summary_seconds_per_user": float(np.mean(summary_secs)) if summary_secs else None,
        "wall_seconds": round(wall, 1),
        "hardware": f"{platform.machine()} {os.cpu_count()} cores",
        "p2p_local": p2p_local.__version__,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if env._checkpoint is not None:
        meta["checkpoint"] = {"id": env._checkpoint.info.checkpoint_id,
                              "path": str(env._checkpoint.info.path)}
    if settings.method.mt_lora:
        meta["mt_lora"] = settings.method.mt_lora
    return meta


def method_names() -> list[str]:
    """Every method name, in table order."""
    return list(METHODS)
