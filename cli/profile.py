"""Profile commands: show, refresh.

A thin shell over :meth:`p2p_local.api.Personalizer.profile` and ``refresh``. The library (and
with it llama.cpp and sentence-transformers) is imported inside the commands.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from .common import JsonOpt, PassFileOpt, UserOpt, console
from .vault import open_personalizer

QueryOpt = Annotated[
    str | None,
    typer.Option(
        "--query",
        "-q",
        help="Build the per-query profile: also show the history items BM25 retrieves for it.",
    ),
]
TaskOpt = Annotated[
    str | None,
    typer.Option(
        "--task",
        "-t",
        help="What the profile is for, in words (default: open-ended chat). The summary is "
        "written and cached per task.",
    ),
]


def show(
    user: UserOpt = "default",
    query: QueryOpt = None,
    task: TaskOpt = None,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show USER's profile: summary, history statistics and (with --query) retrieved items."""
    with open_personalizer(user, passphrase_file) as p:
        prof = p.profile(query=query, task=task)
    if as_json:
        console.print_json(json.dumps(prof.to_dict(), ensure_ascii=False))
        return
    console.print(escape(prof.body), highlight=False, soft_wrap=True)
    if prof.retrieved:
        ids = ", ".join(f"{r.id} ({r.score:.2f})" for r in prof.retrieved)
        console.print(f"\n[dim]retrieved:[/] {escape(ids)}", highlight=False)
    dim = prof.embedding.shape[0] if prof.embedding is not None else 0
    console.print(
        f"[dim]task:[/] {escape(prof.task)}\n"
        f"[dim]embedding:[/] {dim} dims, {escape(prof.embedding_model or '')}",
        highlight=False,
        soft_wrap=True,
    )


def refresh(
    user: UserOpt = "default",
    task: TaskOpt = None,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write USER's profile summary again with the base model and cache it (encrypted)."""
    with open_personalizer(user, passphrase_file) as p:
        summary = p.refresh(task=task)
    if as_json:
        payload = {
            "summary": summary.text,
            "model": summary.model_id,
            "task": summary.task,
            "items_used": summary.items_used,
            "prompt_tokens": summary.prompt_tokens,
            "seconds": round(summary.seconds, 3),
        }
        console.print_json(json.dumps(payload, ensure_ascii=False))
        return
    console.print(escape(summary.text), highlight=False, soft_wrap=True)
    console.print(
        f"[dim]{summary.items_used} items, {summary.prompt_tokens} prompt tokens, "
        f"{summary.seconds:.1f} s, {escape(summary.model_id)}[/]",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Your profile: the summary, statistics and retrieved items the adapter is made from.",
        no_args_is_help=True,
    )
    group.command("show")(show)
    group.command("refresh")(refresh)
    app.add_typer(group, name="profile")
