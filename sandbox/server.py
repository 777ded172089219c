"""The sandbox's tools over HTTP (FastAPI), for agents in other processes and languages.

Two families of endpoints:

- ShoppingBench-compatible, stateless: ``GET /find_product`` and ``GET /view_product_information``
  answer exactly what ShoppingBench's own toolkit expects from its search service (a JSON list),
  so that toolkit can point at ``http://127.0.0.1:5631`` unchanged. Each call runs the tool
  through a throwaway `ShoppingEnv`, so validation is the sandbox's; a bad argument is an HTTP
  422 with ``{"error": "...", "kind": "invalid_arguments"}``.
- Episode-scoped: ``POST /episodes`` starts an episode (optionally on a task), ``POST
  /episodes/{id}/step`` runs any tool in it, ``GET /episodes/{id}`` shows its state, ``GET
  /episodes/{id}/score`` scores it and ``DELETE /episodes/{id}`` drops it. A failing tool call is
  a normal step whose observation is the error (``ok: false``), and the episode goes on.

Errors. Every error the app answers is JSON ``{"error": "<readable message>", "kind": "<kind>"}``,
``kind`` being one of the tool errors' `ErrorKind` values: ``invalid_arguments`` (400 unreadable
request, 422 validation), ``not_found`` (404: route, episode, task, product; also a WebSocket
handshake, as no route takes one), ``rejected`` (400 foreign Host header, 400 scoring an episode
without a task, 405 method, 409 live score, 413 body too large), ``internal`` (500, never a stack
trace) and ``unavailable`` (503, a plug-in's missing service); a stateless tool route answers its
tool error's own kind. A redirect (``/health/`` -> ``/health``, 307) has no body.

What the app can never shape is what uvicorn answers itself, from its HTTP parser, without the
app: ``400 text/plain "Invalid HTTP request received."``, then the connection is closed. With
`server_config` (h11, as `serve` runs it) that is: a request line that is not ``METHOD target
HTTP/d.d`` (garbage, HTTP/0.9, a space, tab or non-ASCII byte in the target); a malformed header
line (a space before the colon, an empty name, a NUL); an HTTP/1.1 request without ``Host``; a
``Content-Length`` that is not one non-negative integer (``abc``, ``-1``, two that differ); a
``Transfer-Encoding`` other than chunked; a bad chunk
size (uvicorn answers it even when the app is already reading the body, and drops the app's
answer); and a request line plus headers over `MAX_HEAD_BYTES` (the client, still sending, often
sees a reset connection instead). h11 lets through, to the app and its JSON: bare LF line ends,
folded header lines, any ``HTTP/d.d`` version (9.9 too), other control bytes in a header value, and both
``Content-Length`` and chunked (chunked wins). uvicorn's other plain-text answers cannot happen
here: its ``500 Internal Server Error`` only for an app that fails without a response (Starlette's
error middleware answers the JSON 500 first) and ``503`` only with ``limit_concurrency`` (unset).
`server_config` runs h11 rather than httptools on purpose: httptools takes headers of any size (a
100 MB header took 23 s of the event loop, stalling every other request), h11 refuses them at
`MAX_HEAD_BYTES`; and it runs no WebSocket protocol, so an upgrade request reaches the app as plain
HTTP (a 404). ``/health`` runs on the event loop, so it answers while every worker thread is busy.

Episodes and clients. Live episodes are bounded in count, in bytes (their recorded steps) and in
idle time. All traffic comes from 127.0.0.1, so the address alone cannot tell clients apart: a
client names itself with an ``X-Client-Id`` header (1-64 characters of letters, digits and
``._:-``; any other value is a 422), and a request without one belongs to its peer address (every
such client on 127.0.0.1 is then one client). ``POST /episodes`` answers the ``client`` the
episode was charged to (``id:<X-Client-Id>`` or ``addr:<peer>``). Each client may hold at most
`max_client_episodes` live episodes and `max_client_bytes` of recorded steps (a quarter of the
store by default): past its share, its own least recently used episodes go. When the whole store
is full (in episodes, or in bytes), the least recently used episode among the clients holding at
least an equal share of it (the bound divided by the clients with live episodes) goes: a client that
creates episodes in bulk under one name evicts its own and never those of a client holding less. The
episode being stepped is never its own victim. The id is a claim, not an authentication: a client
that invents a new id for each episode looks like many small clients, so every client is then at
its equal share and the store falls back to least recently used first; its own untouched episodes
go before those of a client that keeps using its episodes, but an idle client's episodes can go.
Nothing on an unauthenticated loopback port can do better; clients whose episodes matter should
send an id of their own and use their episodes.
"""

