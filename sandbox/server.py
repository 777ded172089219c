"""The sandbox's tools over HTTP (FastAPI), for agents in other processes and languages.

Two families of endpoints:

- ShoppingBench-compatible, stateless: ``GET /find_product`` and ``GET /view_product_information``
  answer exactly what ShoppingBench's own toolkit expects from its search service (a JSON list),
  so that toolkit can point at ``http://127.0.0.1:5631`` unchanged. Each call runs the tool
  through a throwaway `ShoppingEnv`, so validation is the sandbox's; a bad argument is an HTTP
  422 with ``{"error": "..."}``.
- Episode-scoped: ``POST /episodes`` starts an episode (optionally on a task), ``POST
  /episodes/{id}/step`` runs any tool in it, ``GET /episodes/{id}`` shows its state, ``GET
  /episodes/{id}/score`` scores it and ``DELETE /episodes/{id}`` drops it. A failing tool call is
  a normal step whose observation is the error (``ok: false``), and the episode goes on.

Every error answer is JSON ``{"error": "<readable message>"}``; no stack trace leaves the server.
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

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox.data_model import Intent
from sandbox.environment import DEFAULT_MAX_STEPS, ShoppingEnv
from sandbox.scorer import TitleSimilarity, default_title_similarity
from sandbox.toolkit import Toolkit, ToolSpec, collect_tools
from sandbox.tools import BUILTIN_TOOLKITS
from sandbox.world import ShoppingWorld

DEFAULT_PORT = 5631
MAX_STEPS_LIMIT = 1000
MAX_BODY_BYTES = 1_000_000
DEFAULT_EPISODE_BYTES = 256 * 1024 * 1024  # all live episodes' recorded steps together
DEFAULT_IDLE_SECONDS = 3600.0  # an episode untouched this long is dropped
MAX_TOOL_SELECTION = 64  # tool names or groups in POST /episodes (60,000 repeats took 17.7 s)


# -- request / response models (they make /openapi.json document the API) ----------------------
class ErrorResponse(BaseModel):
    error: str = Field(description="A readable message; never a stack trace.")


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


class _ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _request_error_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "body", "path")]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            loc, msg = [], "the request body is not valid JSON"
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def _clip(text: str, n: int = 60) -> str:
    return repr(text[:n] + ("…" if len(text) > n else ""))


class _EpisodeStore:
    """Live episodes, least recently used first, bounded three ways: at most `max_episodes`, at most
    `max_bytes` of recorded steps in all (a 1,000-step episode keeps ~20 MB), and none idle for longer
    than `idle_seconds`. Beyond a bound the least recently used episodes go first."""

    def __init__(self, max_episodes: int, max_bytes: int = DEFAULT_EPISODE_BYTES,
                 idle_seconds: float = DEFAULT_IDLE_SECONDS, clock: Any = time.monotonic):
        if max_episodes < 1:
            raise ValueError("max_episodes must be at least 1")
        self.max_episodes = max_episodes
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._episodes: OrderedDict[str, _Episode] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        self.evicted = 0
        self.expired = 0

    def add(self, env: ShoppingEnv) -> _Episode:
        episode = _Episode(episode_id=uuid.uuid4().hex, env=env, last_used=self._clock())
        env.add_step_listener(lambda step: self._grew(episode, step))
        with self._lock:
            self._expire()
            while len(self._episodes) >= self.max_episodes:
                self._drop_oldest()
            self._episodes[episode.episode_id] = episode
        return episode

    def _grew(self, episode: _Episode, step: Any) -> None:
        added = len(step.observation) + len(str(step.arguments)) + 200
        with self._lock:
            if episode.episode_id not in self._episodes:
                return
            episode.size += added
            self._bytes += added
            while self._bytes > self.max_bytes and len(self._episodes) > 1 and \
                    next(iter(self._episodes)) != episode.episode_id:
                self._drop_oldest()

    def _pop_oldest(self) -> None:
        _, oldest = self._episodes.popitem(last=False)
        self._bytes -= oldest.size

    def _drop_oldest(self) -> None:
        self._pop_oldest()
        self.evicted += 1

    def _expire(self) -> None:
        now = self._clock()
        while self._episodes and now - next(iter(self._episodes.values())).last_used > self.idle_seconds:
            self._pop_oldest()
            self.expired += 1

    def get(self, episode_id: str) -> _Episode:
        with self._lock:
            self._expire()
            episode = self._episodes.get(episode_id)
            if episode is not None:
                episode.last_used = self._clock()
                self._episodes.move_to_end(episode_id)
        if episode is None:
            raise _ApiError(404, f"unknown episode {_clip(episode_id)} (it may have ended, expired after "
                                 f"{self.idle_seconds:g} s idle, or been evicted)")
        return episode

    def remove(self, episode_id: str) -> None:
        with self._lock:
            episode = self._episodes.pop(episode_id, None)
            if episode is not None:
                self._bytes -= episode.size
        if episode is None:
            raise _ApiError(404, f"unknown episode {_clip(episode_id)}")

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

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
                                  f"{', '.join(sorted(self.allowed))}")(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
               allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """The HTTP API over one opened sandbox. `similarity` overrides the scorer's title model
    (loaded on the first score request otherwise); `toolkits` adds plug-in toolkits to every
    episode, to `/tools` and, for their read tools, to the stateless `GET /<tool>` routes."""
    toolkits = tuple(toolkits)
    available = collect_tools([*BUILTIN_TOOLKITS, *toolkits])
    store = _EpisodeStore(max_episodes, max_bytes=max_episode_bytes, idle_seconds=idle_seconds)
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
                    "Every error is `{\"error\": \"...\"}`.",
    )
    app.state.world = world
    app.state.episodes = store

    # -- errors: always {"error": ...}, never a traceback --------------------------------------
    @app.exception_handler(_ApiError)
    async def _api_error(_request: Request, exc: _ApiError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _request_error_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal_error(_request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(exc).__name__})")

    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    if allowed_hosts is not None:  # `serve` on a loopback address: the loopback names and itself
        app.add_middleware(HostCheck, allowed=allowed_hosts)

    errors = {422: {"model": ErrorResponse}}
    not_found = {404: {"model": ErrorResponse}}

    # -- ShoppingBench-compatible, stateless ------------------------------------------------
    def run_stateless(tool: str, arguments: dict[str, Any]) -> JSONResponse:
        env = ShoppingEnv(world, max_description_chars=None, toolkits=toolkits)
        result = env.step(tool, {k: v for k, v in arguments.items() if v is not None})
        if result.error is not None:
            return _error(result.error.kind.http_status, result.error.message)
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
    def health() -> dict[str, Any]:
        return {"status": "ok", "backend": world.backend.name, "tasks": len(world.tasks),
                "episodes": len(store), "max_episodes": store.max_episodes, "episode_bytes": store.bytes,
                "max_episode_bytes": store.max_bytes, "idle_seconds": store.idle_seconds}

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
    def create_episode(body: CreateEpisodeRequest | None = None) -> dict[str, Any]:
        """Start an episode; its `tools` can be handed to an LLM as they are."""
        body = body or CreateEpisodeRequest()
        task = None
        if body.task_id is not None:
            task = world.tasks.get(body.task_id)
            if task is None:
                raise _ApiError(404, f"unknown task {_clip(body.task_id)}; see GET /tasks")
        try:
            env = ShoppingEnv(world, task=task, max_steps=body.max_steps or DEFAULT_MAX_STEPS, tools=body.tools,
                              toolkits=toolkits)
        except ValueError as exc:
            raise _ApiError(422, str(exc)) from exc
        episode = store.add(env)
        return {"episode_id": episode.episode_id, "task_id": task.task_id if task else None,
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
            raise _ApiError(400, "this episode has no task to score; create it with a task_id")
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


def serve(data_dir: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT, backend: str | None = None,
          max_episodes: int = 1000, log_level: str = "info",
          toolkits: dict[str, dict[str, Any] | None] | None = None) -> None:
    """Open the sandbox at `data_dir` and serve it until interrupted; `toolkits` names plug-in
    toolkits and their options (`sandbox.load_toolkits`)."""
    import uvicorn

    from sandbox.toolkit import load_toolkits

    world = ShoppingWorld.open(data_dir, backend=backend)
    try:
        loopback = host in LOOPBACK_HOSTS
        app = create_app(world, max_episodes=max_episodes, toolkits=load_toolkits(toolkits, world),
                         allowed_hosts=[*LOOPBACK_HOSTS, host] if loopback else None)
        url = f"http://{host}:{port}"
        print(f"shoplab sandbox ({world.backend.name}, {len(world.tasks)} tasks) at {url}  "
              f"- ShoppingBench API: {url}/find_product, API docs: {url}/docs", flush=True)
        uvicorn.run(app, host=host, port=port, log_level=log_level)
    finally:
        world.close()
