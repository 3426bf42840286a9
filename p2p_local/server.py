"""The local OpenAI-compatible server: ``GET /v1/models`` and ``POST /v1/chat/completions``.

Owns the HTTP layer over the facade: routes, request validation, the bearer token, the body
size and ``max_tokens`` limits, errors as OpenAI-style JSON, Server-Sent-Events streaming, and
running uvicorn (in the foreground or in a thread). The model name picks the user:
``p2p-local:<user>`` answers with that user's adapter, ``p2p-local:base`` with the base model
alone. Every reply goes through one shared :class:`~p2p_local.engine.Engine`, so users' adapters
are swapped under its lock and never mix. It does not unlock vaults: the caller passes the
users' open :class:`~p2p_local.api.Personalizer` objects (``p2p-local serve`` does that).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from p2p_local import paths
from p2p_local.errors import (
    AuthenticationError,
    ConfigError,
    EmptyHistoryError,
    InputError,
    P2PError,
    VaultNotFoundError,
)

if TYPE_CHECKING:
    from p2p_local.api import Personalizer
    from p2p_local.engine import Engine
    from p2p_local.runtime import AdapterPayload
    from p2p_local.runtime.base import GenerationSettings, Message

__all__ = [
    "BASE_MODEL",
    "MODEL_PREFIX",
    "TOKEN_ENV",
    "RunningServer",
    "ServerSettings",
    "ServerToken",
    "create_app",
    "is_loopback",
    "run_server",
    "server_token",
    "start_server",
]

log = logging.getLogger("p2p_local.server")

MODEL_PREFIX = "p2p-local:"
BASE_MODEL = "p2p-local:base"
TOKEN_ENV = "P2P_LOCAL_SERVER_TOKEN"
TOKEN_FILE = "server.token"
_MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class ServerSettings:
    """How the server listens and what it accepts.

    host:              address to bind; loopback only (127.0.0.1, ::1, localhost) unless
                       ``allow_remote``.
    port:              TCP port (0: any free port).
    allow_remote:      permit a non-loopback ``host`` (the traffic is plain HTTP).
    max_body_bytes:    largest request body; bigger ones get 413.
    max_tokens_limit:  largest ``max_tokens`` a request may ask for; more gets 400.
    default_max_tokens: ``max_tokens`` when a request gives none (at most the limit).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    allow_remote: bool = False
    max_body_bytes: int = 1_000_000
    max_tokens_limit: int = 1024
    default_max_tokens: int = 256

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        if not self.host:
            raise ConfigError("host is empty: use 127.0.0.1")
        if not self.allow_remote and not is_loopback(self.host):
            raise ConfigError(
                f"host {self.host!r} is not a loopback address, so other machines could reach "
                "the server: bind to 127.0.0.1, or pass --allow-remote if that is intended"
            )
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if not 1 <= self.max_tokens_limit <= 8192:
            raise ConfigError(f"max_tokens_limit must be in 1..8192, got {self.max_tokens_limit}")
        if not 1 <= self.default_max_tokens <= 8192:
            raise ConfigError(
                f"default_max_tokens must be in 1..8192, got {self.default_max_tokens}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address or ``localhost``) only reaches this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost could resolve anywhere


# --- the bearer token -------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerToken:
    """The API token. ``source``: ``env`` (P2P_LOCAL_SERVER_TOKEN), ``file`` (read from
    ``path``) or ``generated`` (new, written 0600 to ``path``: show it once)."""

    value: str = field(repr=False)
    source: Literal["env", "file", "generated"]
    path: Path | None = None


def server_token() -> ServerToken:
    """The token from ``P2P_LOCAL_SERVER_TOKEN``, else the one stored in the data dir, else a
    new random one stored there (0600)."""
    env = os.environ.get(TOKEN_ENV)
    if env is not None:
        env = env.strip()
        if len(env) < _MIN_TOKEN_CHARS:
            raise ConfigError(
                f"{TOKEN_ENV} is {len(env)} characters long: use at least {_MIN_TOKEN_CHARS} "
                "random characters (or unset it and a token is generated)"
            )
        return ServerToken(env, "env")
    path = paths.data_dir() / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return ServerToken(_read_token_file(path), "file", path)
    value = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return ServerToken(value, "generated", path)


def _read_token_file(path: Path) -> str:
    if path.stat().st_mode & 0o077:
        raise ConfigError(
            f"{path} can be read by other users, so the server token may be known: delete the "
            "file (a new token is generated at the next start)"
        )
    value = path.read_text(encoding="utf-8").strip()
    if len(value) < _MIN_TOKEN_CHARS:
        raise ConfigError(f"{path} holds no usable token: delete it to generate a new one")
    return value


# --- requests ---------------------------------------------------------------------------------


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class _MessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_TextPart]

    def as_message(self) -> Message:
        text = self.content if isinstance(self.content, str) else "".join(
            p.text for p in self.content
        )
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": text}


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat-completions request this server honours (others ignored)."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=200)
    messages: list[_MessageIn] = Field(min_length=1)
    # Strict: ``true`` or ``"5"`` is a client bug, not a token count.
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=1)
    stop: str | list[str] | None = None

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if len(stops) > 4:
            raise InputError(f"stop takes at most 4 sequences, got {len(stops)}")
        return [s for s in stops if s]

    def settings(self, server: ServerSettings) -> GenerationSettings:
        from p2p_local.runtime.base import GenerationSettings

        asked = self.max_completion_tokens or self.max_tokens
        if asked is not None and asked > server.max_tokens_limit:
            raise InputError(
                f"max_tokens {asked} is above this server's limit ({server.max_tokens_limit}): "
                "ask for fewer, or restart the server with a higher --max-tokens-limit"
            )
        temperature = 1.0 if self.temperature is None else self.temperature
        seed = self.seed
        if seed is None:
            seed = secrets.randbelow(2**31) if temperature > 0 else 0
        seed %= 2**31  # any integer a client sends maps to a valid sampler seed
        return GenerationSettings(
            max_tokens=asked or min(server.default_max_tokens, server.max_tokens_limit),
            temperature=temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=seed,
        )