from __future__ import annotations

import inspect
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox.data_model import Intent
from sandbox.environment import DEFAULT_MAX_STEPS, ShoppingEnv
from sandbox.scorer import TitleSimilarity, default_title_similarity
from sandbox.shoppingbench_profile import PROFILES, upstream_service
from sandbox.toolkit import ErrorKind, Toolkit, ToolSpec, collect_tools
from sandbox.tools import BUILTIN_TOOLKITS
from sandbox.world import ShoppingWorld

DEFAULT_PORT = 5631
MAX_STEPS_LIMIT = 1000
MAX_BODY_BYTES = 1_000_000
DEFAULT_EPISODE_BYTES = 256 * 1024 * 1024  # all live episodes' recorded steps together
DEFAULT_IDLE_SECONDS = 3600.0  # an episode untouched this long is dropped
MAX_TOOL_SELECTION = 64  # tool names or groups in POST /episodes (60,000 repeats took 17.7 s)
CLIENT_SHARE = 4  # by default one client holds at most 1/4 of the store's episodes and of its bytes
CLIENT_ID_HEADER = "X-Client-Id"
CLIENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
MAX_HEAD_BYTES = 64 * 1024  # request line + headers (h11); uvicorn refuses more with its own 400


# -- request / response models (they make /openapi.json document the API) ----------------------
class ErrorResponse(BaseModel):
    error: str = Field(description="A readable message; never a stack trace.")
    kind: ErrorKind = Field(description="Why, as the tool errors say it: invalid_arguments, not_found, rejected, "
                                        "internal, ...")


class CreateEpisodeRequest(BaseModel):
    task_id: str | None = Field(None, description="A task id from GET /tasks; without it the episode has no "
                                                  "instruction and cannot be scored.")
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS_LIMIT,
                                  description=f"Tool calls allowed in the episode (default {DEFAULT_MAX_STEPS}).")
    tools: list[str] | None = Field(None, max_length=MAX_TOOL_SELECTION,
                                    description="Restrict the episode to these tools or toolkit groups "
                                                "(default: all).")


class CreateEpisodeResponse(BaseModel):
    episode_id: str
    client: str = Field(description=f"Who the episode is charged to: id:<{CLIENT_ID_HEADER}>, or addr:<peer address> "
                                    "without that header.")
    task_id: str | None
    intent: str | None
    instruction: str
    max_steps: int
    tools: list[dict[str, Any]] = Field(description="The episode's tools as OpenAI tool JSON.")


class StepRequest(BaseModel):
    tool: str = Field(description="The tool's name, e.g. find_product.")
    arguments: Any = Field(None, description="The tool's arguments: a JSON object, or that object as a JSON "
                                             "string (as LLM tool calls carry them).")


class StepResponse(BaseModel):
    tool: str
    arguments: dict[str, Any]
    observation: str = Field(description="What the agent sees; starts with 'Error:' when the call failed.")
    ok: bool
    done: bool
    latency_ms: float
    steps: int = Field(description="Tool calls made in the episode so far.")
    error: str | None = Field(None, description="The error message when ok is false.")
    error_kind: str | None = Field(None, description="Why the call failed when ok is false: invalid_arguments, "
                                                     "unknown_tool, not_found, rejected, episode_over, unavailable "
                                                     "or internal.")


class EpisodeStateResponse(BaseModel):
    episode_id: str
    task_id: str | None
    instruction: str
    steps: int
    max_steps: int
    done: bool
    recommended: list[str]
    recommend_calls: int
    terminate_status: str | None
    cart: dict[str, Any]
    history: list[dict[str, Any]] | None = None


class TaskSummary(BaseModel):
    task_id: str
    intent: str
    query: str


class ToolDescription(BaseModel):
    type: str
    function: dict[str, Any]
    kind: str = Field(description="read: only looks; write: changes the episode (recommend, cart, terminate).")
    group: str


class DeletedResponse(BaseModel):
    deleted: str


