"""`ShoppingEnv`: one episode of the shopping world. Tool calls are untrusted input.

Every call is validated against the tool's pydantic schema; anything wrong (unknown tool,
malformed JSON, wrong types, out-of-range values, hostile text) becomes a readable error
observation and the episode continues. No state is shared between episodes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from sandbox.data_model import Voucher
from sandbox.engines.base import SearchPage, SearchRequest
from sandbox.rewrite_stage import QueryRewriter, search_with_rewrites
from sandbox.scorer import EpisodeScore, TitleSimilarity, score_episode
from sandbox.shoppingbench_profile import (
    PROFILE_MAX_CALLS,
    PROFILES,
    ShoppingBenchProfileTools,
    upstream_json,
)
from sandbox.tasks import Task
from sandbox.toolkit import ErrorKind, ToolError, Toolkit, ToolOutput, ToolSpec, collect_tools, select_tools
from sandbox.tools import BUILTIN_TOOLKITS, Cart, CartTools, UtilityTools
from sandbox.world import ShoppingWorld

DEFAULT_MAX_STEPS = 30
MAX_ARGUMENT_CHARS = 20_000


@dataclass
class StepResult:
    tool: str
    arguments: dict[str, Any]
    observation: str
    ok: bool
    done: bool
    latency_ms: float
    data: Any = None
    error: ToolError | None = None  # set when ok is false: its kind says why, its message what to change

    @property
    def error_kind(self) -> str | None:
        return self.error.kind.value if self.error is not None else None

    def as_dict(self) -> dict[str, Any]:
        out = {"tool": self.tool, "arguments": self.arguments, "observation": self.observation, "ok": self.ok,
               "done": self.done, "latency_ms": round(self.latency_ms, 3)}
        if self.error is not None:
            out["error_kind"] = self.error_kind
        return out


@dataclass
class EpisodeState:
    steps: int = 0
    done: bool = False
    recommended: list[str] = field(default_factory=list)
    recommend_calls: int = 0
    cart: Cart = field(default_factory=Cart)
    history: list[StepResult] = field(default_factory=list)
    terminate_status: str | None = None


_PROFILE_TOOLKITS: tuple[Toolkit, ...] = (ShoppingBenchProfileTools(), UtilityTools(), CartTools())


def _compact(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class ShoppingEnv:
    """One episode: dispatch of tool calls to the toolkits that declare them, and the episode's state."""

    def __init__(self, world: ShoppingWorld, task: Task | None = None, max_steps: int = DEFAULT_MAX_STEPS,
                 tools: list[str] | None = None, max_description_chars: int | None = 1500,
                 wallet: list[Voucher] | None = None, query_rewriter: QueryRewriter | None = None,
                 instruction: str | None = None, budget: float | None = None,
                 toolkits: Sequence[Toolkit] = (), profile: str = "shoplab"):
        """`tools` selects tools by name or toolkit group (default: all); `toolkits` adds plug-in
        toolkits (rewriters, recommenders, ...) to the sandbox's own. `instruction` and `budget` state
        a shopper's own request (the demo's chat); when they are not given, the task's query and its
        voucher's budget are used.

        `profile` chooses how ShoppingBench's four tools behave: `shoplab` (validated arguments,
        readable errors, all-words-first search: the better tool for building agents) or
        `shoppingbench` (exactly as upstream's client and server answer, errors and all:
        `sandbox.shoppingbench_profile`; `max_steps` then counts up to `PROFILE_MAX_CALLS` tool calls,
        since upstream bounds model turns, not calls, and the agent counts the turns)."""
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
        self.profile = profile
        self.world = world
        self._instruction = instruction
        self._budget = budget
        self.query_rewriter = query_rewriter
        self.task = task
        builtin = BUILTIN_TOOLKITS if profile == "shoplab" else _PROFILE_TOOLKITS
        if profile == "shoppingbench" and max_steps == DEFAULT_MAX_STEPS:
            max_steps = PROFILE_MAX_CALLS
        self.max_steps = max_steps
        self._tools = collect_tools([*builtin, *toolkits])
        self.tool_names = select_tools(self._tools, tools)
        self.max_description_chars = max_description_chars
        if wallet is None:
            wallet = []
            if task is not None and task.voucher is not None:
                v = world.voucher_for_task(task.task_id)
                if v is not None:
                    wallet.append(v)
        self.wallet = wallet
        self.state = EpisodeState()
        self._step_listeners: list[Callable[[StepResult], None]] = []

    # -- public API -------------------------------------------------------------
    @property
    def instruction(self) -> str:
        if self._instruction is not None:
            return self._instruction
        return self.task.query if self.task else ""

    @property
    def budget(self) -> float | None:
        if self._budget is not None:
            return self._budget
        return self.task.voucher.budget if self.task and self.task.voucher else None

    @budget.setter
    def budget(self, value: float | None) -> None:
        self._budget = value

    def reset(self) -> str:
        self.state = EpisodeState()
        return self.instruction

    def add_step_listener(self, listener: Callable[[StepResult], None]) -> None:
        """Called with every step as it is recorded (a UI showing an episode live); a failing listener
        costs only its own update, never the step."""
        self._step_listeners.append(listener)

    def use_tools(self, selection: list[str]) -> None:
        """Narrow the episode to these tools (names or groups); each must be one the episode offers."""
        try:
            chosen = select_tools(self._tools, selection)
        except ValueError as exc:
            raise ValueError(f"{exc} (plug-in toolkits are given to the environment: `toolkits:` in the agent "
                             "config)") from None
        missing = [n for n in chosen if n not in self.tool_names]
        if missing:
            raise ValueError(f"tools {missing} are not offered by this environment")
        self.tool_names = chosen

    def tool_icons(self) -> dict[str, str]:
        """Every tool's declared icon (before any narrowing), for UIs that show the episode's steps."""
        return {name: bound.spec.icon for name, bound in self._tools.items()}

    def tool_specs(self) -> list[ToolSpec]:
        return [self._tools[n].spec for n in self.tool_names]

    def openai_tools(self) -> list[dict[str, Any]]:
        return [s.openai_schema() for s in self.tool_specs()]

    def step(self, tool: str, arguments: dict[str, Any] | str | None = None) -> StepResult:
        started = time.perf_counter()
        args_for_log: dict[str, Any] = arguments if isinstance(arguments, dict) else {"raw": str(arguments)[:500]}
        try:
            if self.state.done or self.state.steps >= self.max_steps:
                self.state.done = True
                reason = f"step limit of {self.max_steps} reached: " if self.state.steps >= self.max_steps else ""
                raise ToolError(f"{reason}the episode has ended; no more tool calls are accepted",
                                ErrorKind.episode_over)
            self.state.steps += 1
            parsed = self._parse_arguments(arguments)
            args_for_log = parsed
            observation, data = self._dispatch(str(tool), parsed)
            error = None
        except ValidationError as exc:
            error = ToolError(f"invalid arguments for {tool}: {_validation_message(exc)}", ErrorKind.invalid_arguments)
        except ToolError as exc:
            error = exc
        except Exception as exc:  # an engine failure must not end the episode either
            error = ToolError(f"{tool} failed ({type(exc).__name__}: {str(exc)[:200]})", ErrorKind.internal)
        ok = error is None
        if error is not None:
            # Upstream's agents read `null` for a call that failed; shoplab's read why.
            observation = upstream_json(None) if self.profile == "shoppingbench" else f"Error: {error.message}"
            data = None
        if self.state.steps >= self.max_steps:
            self.state.done = True
        result = StepResult(tool=str(tool)[:80], arguments=args_for_log, observation=observation, ok=ok,
                            done=self.state.done, latency_ms=(time.perf_counter() - started) * 1000, data=data,
                            error=error)
        self.state.history.append(result)
        for listener in self._step_listeners:
            try:
                listener(result)
            except Exception:  # noqa: BLE001 - an observer must not break the episode
                pass
        return result

    def score(self, similarity: TitleSimilarity | None = None, with_checks: bool = False) -> EpisodeScore:
        if self.task is None:
            raise ValueError("this episode has no task to score")
        return score_episode(self.task, self.state.recommended, self.world.products, similarity, with_checks)

    # -- dispatch -----------------------------------------------------------------
    def _parse_arguments(self, arguments: dict[str, Any] | str | None) -> dict[str, Any]:
        if arguments is None or arguments == "":
            return {}
        if not isinstance(arguments, str):
            try:
                arguments = json.dumps(arguments, ensure_ascii=False)
            except (TypeError, ValueError) as exc:
                raise ToolError("arguments must be JSON-serialisable", ErrorKind.invalid_arguments) from exc
            except RecursionError as exc:
                raise ToolError("arguments nest too deeply", ErrorKind.invalid_arguments) from exc
        if len(arguments) > MAX_ARGUMENT_CHARS:
            raise ToolError(f"arguments are {len(arguments)} characters long; at most {MAX_ARGUMENT_CHARS}",
                            ErrorKind.invalid_arguments)
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise ToolError(f"arguments are not valid JSON ({exc.msg} at char {exc.pos})",
                            ErrorKind.invalid_arguments) from exc
        except ValueError as exc:  # e.g. an integer of over 4,300 digits (Python's conversion limit)
            raise ToolError(f"arguments hold a value Python refuses to read: {str(exc)[:120]}",
                            ErrorKind.invalid_arguments) from exc
        except RecursionError as exc:  # thousands of nested brackets: refused as input, not an engine failure
            raise ToolError("arguments nest too deeply", ErrorKind.invalid_arguments) from exc
        if not isinstance(arguments, dict):
            raise ToolError("arguments must be a JSON object of parameter names to values", ErrorKind.invalid_arguments)
        return arguments

    def _dispatch(self, tool: str, args: dict[str, Any]) -> tuple[str, Any]:
        if tool not in self.tool_names:
            raise ToolError(f"unknown tool {tool[:60]!r}; available: {', '.join(self.tool_names)}",
                            ErrorKind.unknown_tool)
        bound = self._tools[tool]
        out = bound(self, bound.spec.args_model.model_validate(args))
        if isinstance(out, ToolOutput):
            return out.observation, out.data
        return (out if isinstance(out, str) else _compact(out)), out

    def search(self, text: str, request: SearchRequest) -> SearchPage:
        """The episode's search: the world's engine, through the rewrite stage when one is set."""
        if self.query_rewriter is None:
            return self.world.search(request)
        try:
            rewrites = [r for r in self.query_rewriter(text) if isinstance(r, str)]
        except Exception:  # a broken rewriter costs the rewrites, never the search
            rewrites = []
        return search_with_rewrites(self.world.search, request, rewrites)

    def cart_summary(self) -> dict[str, Any]:
        return self.state.cart.summary(self.wallet, self.budget)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "arguments"
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown parameter"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