class _StopScanner:
    """Cuts a streamed reply at the first stop sequence, holding back text that could be the
    start of one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.buffer = ""
        self.hit = False

    def feed(self, piece: str) -> str:
        if not self.stops:
            return piece
        self.buffer += piece
        found = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if found:
            out, self.buffer, self.hit = self.buffer[: min(found)], "", True
            return out
        keep = max(
            (k for s in self.stops for k in range(1, len(s)) if self.buffer.endswith(s[:k])),
            default=0,
        )
        cut = len(self.buffer) - keep
        out, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return out

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


# --- errors -----------------------------------------------------------------------------------


class APIError(Exception):
    """An error answered as OpenAI-style JSON with ``status``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=dict(headers or {}))


def _api_error(exc: BaseException, *, log_unexpected: bool = True) -> APIError:
    """The HTTP answer for an exception raised while serving a request."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, (InputError, ConfigError, EmptyHistoryError)):
        return APIError(400, str(exc))
    if isinstance(exc, AuthenticationError):
        return APIError(403, str(exc), type="permission_error")
    if isinstance(exc, VaultNotFoundError):
        return APIError(404, str(exc), code="model_not_found")
    if isinstance(exc, P2PError):
        return APIError(500, str(exc), type="server_error")
    if log_unexpected:
        log.error("unexpected error while serving a request", exc_info=exc)
    return APIError(500, "internal server error: see the server's log", type="server_error")


_UNAUTHORIZED = APIError(
    401,
    "missing or wrong API key: send 'Authorization: Bearer TOKEN' with the token p2p-local "
    f"serve printed (stored in the data dir as {TOKEN_FILE}) or set in {TOKEN_ENV}",
    code="invalid_api_key",
)


class _AuthAndSize:
    """ASGI middleware: the bearer token on every route, and an early 413 on a declared
    Content-Length above the limit (the route counts the bytes it actually reads)."""

    def __init__(self, app: Any, *, token: str, max_body_bytes: int) -> None:
        self.app = app
        self._token = token.encode("utf-8")
        self._max = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        if not self._authorized(headers.get("authorization", b"")):
            resp = _UNAUTHORIZED.response({"WWW-Authenticate": "Bearer"})
            await resp(scope, receive, send)
            return
        declared = headers.get("content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self._max
            except ValueError:
                too_big = False
            if too_big:
                await _too_large(self._max).response()(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _authorized(self, header: bytes) -> bool:
        scheme, _, value = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(value.strip(), self._token)


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is larger than this server's limit ({limit} bytes): "
                         "send a shorter conversation", code="request_too_large")


# --- the app ----------------------------------------------------------------------------------


@dataclass
class _Reply:
    """What one generation produced (filled in by the worker)."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