# -- episodes --------------------------------------------------------------------------------
@dataclass
class _Episode:
    episode_id: str
    env: ShoppingEnv
    created: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)
    size: int = 0  # bytes of what the episode keeps (its steps' arguments and observations), estimated
    client: str = ""  # who it is charged to (see the module docstring)


def _kind_for(status: int) -> ErrorKind:
    if status in (400, 422):
        return ErrorKind.invalid_arguments
    if status in (404, 410):
        return ErrorKind.not_found
    if status == 503:
        return ErrorKind.unavailable
    return ErrorKind.internal if status >= 500 else ErrorKind.rejected


class _ApiError(Exception):
    def __init__(self, status: int, message: str, kind: ErrorKind | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind or _kind_for(status)


def _error(status: int, message: str, kind: ErrorKind | str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    kind = ErrorKind(kind) if kind is not None else _kind_for(status)
    return JSONResponse({"error": message, "kind": kind.value}, status_code=status, headers=headers)


def _request_error_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "body", "path", "header")]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            loc, msg = [], "the request body is not valid JSON"
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def _clip(text: str, n: int = 60) -> str:
    return repr(text[:n] + ("…" if len(text) > n else ""))


class _EpisodeStore:
    """Live episodes, bounded in count (`max_episodes`), in recorded bytes (`max_bytes`; a 1,000-step
    episode keeps ~20 MB) and in idle time (`idle_seconds`), with a share per client
    (`max_client_episodes`, `max_client_bytes`; a quarter of each bound by default).

    Past its share a client loses its own least recently used episodes; past a bound of the whole
    store, the least recently used episode among the clients holding at least an equal share goes.
    The episode whose step is being recorded is never its own victim."""

    def __init__(self, max_episodes: int, max_bytes: int = DEFAULT_EPISODE_BYTES,
                 idle_seconds: float = DEFAULT_IDLE_SECONDS, clock: Any = time.monotonic,
                 max_client_episodes: int | None = None, max_client_bytes: int | None = None):
        if max_episodes < 1:
            raise ValueError("max_episodes must be at least 1")
        self.max_episodes = max_episodes
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds
        self.max_client_episodes = max(1, min(max_client_episodes or max_episodes // CLIENT_SHARE, max_episodes))
        self.max_client_bytes = max(1, max_client_bytes or max_bytes // CLIENT_SHARE)
        self._clock = clock
        self._episodes: OrderedDict[str, _Episode] = OrderedDict()  # least recently used first
        self._clients: dict[str, OrderedDict[str, _Episode]] = {}  # the same, per client
        self._client_bytes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._bytes = 0
        self.evicted = 0
        self.expired = 0

    def add(self, env: ShoppingEnv, client: str = "") -> _Episode:
        episode = _Episode(episode_id=uuid.uuid4().hex, env=env, last_used=self._clock(), client=client)
        env.add_step_listener(lambda step: self._grew(episode, step))
        with self._lock:
            self._expire()
            while len(self._clients.get(client, ())) >= self.max_client_episodes:
                self._evict(next(iter(self._clients[client].values())))
            while len(self._episodes) >= self.max_episodes:
                self._evict(self._victim(by_bytes=False, newcomer=client not in self._clients))
            self._episodes[episode.episode_id] = episode
            self._clients.setdefault(client, OrderedDict())[episode.episode_id] = episode
            self._client_bytes.setdefault(client, 0)
        return episode

    def _grew(self, episode: _Episode, step: Any) -> None:
        added = len(step.observation) + len(str(step.arguments)) + 200
        with self._lock:
            if episode.episode_id not in self._episodes:
                return
            episode.size += added
            self._bytes += added
            self._client_bytes[episode.client] += added
            while self._client_bytes[episode.client] > self.max_client_bytes and \
                    (victim := self._oldest_of(episode.client, spare=episode)) is not None:
                self._evict(victim)
            while self._bytes > self.max_bytes and (victim := self._victim(by_bytes=True, spare=episode)) is not None:
                self._evict(victim)

    def _oldest_of(self, client: str, spare: _Episode | None = None) -> _Episode | None:
        return next((e for e in self._clients.get(client, {}).values() if e is not spare), None)

    def _victim(self, by_bytes: bool, spare: _Episode | None = None, newcomer: bool = False) -> Any:
        """The least recently used episode among the clients holding at least an equal share of the bound
        (episodes, or bytes): the bound divided by the clients with live episodes, `newcomer` included.
        A client that floods the store under one name pays alone; one that invents a name per episode
        makes every client's share tiny, so it meets plain LRU, and its own untouched episodes go first."""
        share = (self.max_bytes if by_bytes else self.max_episodes) / max(1, len(self._clients) + newcomer)
        fallback = None
        for episode in self._episodes.values():
            if episode is spare:
                continue
            load = self._client_bytes[episode.client] if by_bytes else len(self._clients[episode.client])
            if load >= share:
                return episode
            fallback = fallback or episode
        return fallback

    def _pop(self, episode: _Episode) -> None:
        del self._episodes[episode.episode_id]
        own = self._clients[episode.client]
        del own[episode.episode_id]
        self._bytes -= episode.size
        self._client_bytes[episode.client] -= episode.size
        if not own:
            del self._clients[episode.client], self._client_bytes[episode.client]

    def _evict(self, episode: _Episode) -> None:
        self._pop(episode)
        self.evicted += 1

    def _expire(self) -> None:
        now = self._clock()
        while self._episodes and now - (oldest := next(iter(self._episodes.values()))).last_used > self.idle_seconds:
            self._pop(oldest)
            self.expired += 1

    def get(self, episode_id: str) -> _Episode:
        with self._lock:
            self._expire()
            episode = self._episodes.get(episode_id)
            if episode is not None:
                episode.last_used = self._clock()
                self._episodes.move_to_end(episode_id)
                self._clients[episode.client].move_to_end(episode_id)
        if episode is None:
            raise _ApiError(404, f"unknown episode {_clip(episode_id)} (it may have ended, expired after "
                                 f"{self.idle_seconds:g} s idle, or been evicted)")
        return episode

    def remove(self, episode_id: str) -> None:
        with self._lock:
            episode = self._episodes.get(episode_id)
            if episode is not None:
                self._pop(episode)
        if episode is None:
            raise _ApiError(404, f"unknown episode {_clip(episode_id)}")

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def client_bytes(self, client: str) -> int:
        with self._lock:
            return self._client_bytes.get(client, 0)

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._episodes)


def _tool_description(spec: ToolSpec) -> dict[str, Any]:
    return {**spec.openai_schema(), "kind": spec.kind, "group": spec.group}


def _stateless_route(spec: ToolSpec, run: Any) -> Any:
    """A GET endpoint whose query parameters are the tool's arguments, validated by the sandbox.

    Every parameter arrives as optional text (URLs carry text; `?page=2`), so a missing or badly
    typed value is judged by the tool's own schema and answered with its readable message.
    """
    params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str | None,
                                default=Query(None, description=info.description))
              for name, info in spec.parameters()]

    def endpoint(**arguments: Any) -> JSONResponse:
        return run(spec.name, arguments)

    endpoint.__name__ = spec.name
    endpoint.__signature__ = inspect.Signature(params, return_annotation=JSONResponse)
    return endpoint


