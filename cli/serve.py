"""The serve command: the local OpenAI-compatible server (``p2p_local.server``).

Owns the command line of the server: which users to unlock at start-up and how, the listening
address, the limits. Users are named explicitly: ``--unlock USER=PASSPHRASE_FILE`` (the
passphrase on the file's first line) and ``--unlock-keychain USER`` (the OS keychain), each
repeatable. Every other vault stays locked (requests for it get 403); ``p2p-local:base`` needs
none. All users share one loaded base model. Heavy libraries load inside the command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from p2p_local.errors import InputError

from .common import console, err_console, read_passphrase

if TYPE_CHECKING:
    from p2p_local.api import Personalizer
    from p2p_local.engine import Engine
    from p2p_local.server import ServerToken


@dataclass(frozen=True)
class UnlockSpec:
    """One user to unlock at start-up: from a passphrase file, or from the keychain."""

    user: str
    passphrase_file: Path | None = None  # None: the OS keychain

    @classmethod
    def parse(cls, text: str) -> UnlockSpec:
        """``USER=PASSPHRASE_FILE`` (as given to ``--unlock``)."""
        from p2p_local.paths import validate_user_name

        user, sep, file = text.partition("=")
        if not sep or not user or not file:
            raise InputError(
                f"--unlock takes USER=PASSPHRASE_FILE, got {text!r}: e.g. "
                "--unlock alice=~/.config/alice.pass (or --unlock-keychain alice)"
            )
        return cls(validate_user_name(user), Path(file).expanduser())


def unlock_specs(unlock: list[str], unlock_keychain: list[str]) -> list[UnlockSpec]:
    """The users to unlock, checked: valid names, each once, none named ``base``."""
    from p2p_local.paths import validate_user_name

    specs = [UnlockSpec.parse(u) for u in unlock]
    specs += [UnlockSpec(validate_user_name(u)) for u in unlock_keychain]
    seen: set[str] = set()
    for spec in specs:
        if spec.user == "base":
            raise InputError(
                "a user named 'base' clashes with the model p2p-local:base (the base model): "
                "it cannot be served"
            )
        if spec.user in seen:
            raise InputError(f"user {spec.user!r} is named twice: unlock each user once")
        seen.add(spec.user)
    return specs


def open_users(specs: list[UnlockSpec], engine: Engine,
               checkpoint: Path | None) -> dict[str, Personalizer]:
    """Open each user's vault on ``engine``; closes what it opened if one fails."""
    from p2p_local.api import Personalizer
    from p2p_local.errors import VaultNotFoundError

    users: dict[str, Personalizer] = {}
    try:
        for spec in specs:
            if not Personalizer.exists(spec.user):
                raise VaultNotFoundError(
                    f"no vault for user {spec.user!r}: create one with "
                    f"`p2p-local init --user {spec.user}`, or do not unlock it"
                )
            if spec.passphrase_file is None:
                person = Personalizer(spec.user, use_keychain=True, engine=engine)
            else:
                passphrase = read_passphrase(spec.passphrase_file)
                person = Personalizer(spec.user, passphrase=passphrase, engine=engine)
            if checkpoint is not None:
                person.configure_adapter(checkpoint=checkpoint)
            users[spec.user] = person
    except BaseException:
        for person in users.values():
            person.close()
        raise
    return users


