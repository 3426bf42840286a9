"""The chat command: an interactive REPL (or one message with --once) that streams replies.

A thin shell over :meth:`p2p_local.api.Personalizer.chat` (the user's vault and adapter) and
:class:`p2p_local.api.ModelChat` (the base model alone, when there is no vault or with
--no-adapter). Nothing is stored unless --remember, which adds the user's own messages to the
vault. The library (and llama.cpp / torch) is imported inside the command.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from p2p_local.errors import InputError, P2PError

from .common import PassFileOpt, UserOpt, err_console
from .models import fetch_progress

if TYPE_CHECKING:
    from p2p_local.registry import ProgressFn
    from p2p_local.runtime.base import GenerationSettings, Message

HELP = "commands: /reset (new conversation), /adapter on|off, /exit"

# (messages, settings, use_adapter) -> reply pieces
Replier = Callable[["list[Message]", "GenerationSettings", bool], Iterator[str]]


def chat(
    user: UserOpt = "default",
    once: Annotated[
        str | None, typer.Option("--once", help="Send this one message, print the reply, exit.")
    ] = None,
    backend: Annotated[
        str, typer.Option("--backend", "-b", help="llamacpp (default) or hf (transformers).")
    ] = "llamacpp",
    no_adapter: Annotated[
        bool, typer.Option("--no-adapter", help="Chat with the base model, not your adapter.")
    ] = False,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Longest reply, in tokens.")
    ] = 256,
    temperature: Annotated[
        float, typer.Option("--temperature", "-t", help="0 = greedy; higher = more varied.")
    ] = 0.7,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
    repeat_penalty: Annotated[
        float, typer.Option("--repeat-penalty", min=1.0, max=2.0,
                            help="Above 1, discourages repeating recent tokens (1 = off).")
    ] = 1.0,
    system: Annotated[
        str | None, typer.Option("--system", help="A system message for the conversation.")
    ] = None,
    remember: Annotated[
        bool,
        typer.Option("--remember", help="Add your own messages to your (encrypted) history."),
    ] = False,
    passphrase_file: PassFileOpt = None,
) -> None:
    """Chat with your personalized model (base model + your adapter), streaming the replies.

    Type /reset for a new conversation, /adapter on|off to compare with the base model,
    /exit (or Ctrl-D) to leave. The conversation is not stored unless --remember.
    """
    from p2p_local.api import ModelChat, Personalizer
    from p2p_local.runtime import BACKENDS
    from p2p_local.runtime.base import GenerationSettings

    if backend not in BACKENDS:
        raise InputError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    settings = GenerationSettings(max_tokens=max_tokens, temperature=temperature, seed=seed,
                                  repeat_penalty=repeat_penalty)
    use_vault = remember or not no_adapter
    if use_vault and not remember and not Personalizer.exists(user):
        err_console.print(f"[dim]no vault for user {escape(user)!r}: chatting with the base "
                          "model (create one with 'p2p-local init')[/]", highlight=False)
        use_vault = False

    if once is not None and not once.strip():
        raise InputError("--once needs a non-empty message")
    with contextlib.ExitStack() as stack:
        if use_vault:
            from .vault import open_personalizer

            person = stack.enter_context(open_personalizer(user, passphrase_file))
            with _loading(backend) as progress:
                person.chat_backend(backend, progress=progress)

            def reply(msgs: list[Message], s: GenerationSettings, adapter: bool) -> Iterator[str]:
                # The conversation grows turn by turn: only the new turn is evaluated.
                return person.chat(  # type: ignore[return-value]
                    msgs, s, stream=True, backend=backend, use_adapter=adapter,
                    keep_context=True)

            def store(text: str) -> None:
                if remember:
                    person.remember([text])
        else:
            model = stack.enter_context(ModelChat(backend))
            with _loading(backend) as progress:
                model.load(progress=progress)

            def reply(msgs: list[Message], s: GenerationSettings, adapter: bool) -> Iterator[str]:
                return model.chat(msgs, s, stream=True)  # type: ignore[return-value]

            def store(text: str) -> None:
                return None

        if once is not None:
            messages = _start(system) + [{"role": "user", "content": once}]
            _print_reply(reply(messages, settings, not no_adapter))
            store(once)
            return
        _repl(reply, store, settings, system=system, adapter=use_vault and not no_adapter,
              has_vault=use_vault)


@contextlib.contextmanager
def _loading(backend: str) -> Iterator[ProgressFn]:
    """While the model loads: a fetch bar on first run, a note on a terminal."""
    if err_console.is_terminal:
        err_console.print(f"[dim]loading the base model ({backend})...[/]", highlight=False)
    with fetch_progress("base model") as progress:
        yield progress


def _start(system: str | None) -> list[Message]:
    return [{"role": "system", "content": system}] if system else []


def _print_reply(pieces: Iterator[str]) -> str:
    out: list[str] = []
    try:
        for piece in pieces:
            out.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        close = getattr(pieces, "close", None)
        if close:
            close()
        sys.stdout.write(" [stopped]")
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(out)


def _repl(reply: Replier, store: Callable[[str], None], settings: GenerationSettings, *,
          system: str | None, adapter: bool, has_vault: bool) -> None:
    messages = _start(system)
    interactive = os.isatty(0)
    if interactive:
        mode = "your adapter" if adapter else "the base model"
        err_console.print(f"[dim]chatting with {mode}; {HELP}[/]", highlight=False)
    while True:
        try:
            line = input("you> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            if interactive:
                sys.stdout.write("\n")
            return
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            cmd, _, arg = text.partition(" ")
            if cmd in ("/exit", "/quit"):
                return
            if cmd == "/reset":
                messages = _start(system)
                err_console.print("[dim]new conversation[/]")
            elif cmd == "/adapter" and arg.strip() in ("on", "off"):
                if not has_vault and arg.strip() == "on":
                    err_console.print("[yellow]no vault: only the base model is available[/]")
                else:
                    adapter = arg.strip() == "on"
                    messages = _start(system)
                    err_console.print(f"[dim]adapter {arg.strip()}; new conversation[/]")
            else:
                err_console.print(escape(HELP), highlight=False)
            continue
        messages.append({"role": "user", "content": text})
        if interactive:
            sys.stdout.write("bot> ")
        try:
            answer = _print_reply(reply(messages, settings, adapter))
        except P2PError as exc:
            messages.pop()
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            continue
        messages.append({"role": "assistant", "content": answer})
        store(text)


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
