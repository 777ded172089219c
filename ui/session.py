"""The demo's state: one `DemoBackend` per process, one `DemoSession` per browser tab.

The backend holds what every user shares and nobody changes: the sandbox world, loaded LLMs
(a `BatchingChat` batches concurrent users' turns on a local engine), the rewriter and the
title-similarity model. A session holds one shopper's cart, chat history and running episode, so
two tabs never see each other's cart. Sessions yield chat messages as an episode runs; Gradio
streams each yield to the browser.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agents.llm import BACKENDS, LLMConfig, LLMError, SamplingConfig, make_llm
from agents.react import ReactAgent
from agents.react.config import DEFAULT_TOOLS
from agents.react.graph import ChatClient
from agents.registry import agent_needs_llm, make_agent
from sandbox import ShoppingEnv, ShoppingWorld, StepResult, Task, load_toolkits, tool_specs
from sandbox.data_model import VoucherType
from sandbox.engines.base import SearchRequest, query_terms
from sandbox.tasks import first_per_intent
from ui import render
from ui.config import CART_GROUP, DemoConfig

logger = logging.getLogger("shoplab.demo")

DEMO_AGENTS = ("react", "heuristic", "oracle")
MAX_LOADED_LLMS = 2
MAX_RUN_FOLDERS = 50
MAX_RUN_BYTES = 200 << 20
_RESPONSE = re.compile(r"<response>(.*?)</response>", re.S)
_THINK = re.compile(r"<think>(.*?)</think>", re.S)
_CALL_BLOCK = re.compile(r"<tool_call>.*?(</tool_call>|$)", re.S)

Message = dict[str, Any]
LLMFactory = Callable[[LLMConfig], ChatClient]


class DemoError(ValueError):
    """A setting or request the demo cannot serve; its message is shown to the user."""


@dataclass
class TurnSettings:
    """What the settings panel selects for one turn (validated: it comes from the browser)."""

    agent: str = "react"
    backend: str = "transformers"
    model: str = "smollm2-135m-instruct"
    temperature: float = 0.0
    max_steps: int = 12

    def validated(self, max_steps_cap: int) -> TurnSettings:
        if self.agent not in DEMO_AGENTS:
            raise DemoError(f"unknown agent {str(self.agent)[:40]!r}; choose one of {', '.join(DEMO_AGENTS)}")
        if self.backend not in BACKENDS:
            raise DemoError(f"unknown backend {str(self.backend)[:40]!r}; choose one of {', '.join(BACKENDS)}")
        model = str(self.model or "").strip()
        if not model or len(model) > 300:
            raise DemoError("give a model: the bundled alias smollm2-135m-instruct, an HF folder or a model name")
        try:
            temperature = float(self.temperature)
            if temperature != temperature:  # NaN clamps to nothing
                raise ValueError("temperature is not a number")
            temperature = min(2.0, max(0.0, temperature))
            max_steps = min(max_steps_cap, max(1, int(self.max_steps)))
        except (TypeError, ValueError, OverflowError) as exc:  # int(inf) is an OverflowError
            raise DemoError("temperature and max steps must be numbers") from exc
        return TurnSettings(self.agent, self.backend, model, temperature, max_steps)


class DemoBackend:
    """Shared by every session of one demo process."""

    def __init__(self, config: DemoConfig, world: ShoppingWorld | None = None,
                 llm_factory: LLMFactory | None = None):
        self.config = config
        if world is None:
            world = open_world(config.demo.data_dir)
        self.world = world
        self.llm_factory = llm_factory or make_llm
        self._llms: dict[tuple[str, str], ChatClient] = {}
        self._llm_lock = threading.Lock()
        platform = [v for v in world.vouchers.values() if v.voucher_type == VoucherType.platform]
        self.wallet = sorted(platform, key=lambda v: (v.threshold, v.voucher_id))[: config.demo.wallet_size]
        tasks = first_per_intent(world.tasks.values(), config.demo.tasks_per_intent)
        self.tasks: dict[str, Task] = {t.task_id: t for t in tasks}
        self._rewriter = None
        self._similarity = None
        self._lazy_lock = threading.Lock()
        self._run_cache: tuple[Any, list[dict[str, Any]]] = (None, [])
        self._tabs: OrderedDict[str, DemoSession] = OrderedDict()
        # Closed tab -> when it closed (time.monotonic), oldest close first, so the sweep stops early.
        self._closed: OrderedDict[str, float] = OrderedDict()
        self._tabs_lock = threading.Lock()
        # The agent config's plug-in toolkits, built once and handed to every episode of every tab.
        self.toolkits = load_toolkits(config.agent.toolkits, world)

    @property
    def intents(self) -> list[str]:
        return list(dict.fromkeys(t.intent.value for t in self.tasks.values()))

    def task_choices(self, intent: str) -> list[tuple[str, str]]:
        return [(f"{t.query[:90]}{'…' if len(t.query) > 90 else ''}", t.task_id)
                for t in self.tasks.values() if t.intent.value == intent]

    # -- the Runs tab: finished benchmark runs, read-only --------------------------------------------------
    def run_folders(self) -> list[str]:
        """Run folders (with a results.jsonl) under `demo.runs_dir`, newest first, at most 3 levels deep."""
        root = Path(self.config.demo.runs_dir)
        if not root.is_dir():
            return []
        found = [p.parent for depth in ("*", "*/*", "*/*/*") for p in root.glob(f"{depth}/results.jsonl")]
        found.sort(key=lambda p: (p / "results.jsonl").stat().st_mtime, reverse=True)
        return [str(p) for p in found[:MAX_RUN_FOLDERS]]

    def run_episodes(self, run: str) -> list[dict[str, Any]]:
        """The episodes of one listed run folder (anything else is refused: the path comes from a browser)."""
        from agents.viewer import read_episodes

        if run not in self.run_folders():
            raise DemoError("pick a run folder from the list")
        path = Path(run) / "results.jsonl"
        if path.stat().st_size > MAX_RUN_BYTES:
            raise DemoError(f"this run's results.jsonl is over {MAX_RUN_BYTES >> 20} MB; read it with "
                            f"`shoplab bench show {run}`")
        key = (run, path.stat().st_mtime_ns)
        with self._lazy_lock:
            if self._run_cache[0] != key:
                self._run_cache = (key, read_episodes(run)[0])
            return self._run_cache[1]

    def model_banner(self) -> str:
        """One line for the page header: which agent and model answer the chat, and, when the configured
        model is a shipped one this install lacks, that the page runs on its fallback instead."""
        from shoplab_core.models import STUDENT_ALIAS, missing_shipped_model

        llm = self.config.llm
        name = "the distilled SmolLM2 student (shoplab-student)" if llm.model == STUDENT_ALIAS else llm.model
        line = f"The chat agent is a ReAct agent on **{name}** ({llm.backend})."
        if missing_shipped_model(llm.model) and llm.fallback_model:
            line += (f" ⚠️ {llm.model} is not installed here, so it runs on **{llm.fallback_model}**, which rarely "
                     "makes a valid tool call.")
        return line

    def default_settings(self) -> TurnSettings:
        return TurnSettings(backend=self.config.llm.backend, model=self.config.llm.model,
                            temperature=self.config.llm.sampling.temperature,
                            max_steps=min(self.config.demo.max_steps, self.config.agent.max_steps))

    def llm(self, settings: TurnSettings) -> ChatClient:
        """The chat client for a backend and model, loaded once and shared by all sessions."""
        key = (settings.backend, settings.model)
        with self._llm_lock:
            if key not in self._llms:
                if len(self._llms) >= MAX_LOADED_LLMS:
                    oldest = self._llms.pop(next(iter(self._llms)))  # the first loaded
                    _close_quietly(oldest)
                config = replace(self.config.llm, backend=settings.backend, model=settings.model)
                self._llms[key] = self.llm_factory(config)
            return self._llms[key]

    def similarity(self):
        with self._lazy_lock:
            if self._similarity is None:
                from sandbox.scorer import default_title_similarity

                self._similarity = default_title_similarity()
            return self._similarity

    @property
    def has_rewriter(self) -> bool:
        return bool(self.config.demo.rewriter)

    def rewriter(self):
        with self._lazy_lock:
            if self._rewriter is None:
                from rewrite import load_rewriter

                self._rewriter = load_rewriter(self.config.demo.rewriter)
            return self._rewriter

    def rewrite_rows(self, query: str) -> list[dict[str, Any]]:
        """The original query and each rewrite with its top hits, from the sandbox's engine."""
        query = str(query or "").strip()[:500]
        if not query_terms(query):
            raise DemoError("type a query with at least one word")
        rewrites = [r for r in self.rewriter()(query) if isinstance(r, str) and r.strip() and r != query]
        rows = []
        for text, original in [(query, True)] + [(r, False) for r in dict.fromkeys(rewrites)]:
            terms = query_terms(text)
            page = self.world.search(SearchRequest(terms=tuple(terms))) if terms else None
            hits = [{k: h.product[k] for k in ("product_id", "title", "price")} for h in page.hits] if page else []
            rows.append({"query": text, "original": original, "total": page.total if page else 0,
                         "hits": hits[: self.config.demo.rewrite_hits]})
        return rows

    def new_session(self) -> DemoSession:
        return DemoSession(self)

    def session(self, tab: str | None) -> DemoSession:
        """The session of one browser tab (named by Gradio's session hash), made by its first event.

        Not a `gr.State` with a factory: Gradio fills that from a page-load event, so a message sent
        before that event ended got a session of its own, which the load then replaced (the first
        turn, its cart and its place in the TurnQueue were lost). At most `demo.max_sessions` tabs
        are kept, the least recently used leaving first. A closed tab's session (`drop_session`) is
        kept `demo.closed_tab_ttl_s` more, as Gradio keeps a closed tab's state: the heartbeat that
        reports a close also drops on a network blip, and the tab then goes on with the same hash.
        """
        if not tab:  # a client without a session gets one for this call only
            return self.new_session()
        with self._tabs_lock:
            expired_before = time.monotonic() - self.config.demo.closed_tab_ttl_s
            while self._closed and next(iter(self._closed.values())) <= expired_before:
                gone, _ = self._closed.popitem(last=False)
                self._tabs.pop(gone, None)
            self._closed.pop(tab, None)  # within the grace period: the tab is back
            session = self._tabs.get(tab)
            if session is None:
                session = self._tabs[tab] = self.new_session()
                while len(self._tabs) > self.config.demo.max_sessions:
                    evicted, _ = self._tabs.popitem(last=False)
                    self._closed.pop(evicted, None)
            else:
                self._tabs.move_to_end(tab)
            return session

    @property
    def open_tabs(self) -> int:
        """Tabs with a session that have not closed (a tab counts from its first event)."""
        with self._tabs_lock:
            return len(self._tabs) - len(self._closed)

    def drop_session(self, tab: str | None) -> None:
        """The tab closed: its session goes after `demo.closed_tab_ttl_s`, unless the tab sends again."""
        with self._tabs_lock:
            if tab in self._tabs:
                self._closed.pop(tab, None)  # a second close counts from now, at the end of the order
                self._closed[tab] = time.monotonic()

    def close(self) -> None:
        with self._llm_lock:
            for llm in self._llms.values():
                _close_quietly(llm)
            self._llms.clear()