def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (loopback unless --allow-remote).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port).")] = 8000,
    allow_remote: Annotated[
        bool,
        typer.Option("--allow-remote",
                     help="Allow a non-loopback --host: other machines can then connect "
                          "(plain HTTP; the token still applies)."),
    ] = False,
    unlock: Annotated[
        list[str] | None,
        typer.Option("--unlock", metavar="USER=PASSPHRASE_FILE",
                     help="Serve USER, unlocking the vault with the passphrase on the file's "
                          "first line. Repeat for more users."),
    ] = None,
    unlock_keychain: Annotated[
        list[str] | None,
        typer.Option("--unlock-keychain", metavar="USER",
                     help="Serve USER, unlocking the vault from the OS keychain. Repeatable."),
    ] = None,
    backend: Annotated[
        str, typer.Option("--backend", "-b", help="llamacpp (default) or hf (transformers).")
    ] = "llamacpp",
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint",
                     help="Hypernetwork checkpoint for every user (default: the installed one)."),
    ] = None,
    n_ctx: Annotated[int, typer.Option("--n-ctx", help="Context window (llamacpp).")] = 2048,
    max_tokens_limit: Annotated[
        int, typer.Option("--max-tokens-limit", help="Largest max_tokens a request may ask for.")
    ] = 1024,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", help="Largest request body, in bytes.")
    ] = 1_000_000,
    prebuild: Annotated[
        bool,
        typer.Option("--prebuild/--no-prebuild",
                     help="Build each user's adapter at start-up (else on their first request)."),
    ] = True,
    log_level: Annotated[
        str, typer.Option("--log-level", help="uvicorn log level (warning, info, debug).")
    ] = "info",
) -> None:
    """Serve an OpenAI-compatible API (/v1/models, /v1/chat/completions) on this machine.

    The model name picks the user: p2p-local:USER (their personalized model) or p2p-local:base.
    Every request needs 'Authorization: Bearer TOKEN': the token comes from
    P2P_LOCAL_SERVER_TOKEN, or is generated on first start, stored (0600) in the data
    directory and printed once.
    """
    from p2p_local.engine import Engine
    from p2p_local.runtime import BACKENDS
    from p2p_local.server import ServerSettings, create_app, run_server, server_token

    settings = ServerSettings(host=host, port=port, allow_remote=allow_remote,
                              max_body_bytes=max_body_bytes, max_tokens_limit=max_tokens_limit)
    if backend not in BACKENDS:
        raise InputError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    specs = unlock_specs(unlock or [], unlock_keychain or [])
    if checkpoint is not None and not checkpoint.exists():
        raise InputError(f"--checkpoint {checkpoint} does not exist: give a checkpoint directory")
    backend_options: dict[str, Any] = {"n_ctx": n_ctx} if backend == "llamacpp" else {}
    engine = Engine(backend, **backend_options)
    users = open_users(specs, engine, checkpoint)  # before loading anything: fail fast
    try:
        from .models import fetch_progress

        with fetch_progress("base model") as progress:
            engine.load(progress=progress)
        if prebuild:
            for person in users.values():
                _report_adapter(person, backend)
        token = server_token()  # a new one is printed below, once
        app = create_app(engine, users, token.value, settings)
        if allow_remote and not _loopback(host):
            err_console.print(f"[yellow]warning:[/] listening on {escape(host)}: other machines "
                              "can connect (plain HTTP)", highlight=False)
        _report_token(token)

        def ready(url: str) -> None:
            names = ", ".join(["p2p-local:base"] + [f"p2p-local:{u}" for u in users])
            console.print(f"serving {url}  (models: {escape(names)})", highlight=False,
                          soft_wrap=True)

        _stop_on_sigterm()
        try:
            run_server(app, settings, log_level=log_level, on_ready=ready)
        except KeyboardInterrupt:  # uvicorn shut down gracefully, then passed the signal on
            err_console.print("stopped", highlight=False)
    finally:
        for person in users.values():
            person.close()
        engine.close()


def _stop_on_sigterm() -> None:
    """Let SIGTERM end the command like Ctrl-C: after the server stops, the vaults close."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def _loopback(host: str) -> bool:
    from p2p_local.server import is_loopback

    return is_loopback(host)


def _report_adapter(person: Personalizer, backend: str) -> None:
    """Build (or fetch) ``person``'s adapter now and say whether replies are personalized."""
    payload = person.personal_adapter(backend)
    if payload is not None:
        note = "personalized adapter ready"
    elif person.hypernetwork_info() is None:
        note = "no hypernetwork installed: the base model answers"
    else:
        note = "empty history: the base model answers"
    err_console.print(f"[dim]{escape(person.user)}: {note}[/]", highlight=False)


def _report_token(token: ServerToken) -> None:
    path = escape(str(token.path))
    if token.source == "generated":
        console.print(f"API token (shown once; stored 0600 in {path}):\n{token.value}",
                      highlight=False, soft_wrap=True)
    elif token.source == "file":
        console.print(f"API token: the one stored in {path}", highlight=False)
    else:
        console.print("API token: from P2P_LOCAL_SERVER_TOKEN", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