def create_app(engine: Engine, users: Mapping[str, Personalizer], token: str,
               settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI app. ``users``: the unlocked users by name (they stay open; the caller
    closes them). Users with a vault that are not in ``users`` are answered 403 (locked)."""
    settings = settings or ServerSettings()
    if len(token) < _MIN_TOKEN_CHARS:
        raise ConfigError(f"the server token must be at least {_MIN_TOKEN_CHARS} characters")
    if "base" in users:
        raise ConfigError(
            f"a user named 'base' would clash with {BASE_MODEL} (the base model): serve that "
            "vault under another name"
        )
    started = int(time.time())
    app = FastAPI(title="p2p-local", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_AuthAndSize, token=token, max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return APIError(exc.status_code, str(exc.detail), code=code).response(exc.headers)

    @app.exception_handler(APIError)
    @app.exception_handler(P2PError)
    async def _known_error(request: Request, exc: Exception) -> JSONResponse:
        return _api_error(exc).response()

    @app.exception_handler(Exception)
    async def _any_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback of an unexpected error after this answer is sent.
        return _api_error(exc, log_unexpected=False).response()

    seen: dict[str, str] = {}  # user -> the adapter id of their latest reply

    def resolve(model: str) -> Personalizer | None:
        """The user ``model`` names (None: the base model); 404 / 403 otherwise."""
        if model == BASE_MODEL:
            return None
        name = model[len(MODEL_PREFIX):] if model.startswith(MODEL_PREFIX) else None
        if name is not None and name in users:
            return users[name]
        from p2p_local.api import Personalizer

        try:
            exists = name is not None and Personalizer.exists(paths.validate_user_name(name))
        except InputError:
            exists = False
        if exists:
            raise APIError(
                403,
                f"user {name!r} is locked: the server was not given a key for their vault; "
                f"restart it with --unlock {name}=PASSPHRASE_FILE or --unlock-keychain {name}",
                type="permission_error", code="user_locked", param="model",
            )
        raise APIError(
            404,
            f"model {model!r} does not exist: use {BASE_MODEL} or {MODEL_PREFIX}USER for an "
            "unlocked user (GET /v1/models lists them)",
            code="model_not_found", param="model",
        )

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        data = [_model_card(BASE_MODEL, started, None)]
        from p2p_local.api import Personalizer

        names = set(Personalizer.list_users()) | set(users)
        for name in sorted(names - {"base"}):
            data.append(_model_card(MODEL_PREFIX + name, started, users.get(name), name, seen))
        return {"object": "list", "data": data}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        person = resolve(model_id)
        name = None if person is None else person.user
        return _model_card(model_id, started, person, name, seen)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
        req = await _read_request(request, settings.max_body_bytes)
        person = resolve(req.model)
        gen = req.settings(settings)
        stops = req.stops()
        messages = [m.as_message() for m in req.messages]
        ident = f"chatcmpl-{secrets.token_hex(12)}"
        created = int(time.time())
        if not req.stream:
            reply, fingerprint = await asyncio.to_thread(
                _generate, engine, person, messages, gen, stops, seen)
            return JSONResponse({
                "id": ident, "object": "chat.completion", "created": created,
                "model": req.model, "system_fingerprint": fingerprint,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                             "logprobs": None, "finish_reason": reply.finish_reason}],
                "usage": _usage(reply),
            })
        job = _StreamJob(engine, person, messages, gen, stops, seen)
        fingerprint = await job.open()
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(
            job.events(ident, created, req.model, fingerprint, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


async def _read_request(request: Request, limit: int) -> ChatCompletionRequest:
    """The body, read up to ``limit`` bytes, parsed and validated (413 / 400 / 422)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON ({exc}): send a JSON object",
                       code="invalid_json") from None
    except RecursionError:
        raise APIError(400, "the request body is nested too deeply: send a flat JSON object",
                       code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        first = exc.errors()[0]["loc"] if exc.errors() else ()
        raise APIError(422, f"invalid request: {problems}", code="invalid_request",
                       param=".".join(str(x) for x in first) or None) from None


def _model_card(model_id: str, created: int, person: Personalizer | None,
                user: str | None = None, seen: Mapping[str, str] | None = None
                ) -> dict[str, Any]:
    """One /v1/models entry; ``p2p_local`` says whether and how it is personalized."""
    if user is None:
        meta: dict[str, Any] = {"user": None, "unlocked": True, "personalized": False,
                                "adapter": "none", "note": "the base model, no personalization"}
    elif person is None:
        meta = {"user": user, "unlocked": False, "personalized": None, "adapter": "unknown",
                "note": "locked: the server was started without a key for this vault"}
    else:
        meta = {"user": user, "unlocked": True, **_adapter_state(person, (seen or {}).get(user))}
    return {"id": model_id, "object": "model", "created": created, "owned_by": "p2p-local",
            "p2p_local": meta}


def _adapter_state(person: Personalizer, last: str | None) -> dict[str, Any]:
    """Whether ``person``'s replies are personalized (``last``: the adapter id of their latest
    reply, None before the first), without building anything."""
    try:
        info = person.hypernetwork_info()
    except P2PError as exc:
        return {"personalized": False, "adapter": "error", "note": str(exc)}
    if info is None:
        return {"personalized": False, "adapter": "none",
                "note": "no trained hypernetwork is installed: answers come from the base model"}
    if last is None:
        return {"personalized": None, "adapter": "pending", "hypernetwork": info.checkpoint_id,
                "note": "the adapter is built on the first request"}
    if last == "none":
        return {"personalized": False, "adapter": "none", "hypernetwork": info.checkpoint_id,
                "note": "no history to personalize from yet: answers come from the base model"}
    return {"personalized": True, "adapter": last, "hypernetwork": info.checkpoint_id}


def _adapter_id(payload: AdapterPayload | None) -> str:
    if payload is None:
        return "none"
    return "lora-" + hashlib.sha256(payload.key.encode("utf-8")).hexdigest()[:12]


def _usage(reply: _Reply) -> dict[str, int]:
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


def _prepare(engine: Engine, person: Personalizer | None, seen: dict[str, str]
             ) -> tuple[AdapterPayload | None, str]:
    """The adapter for the request's user (built or fetched outside the engine's lock) and
    the response's ``system_fingerprint`` naming it."""
    if person is None:
        return None, "p2p-local-base"
    payload = person.personal_adapter(engine.name)
    seen[person.user] = _adapter_id(payload)
    return payload, "p2p-local-" + ("base" if payload is None else _adapter_id(payload))


def _finish(engine: Engine, reply: _Reply, pieces: int, max_tokens: int, stopped: bool) -> None:
    """Usage and finish reason. A streamed piece is one generated token, except that a
    character split over several tokens comes as one piece; re-tokenizing the text can merge
    tokens too, so the larger of the two counts is the closer one."""
    counted = engine.count_tokens(reply.text) if reply.text else 0
    reply.completion_tokens = min(max(pieces, counted), max_tokens)
    reply.finish_reason = "length" if reply.completion_tokens >= max_tokens and not stopped \
        else "stop"


def _generate(engine: Engine, person: Personalizer | None, messages: list[Message],
              settings: GenerationSettings, stops: list[str], seen: dict[str, str]
              ) -> tuple[_Reply, str]:
    """A whole reply (runs in a worker thread)."""
    payload, fingerprint = _prepare(engine, person, seen)
    reply = _Reply(prompt_tokens=engine.prompt_tokens(messages))
    scanner = _StopScanner(stops)
    parts: list[str] = []
    pieces = 0
    with engine.stream(messages, settings, adapter=payload) as stream:
        for piece in stream:
            pieces += 1
            parts.append(scanner.feed(piece))
            if scanner.hit:
                break
    parts.append(scanner.flush() if not scanner.hit else "")
    reply.text = "".join(parts)
    _finish(engine, reply, pieces, settings.max_tokens, scanner.hit)
    return reply, fingerprint


_END = object()


class _StreamJob:
    """One streamed reply: a worker thread generates (holding the engine's lock) and hands
    pieces to the event loop; a closed connection stops the generation."""

    def __init__(self, engine: Engine, person: Personalizer | None, messages: list[Message],
                 settings: GenerationSettings, stops: list[str], seen: dict[str, str]) -> None:
        self.engine, self.person, self.messages = engine, person, messages
        self.settings, self.stops, self.seen = settings, stops, seen
        self.cancel = threading.Event()
        self.reply = _Reply()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._opened: asyncio.Future[str] = self._loop.create_future()

    async def open(self) -> str:
        """Start generating; returns the fingerprint, or raises what stopped it before the
        first piece (an unknown adapter, an over-long conversation) so it gets a status code."""
        threading.Thread(target=self._run, name="p2p-local-stream", daemon=True).start()
        return await self._opened

    def _post(self, fn: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: the server is stopping
            self._loop.call_soon_threadsafe(fn, *args)

    def _opened_ok(self, value: str) -> None:
        if not self._opened.done():
            self._opened.set_result(value)

    def _opened_failed(self, exc: BaseException) -> None:
        if not self._opened.done():
            self._opened.set_exception(exc)

    def _run(self) -> None:
        try:
            payload, fingerprint = _prepare(self.engine, self.person, self.seen)
            self.reply.prompt_tokens = self.engine.prompt_tokens(self.messages)
            stream = self.engine.stream(self.messages, self.settings, adapter=payload)
        except BaseException as exc:  # noqa: BLE001 - answered as an HTTP error
            self._post(self._opened_failed, exc)
            return
        self._post(self._opened_ok, fingerprint)
        scanner = _StopScanner(self.stops)
        parts: list[str] = []
        pieces = 0
        try:
            with stream:
                for piece in stream:
                    if self.cancel.is_set():
                        return
                    pieces += 1
                    text = scanner.feed(piece)
                    if text:
                        parts.append(text)
                        self._post(self._queue.put_nowait, text)
                    if scanner.hit:
                        break
            tail = "" if scanner.hit else scanner.flush()
            if tail:
                parts.append(tail)
                self._post(self._queue.put_nowait, tail)
            self.reply.text = "".join(parts)
            _finish(self.engine, self.reply, pieces, self.settings.max_tokens, scanner.hit)
            self._post(self._queue.put_nowait, _END)
        except BaseException as exc:  # noqa: BLE001 - reported in the stream
            self._post(self._queue.put_nowait, exc)

    async def events(self, ident: str, created: int, model: str, fingerprint: str,
                     include_usage: bool) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            body: dict[str, Any] = {
                "id": ident, "object": "chat.completion.chunk", "created": created,
                "model": model, "system_fingerprint": fingerprint,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}],
            }
            return _sse(body)

        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                item = await self._queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    yield _sse(_api_error(item).body())
                    yield "data: [DONE]\n\n"
                    return
                yield chunk({"content": item})
            yield chunk({}, self.reply.finish_reason)
            if include_usage:
                yield _sse({"id": ident, "object": "chat.completion.chunk", "created": created,
                            "model": model, "system_fingerprint": fingerprint, "choices": [],
                            "usage": _usage(self.reply)})
            yield "data: [DONE]\n\n"
        finally:
            self.cancel.set()  # the client left (or we are done): stop generating