class _BodyTooLarge(Exception):
    pass


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class HostCheck:
    """ASGI middleware: answer only requests whose Host header names one of `allowed` (any port).

    A server on 127.0.0.1 is still reachable from a web page through DNS rebinding (a hostile name that
    resolves to 127.0.0.1); its requests carry that name in Host, and are refused with a JSON 400.
    """

    def __init__(self, app: Any, allowed: Sequence[str]):
        self.app = app
        self.allowed = {h.strip("[]").lower() for h in allowed}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").strip().lower()
            host = raw[1:].split("]", 1)[0] if raw.startswith("[") else raw.rsplit(":", 1)[0] if raw.count(":") == 1 \
                else raw
            if host not in self.allowed:
                await _error(400, f"host {host[:60]!r} is not served here; use one of "
                                  f"{', '.join(sorted(self.allowed))}", ErrorKind.rejected)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RefuseWebSockets:
    """ASGI middleware: no route takes a WebSocket, so a handshake is refused with a JSON 404 (the ASGI
    denial response, where the server supports it) rather than the empty 403 Starlette would send."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        await receive()  # websocket.connect
        if "websocket.http.response" not in (scope.get("extensions") or {}):
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": f"no WebSocket endpoint at {_clip(scope.get('path', ''))}; this server "
                                    "speaks plain HTTP", "kind": ErrorKind.not_found.value}).encode()
        await send({"type": "websocket.http.response.start", "status": 404,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "websocket.http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: refuse a request body over `max_bytes` whatever its transfer encoding.

    A declared Content-Length is judged before anything is read; a chunked body (no length) is
    counted as it arrives and refused at the first chunk past the limit, so it is never held whole.
    """

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = _error(413, f"request body larger than {self.max_bytes} bytes")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await too_large(scope, receive, send)
            return
        received = 0
        exceeded = started = False

        async def counted_receive() -> dict[str, Any]:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            if exceeded:
                # The app answers its failed body read (FastAPI: a 400); the client is told the real reason.
                if not started:
                    started = True
                    await too_large(scope, receive, send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                started = True
                await too_large(scope, receive, send)


# -- the app -----------------------------------------------------------------------------------
def create_app(world: ShoppingWorld, max_episodes: int = 1000, *,
               similarity: TitleSimilarity | None = None, toolkits: Sequence[Toolkit] = (),
               max_episode_bytes: int = DEFAULT_EPISODE_BYTES, idle_seconds: float = DEFAULT_IDLE_SECONDS,
               allowed_hosts: Sequence[str] | None = None, max_client_episodes: int | None = None,
               max_client_bytes: int | None = None, profile: str = "shoplab") -> FastAPI:
    """The HTTP API over one opened sandbox. `similarity` overrides the scorer's title model
    (loaded on the first score request otherwise); `toolkits` adds plug-in toolkits to every
    episode, to `/tools` and, for their read tools, to the stateless `GET /<tool>` routes.
    `max_client_episodes` and `max_client_bytes` are one client's share of the episode store
    (default: a quarter of `max_episodes` and `max_episode_bytes`). `profile` is the tools' behaviour
    (`ShoppingEnv`'s): under `shoppingbench`, `GET /find_product` and `GET /view_product_information`
    answer exactly as ShoppingBench's own search service does (its lenient parameters, `[]` rather than
    errors), and episodes run under that profile."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    toolkits = tuple(toolkits)
    available = collect_tools([*BUILTIN_TOOLKITS, *toolkits])
    store = _EpisodeStore(max_episodes, max_bytes=max_episode_bytes, idle_seconds=idle_seconds,
                          max_client_episodes=max_client_episodes, max_client_bytes=max_client_bytes)
    _ = world.tasks, world.vouchers  # load once here rather than racing in the threadpool
    similarity_lock = threading.Lock()
    similarity_box: list[TitleSimilarity] = [similarity] if similarity is not None else []

    def get_similarity() -> TitleSimilarity:
        with similarity_lock:
            if not similarity_box:
                similarity_box.append(default_title_similarity())
            return similarity_box[0]

    app = FastAPI(
        title="shoplab sandbox",
        version="1.0",
        description="The shopping sandbox's tools over HTTP. `/find_product` and `/view_product_information` "
                    "are ShoppingBench's search API; `/episodes` runs full tool-using episodes and scores them. "
                    "Every error is `{\"error\": \"...\", \"kind\": \"...\"}`.",
    )
    app.state.world = world
    app.state.episodes = store

    # -- errors: always {"error": ..., "kind": ...}, never a traceback ----------------------------
    @app.exception_handler(_ApiError)
    async def _api_error(_request: Request, exc: _ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.kind)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _request_error_message(exc), ErrorKind.invalid_arguments)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {_clip(request.url.path)}; the API is listed at /docs"
        elif exc.status_code == 405:
            message = f"method {request.method[:20]} is not allowed on {_clip(request.url.path)}; allowed: " \
                      f"{(exc.headers or {}).get('Allow', 'none')}"
        return _error(exc.status_code, message, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal_error(_request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(exc).__name__})", ErrorKind.internal)

    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(RefuseWebSockets)
    if allowed_hosts is not None:  # `serve` on a loopback address: the loopback names and itself
        app.add_middleware(HostCheck, allowed=allowed_hosts)

    errors = {422: {"model": ErrorResponse}}
    not_found = {404: {"model": ErrorResponse}}

    # -- ShoppingBench-compatible, stateless ------------------------------------------------
    def run_stateless(tool: str, arguments: dict[str, Any]) -> JSONResponse:
        service = upstream_service(tool) if profile == "shoppingbench" else None
        if service is not None:
            try:
                return JSONResponse(service(world, arguments))
            except Exception as exc:  # an engine failure: upstream's service answers 500 too
                return _error(500, f"{tool} failed ({type(exc).__name__})", ErrorKind.internal)
        env = ShoppingEnv(world, max_description_chars=None, toolkits=toolkits)
        result = env.step(tool, {k: v for k, v in arguments.items() if v is not None})
        if result.error is not None:
            return _error(result.error.kind.http_status, result.error.message, result.error.kind)
        if isinstance(result.data, list):  # ShoppingBench's answer: the found items, never per-id errors
            return JSONResponse([item for item in result.data if not (isinstance(item, dict) and "error" in item)])
        return JSONResponse(result.data)

    # Read tools answer as stateless GET routes with query parameters (ShoppingBench's search service
    # for find_product and view_product_information): each route is derived from the tool's own
    # declaration (parameters, descriptions), never restated here. Tools that read episode state
    # (the cart) have no stateless form.
    for bound in available.values():
        spec = bound.spec
        if spec.kind == "read" and bound.toolkit.stateless:
            app.add_api_route(f"/{spec.name}", _stateless_route(spec, run_stateless), methods=["GET"],
                              response_model=spec.returns, responses=errors,
                              tags=[spec.group], summary=spec.description.split(". ")[0],
                              description=spec.description)

    # -- catalogue of tasks and tools -----------------------------------------------------------
    @app.get("/health", tags=["meta"])
    async def health() -> dict[str, Any]:
        # On the event loop, not in the worker threads: it answers even while every worker is busy.
        return {"status": "ok", "backend": world.backend.name, "tasks": len(world.tasks),
                "episodes": len(store), "max_episodes": store.max_episodes, "episode_bytes": store.bytes,
                "max_episode_bytes": store.max_bytes, "idle_seconds": store.idle_seconds, "clients": store.clients,
                "max_client_episodes": store.max_client_episodes, "max_client_bytes": store.max_client_bytes}

    @app.get("/tools", response_model=list[ToolDescription], tags=["meta"])
    def tools() -> list[dict[str, Any]]:
        """Every tool as OpenAI tool JSON, plus its kind (read / write) and group."""
        return [_tool_description(bound.spec) for bound in available.values()]

    @app.get("/tasks", response_model=list[TaskSummary], responses=errors, tags=["meta"])
    def tasks(intent: str | None = Query(None, description="product | shop | voucher | web")) -> list[dict[str, Any]]:
        """Task ids, intents and queries (never the rewards)."""
        if intent is not None and intent not in {i.value for i in Intent}:
            raise _ApiError(422, f"unknown intent {_clip(intent)}; choose from "
                                 f"{', '.join(i.value for i in Intent)}")
        chosen = world.tasks.values() if intent is None else world.tasks_by_intent(intent)
        return [{"task_id": t.task_id, "intent": t.intent.value, "query": t.query} for t in chosen]

    # -- episodes -------------------------------------------------------------------------------
    @app.post("/episodes", response_model=CreateEpisodeResponse, responses={**errors, **not_found},
              tags=["episodes"])
    def create_episode(request: Request, body: CreateEpisodeRequest | None = None,
                       client_id: str | None = Header(None, alias=CLIENT_ID_HEADER, pattern=CLIENT_ID_PATTERN,
                                                      description="Who is asking, to share the episode store "
                                                                  "fairly between clients (default: the peer "
                                                                  "address).")) -> dict[str, Any]:
        """Start an episode; its `tools` can be handed to an LLM as they are."""
        body = body or CreateEpisodeRequest()
        client = f"id:{client_id}" if client_id is not None else \
            f"addr:{request.client.host if request.client else 'unknown'}"
        task = None
        if body.task_id is not None:
            task = world.tasks.get(body.task_id)
            if task is None:
                raise _ApiError(404, f"unknown task {_clip(body.task_id)}; see GET /tasks")
        try:
            env = ShoppingEnv(world, task=task, max_steps=body.max_steps or DEFAULT_MAX_STEPS, tools=body.tools,
                              toolkits=toolkits, profile=profile)
        except ValueError as exc:
            raise _ApiError(422, str(exc)) from exc
        episode = store.add(env, client)
        return {"episode_id": episode.episode_id, "client": client, "task_id": task.task_id if task else None,
                "intent": task.intent.value if task else None, "instruction": env.instruction,
                "max_steps": env.max_steps, "tools": env.openai_tools()}

    @app.post("/episodes/{episode_id}/step", response_model=StepResponse, responses={**errors, **not_found},
              tags=["episodes"])
    def step(episode_id: str, body: StepRequest) -> dict[str, Any]:
        """Run one tool call. A failing call is still a step: `ok` is false and `observation` says why."""
        episode = store.get(episode_id)
        arguments = body.arguments
        if isinstance(arguments, dict | list):
            # As a string, the environment's size limit on arguments applies to objects too.
            arguments = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
        elif arguments is not None and not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        with episode.lock:
            result = episode.env.step(body.tool, arguments)
            steps = episode.env.state.steps
        out = {**result.as_dict(), "steps": steps}
        if result.error is not None:
            out["error"] = result.error.message
        return out

    @app.get("/episodes/{episode_id}", response_model=EpisodeStateResponse, responses=not_found,
             tags=["episodes"])
    def episode_state(episode_id: str,
                      history: bool = Query(False, description="Include every step taken.")) -> dict[str, Any]:
        episode = store.get(episode_id)
        env = episode.env
        with episode.lock:
            s = env.state
            out = {"episode_id": episode.episode_id, "task_id": env.task.task_id if env.task else None,
                   "instruction": env.instruction, "steps": s.steps, "max_steps": env.max_steps, "done": s.done,
                   "recommended": list(s.recommended), "recommend_calls": s.recommend_calls,
                   "terminate_status": s.terminate_status, "cart": env.cart_summary()}
            if history:
                out["history"] = [r.as_dict() for r in s.history]
        return out

    @app.get("/episodes/{episode_id}/score", responses={400: {"model": ErrorResponse},
                                                        409: {"model": ErrorResponse}, **not_found},
             tags=["episodes"])
    def episode_score(episode_id: str) -> dict[str, Any]:
        """ShoppingBench's score of the last recommendation (`success`, `constraint_score`, ...), once the
        episode has ended (terminate or its step limit): a live episode's score would tell the agent which
        recommendation is the gold."""
        episode = store.get(episode_id)
        if episode.env.task is None:
            raise _ApiError(400, "this episode has no task to score; create it with a task_id", ErrorKind.rejected)
        with episode.lock:
            if not episode.env.state.done:
                raise _ApiError(409, "the episode is still running: it is scored once it has ended (call "
                                     "terminate, or use up its steps)")
        sim = get_similarity()
        with episode.lock:
            return episode.env.score(sim).as_dict()

    @app.delete("/episodes/{episode_id}", response_model=DeletedResponse, responses=not_found,
                tags=["episodes"])
    def delete_episode(episode_id: str) -> dict[str, Any]:
        store.remove(episode_id)
        return {"deleted": episode_id}

    return app


def server_config(app: Any, host: str, port: int, log_level: str = "info") -> Any:
    """uvicorn's settings for this app: h11 with its head bounded by MAX_HEAD_BYTES (httptools takes any
    size of header), no WebSocket protocol (an upgrade request is a plain request, answered by the app)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http="h11", ws="none",
                          h11_max_incomplete_event_size=MAX_HEAD_BYTES)


