"""Options and helpers shared by every command module.

Owns the common ``--user`` / ``--passphrase-file`` options, how a passphrase is obtained
(file, ``P2P_LOCAL_PASSPHRASE``, or a prompt), and the console objects. Imports nothing heavy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from p2p_local.errors import InputError

console = Console()
err_console = Console(stderr=True)

UserOpt = Annotated[
    str,
    typer.Option(
        "--user",
        "-u",
        envvar="P2P_LOCAL_USER",
        help="Whose vault to use. Each user has a separate encrypted vault.",
        show_default=True,
    ),
]
PassFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help="Read the vault passphrase from this file (first line). "
        "Alternatives: the P2P_LOCAL_PASSPHRASE variable, or an interactive prompt.",
        exists=False,
        dir_okay=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def read_passphrase(passphrase_file: Path | None, *, confirm: bool = False) -> str:
    """The passphrase from ``--passphrase-file``, ``P2P_LOCAL_PASSPHRASE``, or a prompt."""
    if passphrase_file is not None:
        try:
            text = passphrase_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(
                f"cannot read passphrase file {passphrase_file}: {exc.strerror}"
            ) from exc
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise InputError(
                f"passphrase file {passphrase_file} is empty: put the passphrase on its first line"
            )
        return lines[0]
    env = os.environ.get("P2P_LOCAL_PASSPHRASE")
    if env:
        return env
    if not os.isatty(0):
        raise InputError(
            "no passphrase: set P2P_LOCAL_PASSPHRASE or pass --passphrase-file "
            "when not on a terminal"
        )
    return typer.prompt("Vault passphrase", hide_input=True, confirmation_prompt=confirm)