def open_world(data_dir: str | Path) -> ShoppingWorld:
    try:
        return ShoppingWorld.open(data_dir)
    except FileNotFoundError as exc:
        raise DemoError(f"no sandbox in {data_dir}: {exc} (`make run` builds runs/sandbox), or pass --data-dir") from exc


def _close_quietly(llm: Any) -> None:
    try:
        close = getattr(llm, "close", None)
        if close:
            close()
    except Exception:  # noqa: BLE001
        logger.exception("closing an LLM failed")


MAX_MESSAGE_CHARS = 2000  # a shopper's message, enforced here: the browser's limit is only a courtesy
MAX_TRANSCRIPT_MESSAGES = 400  # what a tab's chat keeps (steps included); older ones scroll away


def clip_message(text: Any) -> str:
    """A shopper's message as the demo keeps it: stripped, at most MAX_MESSAGE_CHARS characters."""
    return str(text or "").strip()[:MAX_MESSAGE_CHARS]


def bounded_transcript(messages: list[Message]) -> list[Message]:
    """The chat a tab shows, its oldest messages dropped beyond MAX_TRANSCRIPT_MESSAGES (each response
    re-sends the whole transcript, so an unbounded one grows every answer)."""
    return messages[-MAX_TRANSCRIPT_MESSAGES:]