def serve(data_dir: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT, backend: str | None = None,
          max_episodes: int = 1000, log_level: str = "info",
          toolkits: dict[str, dict[str, Any] | None] | None = None, profile: str = "shoplab",
          search_mode: str | None = None) -> None:
    """Open the sandbox at `data_dir` and serve it until interrupted; `toolkits` names plug-in
    toolkits and their options (`sandbox.load_toolkits`); `profile` as in `create_app`; `search_mode`
    as in `ShoppingWorld.open` (find_product's retrieval under the shoplab profile)."""
    import uvicorn

    from sandbox.toolkit import load_toolkits

    world = ShoppingWorld.open(data_dir, backend=backend, search_mode=search_mode)
    try:
        loopback = host in LOOPBACK_HOSTS
        app = create_app(world, max_episodes=max_episodes, toolkits=load_toolkits(toolkits, world),
                         allowed_hosts=[*LOOPBACK_HOSTS, host] if loopback else None, profile=profile)
        url = f"http://{host}:{port}"
        print(f"shoplab sandbox ({world.backend.name}, {len(world.tasks)} tasks) at {url}  "
              f"- ShoppingBench API: {url}/find_product, API docs: {url}/docs", flush=True)
        uvicorn.Server(server_config(app, host, port, log_level)).run()
    finally:
        world.close()
