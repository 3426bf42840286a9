"""Vault commands: init, ingest, history, export-data, passwd, forget, users.

A thin shell over :class:`p2p_local.api.Personalizer`. Also owns :func:`open_personalizer`,
how every command opens a user's vault (keychain when the vault has a slot and no passphrase
was given, else the passphrase). The library is imported inside the commands.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from p2p_local.errors import InputError, KeychainUnavailableError, VaultNotFoundError

from .common import JsonOpt, PassFileOpt, UserOpt, console, err_console, read_passphrase

if TYPE_CHECKING:
    from p2p_local.api import Personalizer
    from p2p_local.store.records import StoredItem

PROGRESS_MIN_BYTES = 4 * 1024 * 1024  # show a progress bar for files at least this large
MAX_ERRORS_SHOWN = 50


def _out(markup: str) -> None:
    console.print(markup, highlight=False, soft_wrap=True)


def _err(markup: str) -> None:
    err_console.print(markup, highlight=False, soft_wrap=True)


def open_personalizer(
    user: str, passphrase_file: Path | None, *, recovery: bool = False
) -> Personalizer:
    """Open ``user``'s vault the way every command does.

    Order: the recovery code when ``recovery`` (``P2P_LOCAL_RECOVERY_CODE`` or a prompt); the OS
    keychain when the vault has a keychain slot and no passphrase was given; else the
    passphrase (``--passphrase-file``, ``P2P_LOCAL_PASSPHRASE``, or a prompt).
    """
    from p2p_local.api import Personalizer

    if recovery:
        code = os.environ.get("P2P_LOCAL_RECOVERY_CODE") or _prompt_secret(
            "Recovery code", "P2P_LOCAL_RECOVERY_CODE"
        )
        return Personalizer(user, recovery_code=code)
    no_passphrase = passphrase_file is None and not os.environ.get("P2P_LOCAL_PASSPHRASE")
    if no_passphrase and Personalizer.has_keychain_slot(user):
        try:
            return Personalizer(user, use_keychain=True)
        except KeychainUnavailableError as exc:
            _err(f"[yellow]keychain:[/] {escape(str(exc))}")
    if not Personalizer.exists(user):
        raise VaultNotFoundError(
            f"no vault for user {user!r}: create one with `p2p-local init --user {user}`"
        )
    return Personalizer(user, passphrase=read_passphrase(passphrase_file))


def _prompt_secret(label: str, env: str) -> str:
    if not os.isatty(0):
        raise InputError(f"no {label.lower()}: set {env} when not on a terminal")
    return typer.prompt(label, hide_input=True)


def _new_passphrase(new_file: Path | None) -> str:
    if new_file is not None:
        return read_passphrase(new_file)
    env = os.environ.get("P2P_LOCAL_NEW_PASSPHRASE")
    if env:
        return env
    if not os.isatty(0):
        raise InputError(
            "no new passphrase: pass --new-passphrase-file or set P2P_LOCAL_NEW_PASSPHRASE "
            "when not on a terminal"
        )
    return typer.prompt("New vault passphrase", hide_input=True, confirmation_prompt=True)


def _preview(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _item_json(stored: StoredItem) -> dict[str, object]:
    return {
        "id": stored.short_id,
        "digest": stored.digest,
        "row": stored.row,
        "item": stored.item.to_dict(),
    }


def _print_json(data: object) -> None:
    console.print_json(json.dumps(data, ensure_ascii=False))


def _print_items(items: list[StoredItem], as_json: bool) -> None:
    if as_json:
        _print_json([_item_json(s) for s in items])
        return
    for s in items:
        when = "" if s.item.time is None else str(s.item.time)
        line = f"{s.short_id}  {s.item.kind:<6}  {when[:19]:<19}  {_preview(s.item.text)}"
        _out(escape(line))


# --- commands ------------------------------------------------------------------------------


def init(
    user: UserOpt = "default",
    passphrase_file: PassFileOpt = None,
    keychain: Annotated[
        bool, typer.Option("--keychain", help="Also keep a key in the OS keychain, if one exists.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create USER's encrypted vault and print its recovery code (shown only this once)."""
    from p2p_local.api import Personalizer

    passphrase = read_passphrase(passphrase_file, confirm=True)
    try:
        p = Personalizer.create(user, passphrase, use_keychain=keychain)
    except KeychainUnavailableError as exc:
        _err(f"[yellow]keychain:[/] {escape(str(exc))}")
        _err("creating the vault with the passphrase only")
        p = Personalizer.create(user, passphrase)
    with p:
        if as_json:
            console.print_json(
                json.dumps(
                    {
                        "user": p.user,
                        "path": str(p.path),
                        "recovery_code": p.recovery_code,
                        "keychain": p.vault.has_keychain_slot,
                    }
                )
            )
            return
        where = escape(str(p.path))
        _out(f"Created the encrypted vault of user [bold]{escape(p.user)}[/] in {where}")
        _out(
            "Recovery code (shown only now; write it down, it opens the vault if you forget "
            "the passphrase):"
        )
        _out(f"    [bold]{p.recovery_code}[/]")