def _sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


# --- running it -------------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    if host.strip().lower() == "localhost":
        host = "127.0.0.1"
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}): choose another --port"
        ) from exc
    sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    return sock


def _uvicorn_server(app: FastAPI, log_level: str) -> Any:
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, lifespan="off", access_log=False,
                            timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def run_server(app: FastAPI, settings: ServerSettings, *, log_level: str = "info",
               on_ready: Any = None) -> None:
    """Serve ``app`` in this thread until interrupted (Ctrl-C / SIGTERM)."""
    sock = _bind(settings.host, settings.port)
    server = _uvicorn_server(app, log_level)
    if on_ready is not None:
        on_ready(_url(settings.host, sock.getsockname()[1]))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


@dataclass
class RunningServer:
    """A server running in a background thread (tests, benchmarks, apps that embed it)."""

    url: str  # e.g. http://127.0.0.1:8123/v1
    port: int
    _server: Any
    _thread: threading.Thread
    _sock: socket.socket

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread to end."""
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(app: FastAPI, settings: ServerSettings, *, log_level: str = "warning",
                 timeout: float = 30.0) -> RunningServer:
    """Serve ``app`` from a background thread; returns once it accepts connections."""
    sock = _bind(settings.host, settings.port)
    server = _uvicorn_server(app, log_level)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="p2p-local-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise ConfigError("the server did not start: see the log above")
        time.sleep(0.02)
    port = sock.getsockname()[1]
    return RunningServer(_url(settings.host, port), port, server, thread, sock)


def _url(host: str, port: int) -> str:
    shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    return f"http://{shown}:{port}/v1"