class EpisodeView:
    """Turns an episode's events into Gradio chat messages: each tool call a collapsible step."""

    def __init__(self, icons: dict[str, str] | None = None) -> None:
        self.icons = icons or {}  # tool name -> its declared icon
        self.messages: list[Message] = []
        self.response = ""  # the agent's closing words (<response>...</response>), if it gave any
        self.info: dict[str, Any] = {}  # the finished episode's record (finish reason, format errors, ...)
        self._pending: dict[str, int] = {}

    def thought(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": render.esc(text),
                              "metadata": {"title": "💭 thinking", "status": "done"}})

    def call_started(self, call_id: str, name: str, arguments: Any) -> None:
        self._pending[call_id] = len(self.messages)
        self.messages.append({"role": "assistant", "content": "…",
                              "metadata": {"title": self._title(name, arguments), "status": "pending"}})

    def _title(self, name: str, arguments: Any) -> str:
        return render.tool_step_title(name, arguments, self.icons.get(name, "🔧"))

    def call_finished(self, call_id: str | None, name: str, arguments: Any, observation: str,
                      seconds: float | None = None, error_kind: str | None = None) -> None:
        """`error_kind` (the sandbox's `ErrorKind`) is set when the call failed."""
        index = self._pending.pop(call_id, None) if call_id else None
        failed = error_kind is not None
        metadata: dict[str, Any] = {"title": ("⚠️ " if failed else "") + self._title(name, arguments),
                                    "status": "done"}
        if seconds is not None:
            metadata["duration"] = round(seconds, 3)
        message = {"role": "assistant", "content": render.tool_step_body(name, observation, failed),
                   "metadata": metadata}
        if index is None:
            self.messages.append(message)
        else:
            self.messages[index] = message

    def notice(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": render.esc(text),
                              "metadata": {"title": "↩️ note to the agent", "status": "done"}})

    def say(self, content: str) -> None:
        self.messages.append({"role": "assistant", "content": content})