def ingest(
    file: Annotated[
        Path,
        typer.Argument(
            help="History file: JSONL, LaMP questions JSON, or ChatGPT conversations.json."
        ),
    ],
    user: UserOpt = "default",
    format: Annotated[
        str, typer.Option("--format", "-f", help="auto | jsonl | lamp | chatgpt")
    ] = "auto",
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Check the whole file first and store nothing, in any vault, unless every "
            "line is valid (see above for files with several user_ids).",
        ),
    ] = False,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a history file to USER's vault (JSONL, LaMP or ChatGPT export).

    Bad lines are listed and make the exit code non-zero. LaMP items with a
    user_id go to the vault USER.<user_id> (created with the same passphrase
    when missing).

    --strict validates the whole file before anything is stored: one bad line
    stores nothing in any vault. A file for one vault is then stored in one
    transaction. A LaMP file spanning several user_ids is stored vault by
    vault, in batches, not in one transaction: a run stopped while storing can
    leave some vaults (or part of one) filled; run it again, and the items
    already stored count as duplicates.
    """
    if not file.is_file():
        raise InputError(f"cannot read {file}: no such file")
    p = open_personalizer(user, passphrase_file)
    with p:
        size = file.stat().st_size
        if size >= PROGRESS_MIN_BYTES and err_console.is_terminal and not as_json:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
            with Progress(*columns, console=err_console, transient=True) as bar:
                task = bar.add_task("ingest", total=size)
                report = p.ingest_file(
                    file,
                    format=format,
                    strict=strict,
                    progress=lambda done, total: bar.update(task, completed=done),
                )
        else:
            report = p.ingest_file(file, format=format, strict=strict)
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "file": report.path,
                    "format": report.format,
                    "added": report.added,
                    "duplicates": report.duplicates,
                    "rejected": report.rejected,
                    "stored": report.stored,
                    "errors": [{"line": e.line, "reason": e.reason} for e in report.errors],
                    "users": {
                        k: {"added": v.added, "duplicates": v.duplicates}
                        for k, v in report.users.items()
                    },
                    "created": report.created,
                },
                ensure_ascii=False,
            )
        )
    else:
        for err in report.errors[:MAX_ERRORS_SHOWN]:
            _err(escape(f"{file}:{err.line}: {err.reason}"))
        if report.rejected > MAX_ERRORS_SHOWN:
            _err(f"... and {report.rejected - MAX_ERRORS_SHOWN} more rejected")
        for name, code in report.created.items():
            _out(f"created vault [bold]{escape(name)}[/], recovery code {code}")
        if len(report.users) > 1:
            for vault_name, res in sorted(report.users.items(), key=lambda kv: str(kv[0])):
                _out(f"  {escape(str(vault_name))}: added {res.added}, duplicates {res.duplicates}")
        _out(
            f"{escape(str(file))} ({report.format}): added {report.added}, duplicates "
            f"{report.duplicates}, rejected {report.rejected}",
        )
        if not report.stored:
            _err("nothing was stored (--strict): fix the lines above and run again")
    if report.rejected:
        raise typer.Exit(2)


history_app = typer.Typer(
    help="Look at the history in a vault (decrypted in memory only).", no_args_is_help=True
)


@history_app.command("count")
def history_count(
    user: UserOpt = "default", passphrase_file: PassFileOpt = None, as_json: JsonOpt = False
) -> None:
    """Print the number of items."""
    with open_personalizer(user, passphrase_file) as p:
        n = p.count()
    if as_json:
        _print_json({"count": n})
    else:
        typer.echo(n)


def _counts(counts: dict[str, int]) -> str:
    """``a 3, b 1``: most frequent first."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{name} {n}" for name, n in ranked) or "-"


@history_app.command("stats")
def history_stats(
    user: UserOpt = "default", passphrase_file: PassFileOpt = None, as_json: JsonOpt = False
) -> None:
    """Print item counts by kind and source, stored blobs and the vault's size on disk."""
    from dataclasses import asdict

    from rich.filesize import decimal

    with open_personalizer(user, passphrase_file) as p:
        stats = p.stats()
    if as_json:
        _print_json(asdict(stats))
        return
    _out(f"items:   {stats.items}")
    _out(escape(f"kinds:   {_counts(stats.kinds)}"))
    _out(escape(f"sources: {_counts(stats.sources)}"))
    _out(f"blobs:   {stats.blobs}")
    _out(f"disk:    {decimal(stats.disk_bytes)}")


