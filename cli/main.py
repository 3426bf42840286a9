"""Entry point: builds the typer app from the command modules and maps errors to exit codes.

Every command module registers itself through ``register(app)``. Heavy libraries (torch,
transformers, llama.cpp) are imported only inside the commands that need them, so
``p2p-local --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from typer.core import TyperGroup

from p2p_local.errors import P2PError

from .common import err_console

if TYPE_CHECKING:
    from typer._click.core import Context  # typer ships its own click


class _ErrorMappingGroup(TyperGroup):
    """Turns a :class:`P2PError` from any command into one red line and its exit code."""

    def invoke(self, ctx: Context) -> object:
        try:
            return super().invoke(ctx)
        except P2PError as exc:
            err_console.print(
                f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None


app = typer.Typer(
    name="p2p-local",
    cls=_ErrorMappingGroup,
    help=(
        "Personalize a local LLM from your own history, on your own machine.\n\n"
        "Typical use:  p2p-local init  ->  p2p-local ingest history.jsonl  ->  p2p-local chat\n\n"
        "Your history is kept encrypted on disk; nothing is sent anywhere."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES = ("vault", "models", "chat", "profile", "adapter", "train", "eval", "serve")

for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"{__package__}.{_name}")
    except ModuleNotFoundError as _exc:  # a command group not present in this build
        if _exc.name != f"{__package__}.{_name}":
            raise
        continue
    _module.register(app)


def run() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    run()