_END = object()


def _in_thread(produce: Callable[[Callable[[dict[str, Any]], None]], None]) -> Iterator[dict[str, Any]]:
    """Run `produce(emit)` in its own thread and yield what it emits as it comes.

    Gradio may resume a generator on a different worker thread each time; the episode keeps one
    thread of its own, so LangGraph and the engines never see a thread switch mid-episode.
    """
    events: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            produce(events.put)
        except Exception as exc:  # noqa: BLE001 - shown to the user, logged in full here
            logger.exception("episode failed")
            events.put({"event": "crash", "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        finally:
            events.put(_END)

    threading.Thread(target=work, name="shoplab-episode", daemon=True).start()
    while True:
        item = events.get()
        if item is _END:
            return
        yield item


class TurnTicket:
    """One chat message's place in its tab's `TurnQueue`; `close()` it when the turn ends or is abandoned."""

    def __init__(self, turns: TurnQueue, holding: bool):
        self._turns = turns
        self.holding = holding  # False: queued behind the running turn until `wait()` returns
        self._closed = False

    @property
    def waiting(self) -> bool:
        return not self.holding and not self._closed

    def wait(self) -> None:
        """Block until the running turn ends; then this ticket holds the tab's turn."""
        if self.waiting:
            self._turns._serve_waiting()
            self.holding = True

    def close(self) -> None:
        """End the turn, or leave the queue unserved (a tab closed while its message waited)."""
        if not self._closed:
            self._closed = True
            self._turns._leave(holding=self.holding)


class TurnQueue:
    """A tab's chat turns, one at a time, in the order they were sent.

    A message sent while a turn runs keeps its text (taken when it was sent) and runs after that
    turn. One message waits at most (so the order needs no more than a lock): another is refused
    with a readable DemoError rather than queued without bound, as each waiting message holds one of
    the demo's episode slots. Nobody jumps the queue: a message finds the turn free only when no
    message is waiting for it.
    """

    max_waiting = 1

    def __init__(self) -> None:
        self._running = threading.Lock()
        self._guard = threading.Lock()
        self._waiting = 0

    def take(self) -> TurnTicket:
        with self._guard:
            if self._waiting == 0 and self._running.acquire(blocking=False):
                return TurnTicket(self, holding=True)
            if self._waiting >= self.max_waiting:
                raise DemoError("a message is already waiting for the running turn; send this one after it")
            self._waiting += 1
            return TurnTicket(self, holding=False)

    def _serve_waiting(self) -> None:
        self._running.acquire()
        with self._guard:
            self._waiting -= 1

    def _leave(self, holding: bool) -> None:
        if holding:
            self._running.release()
        else:
            with self._guard:
                self._waiting -= 1


class DemoSession:
    """One shopper: a cart that outlives episodes, the chat so far, at most one running episode."""

    def __init__(self, backend: DemoBackend):
        self.id = uuid.uuid4().hex[:12]
        self.backend = backend
        demo = backend.config.demo
        # The cart lives in an episode of its own that only has the cart tools: the panel's buttons
        # go through the sandbox's cart tools (same validation as an agent's calls), and every chat
        # episode is handed the same cart.
        self.cart_env = ShoppingEnv(backend.world, tools=[CART_GROUP], max_steps=10**9, wallet=list(backend.wallet),
                                    budget=demo.budget, instruction="")
        self.history: list[Message] = []  # what the agent sees of earlier turns
        self.transcript: list[Message] = []  # what the chat shows, steps included
        self.last_message = ""
        self.shown: dict[str, dict[str, Any]] = {}
        self._busy = threading.Lock()  # one episode at a time: a chat turn or a benchmark task
        self.turns = TurnQueue()  # chat messages sent while a turn runs wait here

    def new_chat(self) -> None:
        """Forget the conversation; the cart stays, as in a shop."""
        self.history, self.transcript, self.last_message = [], [], ""

    # -- cart ---------------------------------------------------------------------------------
    def cart_summary(self) -> dict[str, Any]:
        return self.cart_env.cart_summary()

    def set_budget(self, budget: float | None) -> None:
        try:
            value = None if budget in (None, "") else float(budget)
        except (TypeError, ValueError) as exc:
            raise DemoError("the budget must be a number") from exc
        self.cart_env.budget = value if value is None or value > 0 else None

    def _cart_step(self, tool: str, arguments: dict[str, Any]) -> str | None:
        """None when the cart tool worked, else the sandbox's readable error (as the agent reads it)."""
        result = self.cart_env.step(tool, arguments)
        self.cart_env.state.history.clear()  # the panel's clicks are not an episode to keep
        return result.observation if result.error is not None else None

    def add_to_cart(self, product_id: str, quantity: Any = 1) -> str | None:
        """None when added, else the sandbox's readable error."""
        return self._cart_step("add_to_cart", {"product_id": str(product_id or "").strip(), "quantity": quantity})

    def remove_from_cart(self, product_id: str) -> str | None:
        return self._cart_step("remove_from_cart", {"product_id": str(product_id or "").strip()})

    def cart_choices(self) -> list[tuple[str, str]]:
        """Products this shopper has seen, most recent first, for the cart panel's picker."""
        return [(f"{p['title'][:60]} · {p['price']:g} ({pid})", pid) for pid, p in reversed(self.shown.items())]

    def _remember(self, products: list[dict[str, Any]]) -> None:
        for p in products:
            if isinstance(p, dict) and "product_id" in p and "title" in p:
                self.shown.pop(p["product_id"], None)
                self.shown[p["product_id"]] = {"title": str(p["title"]), "price": float(p.get("price") or 0)}
        while len(self.shown) > 30:
            self.shown.pop(next(iter(self.shown)))

    # -- episodes -----------------------------------------------------------------------------
    def chat(self, message: str, settings: TurnSettings) -> Iterator[list[Message]]:
        """One chat turn: yields this turn's assistant messages so far, each time they change."""
        message = clip_message(message)
        if not message:
            return
        if not self._busy.acquire(blocking=False):
            yield [{"role": "assistant", "content": "⏳ The previous request is still running; wait for it to finish."}]
            return
        try:
            self.last_message = message
            env = ShoppingEnv(self.backend.world, instruction=message, wallet=list(self.backend.wallet),
                              budget=self.cart_env.budget, toolkits=self.backend.toolkits)
            env.state.cart = self.cart_env.state.cart
            view = EpisodeView(env.tool_icons())
            yield from self._run(env, settings, view, chat=True)
            summary = self._final_message(env, view)
            self.history += [{"role": "user", "content": message}, {"role": "assistant", "content": summary}]
            self.history = self.history[-2 * self.backend.config.demo.history_turns:]
            yield view.messages
        finally:
            self._busy.release()

    def run_task(self, task_id: str, settings: TurnSettings) -> Iterator[tuple[list[Message], str, str]]:
        """A benchmark task: yields (steps so far, score HTML, gold HTML); the last two fill in at the end."""
        task = self.backend.tasks.get(str(task_id or ""))
        if task is None:
            raise DemoError("pick a task first")
        if not self._busy.acquire(blocking=False):
            raise DemoError("an episode is still running in this tab; wait for it to finish")
        try:
            # The benchmark's own protocol: ShoppingBench's tools only, and the task's voucher.
            env = ShoppingEnv(self.backend.world, task, max_steps=settings.max_steps,
                              tools=[*DEFAULT_TOOLS, *(kit.group for kit in self.backend.toolkits)],
                              toolkits=self.backend.toolkits)
            view = EpisodeView(env.tool_icons())
            for messages in self._run(env, settings, view, chat=False):
                yield messages, "", ""
            self._final_message(env, view)
            score = env.score(self.backend.similarity(), with_checks=True).as_dict()
            gold_ids = [s.product_id for s in task.reward]
            found = self.backend.world.products(gold_ids)
            gold = render.gold_panel([found[i] for i in gold_ids if i in found], task.knowledge_attribute)
            yield view.messages, render.score_panel(score), gold
        finally:
            self._busy.release()

    def _run(self, env: ShoppingEnv, settings: TurnSettings, view: EpisodeView,
             chat: bool) -> Iterator[list[Message]]:
        try:
            agent = self._agent(settings, chat)
        except (DemoError, LLMError) as exc:
            view.say(f"⚠️ {render.esc(exc)}")
            yield view.messages
            return
        except Exception as exc:  # noqa: BLE001 - e.g. a model that fails to load
            logger.exception("building the agent failed")
            view.say(f"⚠️ Could not start the {settings.agent} agent ({type(exc).__name__}: {render.esc(str(exc)[:300])}). "
                     "Check the backend and model in Settings.")
            yield view.messages
            return
        yield from self._stream(agent, env, view, chat)

    def _agent(self, settings: TurnSettings, chat: bool):
        config = self.backend.config
        if settings.agent == "oracle" and chat:
            raise DemoError("the oracle agent knows the gold answer of a benchmark task, so it only runs "
                            "in the Benchmark task tab; pick react or heuristic for the chat")
        if not agent_needs_llm(settings.agent):
            # In the chat the heuristic applies the price it reads ("under 500"); on benchmark tasks it
            # is the benchmark's floor, exactly as `shoplab bench run --agent heuristic` runs it.
            return make_agent("heuristic_price" if chat and settings.agent == "heuristic" else settings.agent)
        tools = config.agent.tools if chat else [spec.name for spec in tool_specs(config.agent.tools,
                                                                                  self.backend.toolkits)
                                                 if spec.group != CART_GROUP]
        agent_config = replace(config.agent, tools=list(tools), max_steps=settings.max_steps)
        sampling = SamplingConfig(**{**config.llm.sampling.__dict__, "temperature": settings.temperature})
        return ReactAgent(self.backend.llm(settings), agent_config, tool_format=config.llm.tool_format,
                          sampling=sampling)

    def _stream(self, agent, env: ShoppingEnv, view: EpisodeView, chat: bool) -> Iterator[list[Message]]:
        streaming = hasattr(agent, "stream_episode")
        history = list(self.history) if chat else None

        def produce(emit: Callable[[dict[str, Any]], None]) -> None:
            if streaming:
                for event in agent.stream_episode(env, history):
                    emit(event)
                return

            def on_step(step: StepResult) -> None:
                emit({"event": "step", "name": step.tool, "arguments": step.arguments,
                      "content": step.observation, "seconds": step.latency_ms / 1000,
                      "error_kind": step.error_kind})

            env.add_step_listener(on_step)
            emit({"event": "done", "info": agent.run_episode(env) or {}})

        arguments: dict[str, Any] = {}
        for event in _in_thread(produce):
            kind = event["event"]
            if kind == "assistant":
                thought = _visible_thought(event["content"])
                if thought:
                    view.thought(thought)
                for call in event["tool_calls"]:
                    function = call.get("function", {})
                    arguments[call.get("id")] = function.get("arguments")
                    view.call_started(call.get("id"), function.get("name", "?"), function.get("arguments"))
            elif kind == "tool":
                view.call_finished(event.get("tool_call_id"), event["name"], arguments.get(event.get("tool_call_id")),
                                   event["content"], error_kind=event.get("error_kind"))
                self._remember_hits(event["name"], env)
            elif kind == "step":
                view.call_finished(None, event["name"], event["arguments"], event["content"], event["seconds"],
                                   error_kind=event.get("error_kind"))
                self._remember_hits(event["name"], env)
            elif kind == "user":
                view.notice(event["content"])
            elif kind == "llm_error":
                view.say("⚠️ The language model failed on this turn: "
                         f"{render.esc(str(event['error'])[:300])}. The demo is still running: try again, "
                         "or pick another backend or model in Settings.")
            elif kind == "crash":
                view.say(f"⚠️ The agent stopped with an error ({render.esc(event['error'])}). "
                         "The demo is still running; try again.")
            elif kind == "done":
                last = next((m.get("content") or "" for m in reversed(event["info"].get("messages") or [])
                             if m.get("role") == "assistant"), "")
                view.response = " ".join(r.strip() for r in _RESPONSE.findall(last) if r.strip())
                view.info = event["info"] if isinstance(event["info"], dict) else {}
            yield view.messages

    def _remember_hits(self, tool: str, env: ShoppingEnv) -> None:
        last = env.state.history[-1] if env.state.history else None
        if tool == "find_product" and last is not None and last.tool == tool and isinstance(last.data, list):
            self._remember(last.data)

    def _final_message(self, env: ShoppingEnv, view: EpisodeView) -> str:
        """Show the recommendation as product cards; return a one-line summary for the chat history."""
        response = view.response
        ids = env.state.recommended
        found = self.backend.world.products(ids) if ids else {}
        products = [found[i] for i in ids if i in found]
        if products:
            self._remember(products)
            intro = render.esc(response) if response else "Here is what I recommend:"
            view.say(f"{intro}\n\n{render.product_cards(products)}")
            return "I recommended " + "; ".join(f"{p['title']} (id {p['product_id']}, price {p['price']:g})"
                                                for p in products)
        text = response or no_recommendation_reason(env, view.info)
        view.say(render.esc(text))
        return text


def no_recommendation_reason(env: ShoppingEnv, info: dict[str, Any]) -> str:
    """What went wrong when an episode ends with nothing recommended: the agent's failure, said as such
    (never "try other words": the request was fine as far as anyone knows)."""
    history = env.state.history
    searches = [s for s in history if s.tool == "find_product"]
    found = [s for s in searches if s.ok and isinstance(s.data, list) and s.data]
    if not history:
        if info.get("finish") == "llm_error":
            return "The language model failed before it made any tool call, so nothing was searched."
        return ("The model produced no valid tool call, so nothing was searched. A larger model, or the "
                "heuristic agent (Settings), may do better.")
    if not searches:
        return "The agent never searched the catalogue, so it had nothing to recommend."
    if not found:
        failed = sum(not s.ok for s in searches)
        return (f"The agent's {len(searches)} search(es) returned no products"
                + (f" ({failed} of them were invalid calls)" if failed else "") + ", so it recommended nothing.")
    return (f"The agent found products in {len(found)} search(es) but never recommended one "
            f"(it stopped: {info.get('finish') or 'unknown reason'}).")


def _visible_thought(text: str) -> str:
    thinks = " ".join(t.strip() for t in _THINK.findall(text or ""))
    if thinks:
        return thinks
    rest = _CALL_BLOCK.sub("", _RESPONSE.sub("", text or "")).strip()
    return rest[:600]