@history_app.command("list")
def history_list(
    user: UserOpt = "default",
    limit: Annotated[int, typer.Option("--limit", "-n", help="Items to show.", min=0)] = 20,
    offset: Annotated[int, typer.Option("--offset", help="Items to skip first.", min=0)] = 0,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List items, oldest first: id, kind, time, text."""
    with open_personalizer(user, passphrase_file) as p:
        _print_items(p.history(limit=limit, offset=offset), as_json)


@history_app.command("show")
def history_show(
    item_id: Annotated[str, typer.Argument(metavar="ID", help="An item id (or its first digits).")],
    user: UserOpt = "default",
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one item in full."""
    with open_personalizer(user, passphrase_file) as p:
        stored = p.get_item(item_id)
    if as_json:
        _print_json(_item_json(stored))
        return
    _out(f"id: {stored.digest}")
    for key, value in stored.item.to_dict().items():
        if key != "text" or stored.item.input is None:
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            _out(escape(f"{key}: {shown}"))


@history_app.command("search")
def history_search(
    query: Annotated[str, typer.Argument(help="Words that must all appear (any case).")],
    user: UserOpt = "default",
    limit: Annotated[int, typer.Option("--limit", "-n", help="Most items to show.", min=1)] = 20,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find items containing every word of QUERY."""
    with open_personalizer(user, passphrase_file) as p:
        _print_items(p.search_history(query, limit=limit), as_json)


def export_data(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the JSONL file.")],
    user: UserOpt = "default",
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
    passphrase_file: PassFileOpt = None,
) -> None:
    """Write USER's decrypted history to OUT as JSONL (PLAINTEXT: an explicit export)."""
    with open_personalizer(user, passphrase_file) as p:
        result = p.export_data(out, overwrite=force)
    _out(f"wrote {result.items} items to {escape(str(result.path))}")
    _err("[yellow]note:[/] this file is NOT encrypted; delete it when done")


def passwd(
    user: UserOpt = "default",
    recovery: Annotated[
        bool, typer.Option("--recovery", help="Authorize with the recovery code instead.")
    ] = False,
    new_passphrase_file: Annotated[
        Path | None,
        typer.Option(
            "--new-passphrase-file",
            dir_okay=False,
            help="Read the new passphrase from this file (or P2P_LOCAL_NEW_PASSPHRASE).",
        ),
    ] = None,
    new_recovery_code: Annotated[
        bool, typer.Option("--new-recovery-code", help="Also replace the recovery code.")
    ] = False,
    passphrase_file: PassFileOpt = None,
) -> None:
    """Change the passphrase (the data key is rewrapped; the old passphrase stops working)."""
    with open_personalizer(user, passphrase_file, recovery=recovery) as p:
        p.change_passphrase(_new_passphrase(new_passphrase_file))
        _out(f"changed the passphrase of user [bold]{escape(p.user)}[/]")
        if new_recovery_code:
            code = p.reset_recovery_code()
            _out("new recovery code (shown only now; the old one no longer works):")
            _out(f"    [bold]{code}[/]")


def forget(
    user: UserOpt = "default",
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: destroy the keys and the data.")
    ] = False,
) -> None:
    """Destroy USER's vault for good: key slots first (crypto-shredding), then the data."""
    from p2p_local.api import Personalizer

    if not Personalizer.exists(user):
        raise InputError(f"there is no vault for user {user!r}: nothing to forget")
    if not yes:
        if not os.isatty(0):
            raise InputError(f"forgetting user {user!r} destroys all their data: add --yes")
        typer.confirm(f"Destroy the vault of user {user!r} and all its data?", abort=True)
    Personalizer.destroy(user)
    _out(f"forgot user [bold]{escape(user)}[/]: keys destroyed, data deleted")


def users(as_json: JsonOpt = False) -> None:
    """List the users that have a vault (one name per line)."""
    from p2p_local.api import Personalizer
    from p2p_local.paths import users_dir

    names = Personalizer.list_users()
    if as_json:
        console.print_json(json.dumps({"data_dir": str(users_dir()), "users": names}))
    else:
        for name in names:
            typer.echo(name)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("ingest")(ingest)
    app.add_typer(history_app, name="history")
    app.command("export-data")(export_data)
    app.command("passwd")(passwd)
    app.command("forget")(forget)
    app.command("users")(users)
