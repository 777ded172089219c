"""`ShoppingEnv`: one episode of the shopping world. Tool calls are untrusted input.

Every call is validated against the tool's pydantic schema; anything wrong (unknown tool,
malformed JSON, wrong types, out-of-range values, hostile text) becomes a readable error
observation and the episode continues. No state is shared between episodes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from sandbox.calculator import CalculationError, calculate
from sandbox.data_model import DETAIL_FIELDS, SEARCH_HIT_FIELDS, Voucher
from sandbox.engines.base import SearchRequest, SortOrder, query_terms
from sandbox.rewrite_stage import QueryRewriter, search_with_rewrites
from sandbox.scorer import EpisodeScore, TitleSimilarity, score_episode
from sandbox.tasks import Task
from sandbox.tools import (
    TOOLS,
    AddToCartArgs,
    CalculateArgs,
    FindProductArgs,
    RecommendArgs,
    RemoveFromCartArgs,
    TerminateArgs,
    ToolArgs,
    ToolSpec,
    ViewProductArgs,
    parse_price_filter,
)
from sandbox.world import ShoppingWorld

DEFAULT_MAX_STEPS = 30
MAX_ARGUMENT_CHARS = 20_000


class ToolError(Exception):
    """A problem with a tool call that the agent can fix; its message is the observation."""


@dataclass
class StepResult:
    tool: str
    arguments: dict[str, Any]
    observation: str
    ok: bool
    done: bool
    latency_ms: float
    data: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "arguments": self.arguments, "observation": self.observation, "ok": self.ok,
                "done": self.done, "latency_ms": round(self.latency_ms, 3)}


@dataclass
class CartLine:
    product: dict[str, Any]
    quantity: int


@dataclass
class EpisodeState:
    steps: int = 0
    done: bool = False
    recommended: list[str] = field(default_factory=list)
    recommend_calls: int = 0
    cart: dict[str, CartLine] = field(default_factory=dict)
    history: list[StepResult] = field(default_factory=list)
    terminate_status: str | None = None


def _compact(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class ShoppingEnv:
    def __init__(self, world: ShoppingWorld, task: Task | None = None, max_steps: int = DEFAULT_MAX_STEPS,
                 tools: list[str] | None = None, max_description_chars: int | None = 1500,
                 wallet: list[Voucher] | None = None, query_rewriter: QueryRewriter | None = None,
                 instruction: str | None = None, budget: float | None = None):
        """`instruction` and `budget` state a shopper's own request (the demo's chat); when they are
        not given, the task's query and its voucher's budget are used."""
        self.world = world
        self._instruction = instruction
        self._budget = budget
        self.query_rewriter = query_rewriter
        self.task = task
        self.max_steps = max_steps
        self.tool_names = list(tools) if tools is not None else list(TOOLS)
        unknown = [t for t in self.tool_names if t not in TOOLS]
        if unknown:
            raise ValueError(f"unknown tools {unknown}")
        self.max_description_chars = max_description_chars
        self._extra: dict[str, tuple[ToolSpec, Any]] = {}
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

    def register_tool(self, spec: ToolSpec, handler) -> None:
        """Extend this episode with a tool from outside the sandbox (rewriters, rankers, ...)."""
        self._extra[spec.name] = (spec, handler)

    def tool_specs(self) -> list[ToolSpec]:
        return [TOOLS[n] for n in self.tool_names] + [s for s, _ in self._extra.values()]

    def openai_tools(self) -> list[dict[str, Any]]:
        return [s.openai_schema() for s in self.tool_specs()]

    def step(self, tool: str, arguments: dict[str, Any] | str | None = None) -> StepResult:
        started = time.perf_counter()
        args_for_log: dict[str, Any] = arguments if isinstance(arguments, dict) else {"raw": str(arguments)[:500]}
        try:
            if self.state.done or self.state.steps >= self.max_steps:
                self.state.done = True
                reason = f"step limit of {self.max_steps} reached: " if self.state.steps >= self.max_steps else ""
                raise ToolError(f"{reason}the episode has ended; no more tool calls are accepted")
            self.state.steps += 1
            parsed = self._parse_arguments(arguments)
            args_for_log = parsed
            observation, data = self._dispatch(str(tool), parsed)
            ok = True
        except ToolError as exc:
            observation, data, ok = f"Error: {exc}", None, False
        except ValidationError as exc:
            observation, data, ok = f"Error: invalid arguments for {tool}: {_validation_message(exc)}", None, False
        except Exception as exc:  # an engine failure must not end the episode either
            observation, data, ok = f"Error: {tool} failed ({type(exc).__name__}: {str(exc)[:200]})", None, False
        if self.state.steps >= self.max_steps:
            self.state.done = True
        result = StepResult(tool=str(tool)[:80], arguments=args_for_log, observation=observation, ok=ok,
                            done=self.state.done, latency_ms=(time.perf_counter() - started) * 1000, data=data)
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
                raise ToolError("arguments must be JSON-serialisable") from exc
        if len(arguments) > MAX_ARGUMENT_CHARS:
            raise ToolError(f"arguments are {len(arguments)} characters long; at most {MAX_ARGUMENT_CHARS}")
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise ToolError(f"arguments are not valid JSON ({exc.msg} at char {exc.pos})") from exc
        if not isinstance(arguments, dict):
            raise ToolError("arguments must be a JSON object of parameter names to values")
        return arguments

    def _dispatch(self, tool: str, args: dict[str, Any]) -> tuple[str, Any]:
        if tool in self._extra:
            spec, handler = self._extra[tool]
            data = handler(spec.args_model.model_validate(args))
            return (data if isinstance(data, str) else _compact(data)), data
        if tool not in self.tool_names:
            raise ToolError(f"unknown tool {tool[:60]!r}; available: {', '.join(s.name for s in self.tool_specs())}")
        spec = TOOLS[tool]
        parsed: ToolArgs = spec.args_model.model_validate(args)
        handler = getattr(self, f"_tool_{tool}")
        return handler(parsed)

    def _tool_find_product(self, a: FindProductArgs) -> tuple[str, Any]:
        terms = query_terms(a.q)
        if not terms:
            raise ToolError("q has no searchable words (letters or digits)")
        low, high = parse_price_filter(a.price) if a.price else (None, None)
        request = SearchRequest(terms=tuple(terms), page=a.page, shop_id=a.shop_id, price_min=low, price_max=high,
                                services=a.services(), sort=SortOrder(a.sort))
        page = self._search(a.q, request)
        products = [{k: h.product[k] for k in SEARCH_HIT_FIELDS} for h in page.hits]
        if not products:
            hint = "Try fewer or different words, or remove filters." if page.total == 0 else \
                f"Only {page.total} products match; there is no page {a.page}."
            return f"No products found. {hint}", []
        return _compact(products), products

    def _search(self, text: str, request: SearchRequest):
        if self.query_rewriter is None:
            return self.world.search(request)
        try:
            rewrites = [r for r in self.query_rewriter(text) if isinstance(r, str)]
        except Exception:  # a broken rewriter costs the rewrites, never the search
            rewrites = []
        return search_with_rewrites(self.world.search, request, rewrites)

    def _tool_view_product_information(self, a: ViewProductArgs) -> tuple[str, Any]:
        ids = a.ids()
        found = self.world.products(ids)
        out = []
        for pid in ids:
            p = found.get(pid)
            if p is None:
                out.append({"product_id": pid, "error": "no such product"})
                continue
            item = {k: p[k] for k in DETAIL_FIELDS}
            if self.max_description_chars and len(item["description"]) > self.max_description_chars:
                item["description"] = item["description"][: self.max_description_chars] + "…"
            out.append(item)
        return _compact(out), out

    def _tool_recommend_product(self, a: RecommendArgs) -> tuple[str, Any]:
        ids = a.ids()
        if not ids:
            raise ToolError("give at least one product id")
        found = self.world.products(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise ToolError(f"unknown product ids: {', '.join(missing[:5])}; recommend ids returned by find_product")
        self.state.recommended = ids
        self.state.recommend_calls += 1
        return f"Having recommended the products to the user: {','.join(ids)}.", ids

    def _tool_terminate(self, a: TerminateArgs) -> tuple[str, Any]:
        self.state.done = True
        self.state.terminate_status = a.status
        return "The conversation has ended.", a.status

    def _tool_calculate(self, a: CalculateArgs) -> tuple[str, Any]:
        try:
            value = calculate(a.expression)
        except CalculationError as exc:
            raise ToolError(str(exc)) from exc
        return f"{value:g}" if isinstance(value, float) else str(value), value

    def _tool_add_to_cart(self, a: AddToCartArgs) -> tuple[str, Any]:
        product = self.world.products([a.product_id]).get(a.product_id)
        if product is None:
            raise ToolError(f"no such product {a.product_id}")
        line = self.state.cart.get(a.product_id)
        quantity = (line.quantity if line else 0) + a.quantity
        if quantity > 99:
            raise ToolError("at most 99 of one product in the cart")
        self.state.cart[a.product_id] = CartLine(product=product, quantity=quantity)
        return self._cart_view()

    def _tool_remove_from_cart(self, a: RemoveFromCartArgs) -> tuple[str, Any]:
        line = self.state.cart.get(a.product_id)
        if line is None:
            raise ToolError(f"product {a.product_id} is not in the cart")
        if a.quantity is None or a.quantity >= line.quantity:
            del self.state.cart[a.product_id]
        else:
            line.quantity -= a.quantity
        return self._cart_view()

    def _tool_view_cart(self, _a: ToolArgs) -> tuple[str, Any]:
        return self._cart_view()

    def cart_summary(self) -> dict[str, Any]:
        items = [{"product_id": pid, "title": line.product["title"], "shop_id": line.product["shop_id"],
                  "price": line.product["price"], "quantity": line.quantity,
                  "subtotal": round(line.product["price"] * line.quantity, 2)} for pid, line in self.state.cart.items()]
        total = round(sum(i["subtotal"] for i in items), 2)
        shops = {i["shop_id"] for i in items}
        best: Voucher | None = None
        best_after = total
        for v in self.wallet:
            if items and v.applies_to(shops, total):
                after = max(0.0, v.price_after(total))
                if after < best_after:
                    best, best_after = v, after
        summary: dict[str, Any] = {"items": items, "total": total,
                                   "voucher": None if best is None else f"{best.voucher_id}: {best.describe()}",
                                   "discount": round(total - best_after, 2), "total_after_voucher": round(best_after, 2)}
        if self.budget is not None:
            summary["budget"] = self.budget
            summary["within_budget"] = best_after <= self.budget
        return summary

    def _cart_view(self) -> tuple[str, Any]:
        summary = self.cart_summary()
        return _compact(summary), summary


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "arguments"
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown parameter"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
