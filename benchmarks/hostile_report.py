"""Hostile-input report (issue 17's acceptance): replay a corpus of hostile inputs against each surface.

For each surface the inputs of the issue (items 1-20) and variations of them are replayed against the real
components, and counted:

- **tried**: hostile inputs replayed;
- **crashes**: an exception escaping the component, an `internal` tool error, an HTTP 5xx, a server that
  stops answering, a traceback from the CLI;
- **over 1 s**: a call (a tool call, a request, the server's `/health` while the input is handled, a parse,
  a refusal) that took more than a second; a case over 1 s is run once more and its better time kept, so
  a load spike from other processes does not count while a slow input is slow both times;
- **lost**: data that should have survived and did not: a bystander's live episode or cart, a benchmark
  row lost or written twice after kills and resumes, a previous sandbox damaged by a failed build;
- **unexpected**: a hostile input accepted where it must be refused (or a plain one refused): reported
  apart, it is not one of the acceptance's three counts.

Surfaces: `tools` (`ShoppingEnv.step`, every profile), `http` (`sandbox.server` behind a real uvicorn on
127.0.0.1, configured as `shoplab sandbox serve` runs it), `runner` (`agents.runner.run_benchmark` with
scripted agents; kills and resumes), `build` (`shoplab sandbox build` with bad task files, each into a copy
of a good sandbox), `demo` (`ui.session`: message clipping, the bounded transcript, carts, settings) and
`parser` (`agents.react.parsing`).

    .venv/bin/python benchmarks/hostile_report.py --data-dir /tmp/sb_hostile      # ~2-3 min
    .venv/bin/python benchmarks/hostile_report.py --quick --surfaces tools,parser  # seconds

Without `--data-dir` a small sandbox is built in a temporary folder. Prints one JSON line and writes
benchmarks/results/hostile_report.json (every case) and benchmarks/results/hostile_report.md (the table).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT / "data" / "shoppingbench"
TASK_FILES = [DATA / f"synthesize_{name}_dev.jsonl" for name in ("product", "shop", "voucher", "web_simpleqa")]
SURFACES = ("tools", "http", "runner", "build", "demo", "parser")
FAST = 1.0  # seconds


# -- the bookkeeping ------------------------------------------------------------------------------------
@dataclass
class Result:
    surface: str
    case: str
    item: str = ""  # the issue's item(s) the input comes from; "" for a variation
    seconds: float = 0.0  # the slowest call of the case
    crash: str | None = None
    lost: int = 0
    unexpected: str | None = None
    note: str = ""
    wall: float = 0.0  # the whole case, set-up and checks included

    @property
    def over(self) -> bool:
        return self.seconds > FAST


@dataclass
class Case:
    name: str
    run: Callable[[], dict[str, Any] | None]
    item: str = ""
    retry: bool = True  # run once more when over 1 s (only for cases that can run twice)


@dataclass
class Surface:
    name: str
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_case(surface: str, case: Case) -> Result:
    def once() -> Result:
        started = time.perf_counter()
        try:
            out = case.run() or {}
        except Exception as exc:  # noqa: BLE001 - an escaping exception is what is counted
            out = {"crash": f"{type(exc).__name__}: {str(exc)[:200]}"}
        elapsed = time.perf_counter() - started
        return Result(surface, case.name, case.item, seconds=round(float(out.get("seconds", elapsed)), 3),
                      crash=out.get("crash"), lost=int(out.get("lost", 0)), unexpected=out.get("unexpected"),
                      note=str(out.get("note", ""))[:300])

    started = time.perf_counter()
    result = once()
    if result.over and case.retry and result.crash is None:
        again = once()
        if again.seconds < result.seconds:
            again.note = (again.note + f" (first run {result.seconds:.2f} s)").strip()
            result = again
    result.wall = round(time.perf_counter() - started, 3)
    return result


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """fn's value (or the exception it raised) and the seconds it took."""
    started = time.perf_counter()
    try:
        out = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        out = exc
    return out, time.perf_counter() - started


def escaped(value: Any) -> str | None:
    return f"{type(value).__name__}: {str(value)[:200]}" if isinstance(value, Exception) else None


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


class LexicalSimilarity:
    """A title similarity without a model: 1.0 for the same words, else the Jaccard overlap of the words."""

    def __call__(self, a: str, b: str) -> float:
        x, y = set(str(a).lower().split()), set(str(b).lower().split())
        return len(x & y) / len(x | y) if x | y else 1.0


class AlwaysSimilar:
    """The adversary's title model: every title matches every other."""

    def __call__(self, a: str, b: str) -> float:
        return 1.0


# -- tools: ShoppingEnv.step ----------------------------------------------------------------------------
def tool_corpus(world: Any) -> list[tuple[str, str, str, Any, str]]:
    """(name, item, tool, arguments, expect): expect is "refuse" (the call must fail with a readable error)
    or "any" (a plain input dressed up: an answer or a readable error are both fine)."""
    filler = world.filler_products(25)
    pid = filler[0]["product_id"]
    ids20 = ",".join(p["product_id"] for p in filler[:20])
    ids21 = ",".join(p["product_id"] for p in filler[:21])
    calc = [
        ("round(5, -10**15)", "1", "round(5, -1000000000000000)"), ("round(5, -10**7)", "1", "round(5, -10**7)"),
        ("round(5, 10**9)", "1", "round(5, 10**9)"), ("round(1e15, 1.5)", "1", "round(1e15, 1.5)"),
        ("1e6**64", "19", "1e6**64"), ("9**9**9", "1", "9**9**9"), ("10**10**10", "1", "10**10**10"),
        ("2**2**2**2**2**2", "1", "2**2**2**2**2**2"), ("(10**400)/1", "19", "(10**400)/1"),
        ("1e308*10", "19", "1e308*10"), ("-(1e308*10)", "19", "-(1e308*10)"), ("1/0", "", "1/0"),
        ("0**-1", "", "0**-1"), ("10000 nested parens", "19", "(" * 10_000 + "1" + ")" * 10_000),
        ("100k unary minus", "19", "-" * 100_000 + "1"), ("50k additions", "", "1+" * 50_000 + "1"),
        ("'a'*10**9", "", "'a'*10**9"), ("[1]*10**9", "", "[1]*10**9"),
        ("__import__ os", "", "__import__('os').system('id')"), ("dunder walk", "", "().__class__.__bases__"),
        ("lambda", "", "(lambda: 1)()"), ("comprehension", "", "[x for x in range(10**9)]"),
        ("open()", "", "open('/etc/passwd').read()"), ("5000-digit int", "19", "1" * 5000),
        ("1e999", "19", "1e999"), ("nan name", "", "nan"), ("inf - inf", "19", "1e308*10 - 1e308*10"),
        ("round(1e308*10)", "19", "round(1e308*10)"), ("max(range(10**9))", "", "max(range(10**9))"),
        ("100k-char expression", "", "1+" * 49_999 + "1" + " " * 1),
    ]
    cases: list[tuple[str, str, str, Any, str]] = [(f"calculate {n}", i, "calculate", {"expression": e}, "refuse")
                                                   for n, i, e in calc]
    find = [
        ("price quadratic", "5", {"q": "shoes", "price": "-" + " " * 19_950 + "x"}, "refuse"),
        ("price 100k blanks", "5", {"q": "shoes", "price": " " * 100_000}, "refuse"),
        ("price 1-2-3", "", {"q": "shoes", "price": "1-2-3"}, "refuse"),
        ("price 1e309-1e310", "19", {"q": "shoes", "price": "1e309-1e310"}, "refuse"),
        ("price NaN-1", "19", {"q": "shoes", "price": "NaN-1"}, "refuse"),
        ("price -100--10", "9", {"q": "shoes", "price": "-100--10"}, "refuse"),
        ("price 500-10", "9", {"q": "shoes", "price": "500-10"}, "refuse"),
        ("q 10k chars", "", {"q": "x" * 10_000}, "refuse"), ("q 5000 words", "", {"q": "a " * 5000}, "refuse"),
        ("q blank", "", {"q": "   "}, "refuse"), ("q punctuation", "", {"q": "!!! ???"}, "refuse"),
        ("q lucene *:*", "", {"q": "*:*"}, "any"), ("q OR 1=1", "", {"q": 'title:"x" OR 1=1'}, "any"),
        ("q SQL", "", {"q": "'; DROP TABLE products; --"}, "any"), ("q NULs", "", {"q": "\x00" * 100}, "refuse"),
        ("q RTL override", "", {"q": "\u202e" * 100 + "shoes"}, "any"), ("q 400 emoji", "", {"q": "👟" * 400}, "any"),
        ("q combining marks", "", {"q": "e" + "\u0301" * 400}, "any"),
        ("q lucene wildcards", "", {"q": "a* b? c~ d^9 [a TO z] {x TO y}"}, "any"),
        ("q regex bomb", "", {"q": "/(a+)+$/"}, "any"),
        ("page 99", "", {"q": "shoes", "page": 99}, "refuse"), ("page -1", "", {"q": "shoes", "page": -1}, "refuse"),
        ("page 1e309", "19", {"q": "shoes", "page": float("inf")}, "refuse"),
        ("page NaN", "19", {"q": "shoes", "page": float("nan")}, "refuse"),
        ("page true", "", {"q": "shoes", "page": True}, "any"), ("page list", "", {"q": "shoes", "page": [1]}, "refuse"),
        ("page object", "", {"q": "shoes", "page": {"a": 1}}, "refuse"),
        ("page 10**100", "", {"q": "shoes", "page": 10**100}, "refuse"),
        ("sort random", "", {"q": "shoes", "sort": "random"}, "refuse"),
        ("service teleport", "", {"q": "shoes", "service": "teleport"}, "refuse"),
        ("service x1000", "", {"q": "shoes", "service": ",".join(["COD"] * 1000)}, "any"),
        ("shop_id 10k", "", {"q": "shoes", "shop_id": "x" * 10_000}, "any"),
        ("shop_id path", "", {"q": "shoes", "shop_id": "../../etc/passwd"}, "any"),
        ("extra key", "", {"q": "shoes", "hack": 1}, "refuse"), ("q null", "", {"q": None}, "refuse"),
        ("q number", "", {"q": 5}, "any"), ("q list of 1000", "", {"q": ["a"] * 1000}, "refuse"),
    ]
    cases += [(f"find_product {n}", i, "find_product", a, e) for n, i, a, e in find]
    raw = [
        ("9000-level nesting", "19", '{"q": ' + nested(9000) + "}", "refuse"),
        ("100k-level nesting", "19", '{"q": ' + nested(100_000) + "}", "refuse"),
        ("not JSON", "", "{not json", "refuse"), ("a JSON list", "", "[1, 2]", "refuse"),
        ("a JSON number", "", "1e6", "refuse"), ("NaN literal", "19", '{"q": NaN}', "refuse"),
        ("Infinity page", "19", '{"q": "shoes", "page": Infinity}', "refuse"),
        ("duplicate keys", "", '{"q": "a", "q": "shoes"}', "any"),
        ("10k concatenated objects", "", '{"q": "x"}' * 10_000, "refuse"),
        ("900 kB string", "", json.dumps({"q": "y" * 900_000}), "refuse"),
        ("10 MB string", "", json.dumps({"q": "y" * 10_000_000}), "refuse"),
        ("10k keys", "", json.dumps({f"k{i}": i for i in range(10_000)}), "refuse"),
        ("5000-digit page", "19", '{"q": "shoes", "page": ' + "9" * 5000 + "}", "refuse"),
    ]
    cases += [(f"arguments {n}", i, "find_product", a, e) for n, i, a, e in raw]
    view = [
        ("10k commas", "", ","* 10_000, "refuse"), ("SQL id", "", "1; DROP TABLE", "refuse"),
        ("21 ids", "", ids21, "refuse"), ("500 ids", "", ",".join([pid] * 500), "refuse"),
        ("10k-char id", "", "9" * 10_000, "refuse"), ("NUL id", "", "\x00", "refuse"), ("empty list", "", [], "refuse"),
        ("int", "", 5, "any"), ("null", "", None, "refuse"), ("20 ids", "6", ids20, "any"),
    ]
    cases += [(f"view_product_information {n}", i, "view_product_information", {"product_ids": a}, e)
              for n, i, a, e in view]
    cases += [
        ("recommend_product 10k ids", "3", "recommend_product", {"product_ids": ",".join([pid] * 10_000)}, "refuse"),
        ("recommend_product empty", "", "recommend_product", {"product_ids": ""}, "refuse"),
        ("recommend_product path", "", "recommend_product", {"product_ids": "../../etc/passwd"}, "any"),
        ("recommend_product spaces", "", "recommend_product", {"product_ids": f" {pid} , {pid} "}, "any"),
        ("terminate maybe", "", "terminate", {"status": "maybe"}, "refuse"),
        ("terminate 5", "", "terminate", {"status": 5}, "refuse"),
        ("add_to_cart 1e308", "", "add_to_cart", {"product_id": pid, "quantity": 1e308}, "refuse"),
        ("add_to_cart -1", "", "add_to_cart", {"product_id": pid, "quantity": -1}, "refuse"),
        ("add_to_cart 0", "", "add_to_cart", {"product_id": pid, "quantity": 0}, "refuse"),
        ("add_to_cart NaN", "", "add_to_cart", {"product_id": pid, "quantity": float("nan")}, "refuse"),
        ("add_to_cart 10**100", "", "add_to_cart", {"product_id": pid, "quantity": 10**100}, "refuse"),
        ("add_to_cart no id", "", "add_to_cart", {"quantity": 1}, "refuse"),
        ("add_to_cart 10k id", "", "add_to_cart", {"product_id": "9" * 10_000, "quantity": 1}, "refuse"),
        ("remove_from_cart unknown", "", "remove_from_cart", {"product_id": "0000000001"}, "refuse"),
        ("view_cart extra", "", "view_cart", {"x": 1}, "refuse"),
        ("unknown tool", "", "teleport", {}, "refuse"), ("empty tool name", "", "", {}, "refuse"),
        ("10k-char tool name", "", "x" * 10_000, {}, "refuse"), ("dunder tool", "", "__init__", {}, "refuse"),
        ("method as tool", "", "step", {}, "refuse"), ("private tool", "", "_private", {}, "refuse"),
        ("score as tool", "3", "score", {}, "refuse"),
    ]
    return cases


def tools_surface(world: Any, quick: bool) -> Surface:
    from sandbox import ShoppingEnv

    try:
        from sandbox.environment import PROFILES
    except ImportError:
        PROFILES = ("shoplab",)
    surface = Surface("tools")
    corpus = tool_corpus(world)
    keep = world.filler_products(30)[-1]["product_id"]  # a bystander line in every episode's cart

    def one(profile: str, tool: str, arguments: Any, expect: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            env = ShoppingEnv(world, max_steps=1000, profile=profile) if profile != "shoplab" else \
                ShoppingEnv(world, max_steps=1000)
            seeded = env.step("add_to_cart", {"product_id": keep, "quantity": 2}) if "add_to_cart" in \
                {spec.name for spec in env.tool_specs()} else None
            result, seconds = timed(env.step, tool, arguments)
            out: dict[str, Any] = {"seconds": seconds}
            if isinstance(result, Exception):
                return {**out, "crash": escaped(result)}
            if result.error_kind == "internal":
                out["crash"] = f"internal tool error: {result.observation[:200]}"
            if seeded is not None and seeded.ok:
                items = {i["product_id"]: i["quantity"] for i in env.cart_summary()["items"]}
                out["lost"] = int(items.get(keep) != 2)
            if expect == "refuse" and profile == "shoplab" and result.ok:
                out["unexpected"] = f"accepted: {result.observation[:120]}"
            return out
        return run

    profiles = [p for p in PROFILES if p == "shoplab"] + [p for p in PROFILES if p != "shoplab"]
    for profile in profiles:
        for name, item, tool, arguments, expect in corpus:
            surface.results.append(run_case("tools", Case(f"[{profile}] {name}", one(profile, tool, arguments, expect),
                                                          item)))
        if quick:
            break

    def many_tools() -> dict[str, Any]:
        env, seconds = timed(ShoppingEnv, world, tools=["view_cart"] * 60_000)
        if isinstance(env, ValueError):
            return {"seconds": seconds, "note": "refused"}
        return {"seconds": seconds, "crash": escaped(env)}

    surface.results.append(run_case("tools", Case("an episode of 60,000 x view_cart", many_tools, "11")))

    def long_episode() -> dict[str, Any]:
        ids = ",".join(p["product_id"] for p in world.filler_products(20))
        env = ShoppingEnv(world, max_steps=1000)
        slowest = 0.0
        for _ in range(60 if quick else 300):
            result, seconds = timed(env.step, "view_product_information", {"product_ids": ids})
            if isinstance(result, Exception):
                return {"crash": escaped(result), "seconds": slowest}
            slowest = max(slowest, seconds)
        return {"seconds": slowest, "note": f"{env.state.steps} steps of 20 products each"}

    surface.results.append(run_case("tools", Case("a long episode of 20-product views", long_episode, "6")))

    shop = next((t for t in world.tasks.values() if t.intent.value == "shop" and len(t.reward) >= 2), None)

    def one_product_twice() -> dict[str, Any]:
        env = ShoppingEnv(world, shop)
        gold = shop.reward[0].product_id
        env.step("recommend_product", {"product_ids": f"{gold},{gold}"})
        score, seconds = timed(env.score, AlwaysSimilar())
        if isinstance(score, Exception):
            return {"seconds": seconds, "crash": escaped(score)}
        return {"seconds": seconds, "unexpected": "one product filled two slots of a shop task" if score.success
                else None}

    if shop is not None:
        surface.results.append(run_case("tools", Case("recommend one product for two slots", one_product_twice, "17")))
    surface.notes.append("A case is one `ShoppingEnv.step` in a fresh episode whose cart holds a bystander line; "
                         "lost = that line changed. Every profile of the environment is replayed "
                         f"({', '.join(profiles[:1] if quick else profiles)}); 'unexpected' is judged for "
                         "`shoplab` only (the `shoppingbench` profile answers as upstream does).")
    surface.notes.append("Item 16 (decoys that score success on a voucher task) is a property of the built "
                         "decoys under the title model, not an input: it is checked by the scorer's tests.")
    return surface


# -- parser: agents/react/parsing.py --------------------------------------------------------------------
def parser_surface(quick: bool) -> Surface:
    from agents.react.parsing import parse_native_turn, parse_text_turn

    surface = Surface("parser")

    def call(name: str, args: str) -> list[dict[str, Any]]:
        return [{"id": "c1", "type": "function", "function": {"name": name, "arguments": args}}]

    texts = [
        ("60k blanks in a tool call", "13", "<tool_call>[" + " " * 60_000 + "]</tool_call>"),
        ("30k blanks in a tool call", "13", "<tool_call>[" + " " * 30_000 + "]</tool_call>"),
        ("100k blanks in a fence", "13", "<tool_call>```json\n" + " " * 100_000 + "```</tool_call>"),
        ("fence of backticks", "13", "<tool_call>" + "`" * 100_000 + "</tool_call>"),
        ("100k open tool_call tags", "", "<tool_call>" * 100_000),
        ("100k open think tags", "", "<think>" * 100_000),
        ("100k response tags", "", "<response>" * 100_000),
        ("5 MB of text", "", "lorem ipsum " * 450_000),
        ("100k '<'", "", "<" * 100_000),
        ("100k-level nesting", "19", "<tool_call>" + "[" * 100_000 + "</tool_call>"),
        ("5000-level nesting", "19", "<tool_call>" + nested(5000) + "</tool_call>"),
        ("5000 nested parens (literal_eval)", "19", "<tool_call>" + "(" * 5000 + ")" * 5000 + "</tool_call>"),
        ("10k-digit integer", "19", '<tool_call>[{"name": "find_product", "parameters": {"page": ' + "9" * 10_000
         + "}}]</tool_call>"),
        ("1e999", "19", '<tool_call>[{"name": "find_product", "parameters": {"page": 1e999}}]</tool_call>'),
        ("NaN", "19", '<tool_call>[{"name": "find_product", "parameters": {"page": NaN}}]</tool_call>'),
        ("python expression", "", "<tool_call>[{'name': 'find_product', 'parameters': {'q': 'x'*10**9}}]</tool_call>"),
        ("dunder walk", "", "<tool_call>().__class__.__bases__[0].__subclasses__()</tool_call>"),
        ("lambda", "", "<tool_call>(lambda: __import__('os').system('id'))()</tool_call>"),
        ("1000 calls in one block", "", "<tool_call>[" + ",".join(['{"name":"view_cart"}'] * 1000) + "]</tool_call>"),
        ("10k calls in one block", "", "<tool_call>[" + ",".join(['{"name":"view_cart"}'] * 10_000) + "]</tool_call>"),
        ("1000 blocks", "", '<tool_call>[{"name":"view_cart"}]</tool_call>' * 1000),
        ("no name", "", '<tool_call>[{"parameters": {}}]</tool_call>'),
        ("name is a list", "", '<tool_call>[{"name": ["a"], "parameters": {}}]</tool_call>'),
        ("parameters a string of JSON", "", '<tool_call>[{"name": "a", "parameters": "{\\"q\\": 1}"}]</tool_call>'),
        ("parameters a list", "", '<tool_call>[{"name": "a", "parameters": [1]}]</tool_call>'),
        ("unclosed everything", "", "<think>x<tool_call>[{\"name\": \"a\"<response>y"),
        ("U+2028 inside", "", '<tool_call>[{"name": "a\u2028b", "parameters": {"q": "\u2029"}}]</tool_call>'),
        ("NUL bytes", "", "<tool_call>\x00" * 1000),
        ("lone surrogates", "", '<tool_call>[{"name": "\\ud800", "parameters": {}}]</tool_call>'),
        ("empty block", "", "<tool_call></tool_call>" * 1000),
    ]
    natives = [
        ("native 60k blanks", "13", "", call("find_product", "{" + " " * 60_000 + "}")),
        ("native 100k-level nesting", "19", "", call("find_product", nested(100_000))),
        ("native 10 MB arguments", "", "", call("find_product", json.dumps({"q": "x" * 10_000_000}))),
        ("native null name", "", "", call(None, "{}")),  # type: ignore[arg-type]
        ("native numeric name", "", "", call(5, "{}")),  # type: ignore[arg-type]
        ("native arguments a number", "", "", call("a", 5)),  # type: ignore[arg-type]
        ("native arguments a list", "", "", call("a", "[1]")),
        ("native arguments NaN", "", "", call("a", "NaN")),
        ("native 10k calls", "", "", call("view_cart", "{}") * 10_000),
        ("native function null", "", "", [{"id": "x", "type": "function", "function": None}]),
        ("native think 1 MB", "", "<think>" + "x" * 1_000_000, call("view_cart", "{}")),
    ]
    cases = [Case(n, (lambda t=t: _parse(parse_text_turn, t)), i) for n, i, t in texts]
    cases += [Case(n, (lambda t=t, c=c: _parse(parse_native_turn, t, c)), i) for n, i, t, c in natives]
    cases += [Case(f"as native text: {n}", (lambda t=t: _parse(parse_native_turn, t, None)), i)
              for n, i, t in texts[: 10 if quick else None]]
    for case in cases:
        surface.results.append(run_case("parser", case))
    surface.notes.append("A case is one parse of a model turn (text format, or OpenAI-style `tool_calls` as the "
                         "OpenAI backend hands them over); lost does not apply.")
    return surface


def _parse(fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    out, seconds = timed(fn, *args)
    return {"seconds": seconds, "crash": escaped(out)}


# -- demo: ui/session.py ------------------------------------------------------------------------------
def demo_surface(world: Any, quick: bool) -> Surface:
    from ui import DemoBackend, DemoConfig, DemoError, TurnSettings, render
    from ui.config import DemoSettings
    from ui.session import MAX_MESSAGE_CHARS, MAX_TRANSCRIPT_MESSAGES, bounded_transcript, clip_message

    surface = Surface("demo")
    config = DemoConfig(demo=DemoSettings(data_dir=str(world.data_dir), tasks_per_intent=2, budget=None,
                                          rewriter=None))
    backend = DemoBackend(config, world=world, llm_factory=lambda cfg: None)
    keep = world.filler_products(30)[-1]["product_id"]
    heuristic = TurnSettings(agent="heuristic", max_steps=6)

    def session() -> Any:
        s = backend.new_session()
        assert s.add_to_cart(keep, 2) is None
        return s

    def cart_lost(s: Any) -> int:
        return int({i["product_id"]: i["quantity"] for i in s.cart_summary()["items"]}.get(keep) != 2)

    def clip(value: Any) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            out, seconds = timed(clip_message, value)
            bad = None if isinstance(out, Exception) or len(out) <= MAX_MESSAGE_CHARS else f"{len(out)} characters kept"
            return {"seconds": seconds, "crash": escaped(out), "unexpected": bad}
        return run

    cases = [Case(f"clip_message {n}", clip(v), "14") for n, v in [
        ("1 MB", "x" * 1_000_000), ("10 MB", "x" * 10_000_000), ("None", None), ("an int", 5), ("bytes", b"abc"),
        ("a dict", {"a": 1}), ("1M NULs", "\x00" * 1_000_000), ("1M blanks then x", " " * 1_000_000 + "x"),
        ("1M RTL marks", "\u202e" * 1_000_000), ("1M combining marks", "e" + "\u0301" * 1_000_000),
        ("100k script tags", "<script>" * 100_000), ("lone surrogate", "\ud800" * 10)]]

    def transcript(n: int, size: int) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            messages = [{"role": "assistant", "content": "x" * size} for _ in range(n)]
            out, seconds = timed(bounded_transcript, messages)
            bad = None if isinstance(out, Exception) or len(out) <= MAX_TRANSCRIPT_MESSAGES else f"{len(out)} kept"
            return {"seconds": seconds, "crash": escaped(out), "unexpected": bad}
        return run

    cases += [Case(f"bounded_transcript {n:,} messages", transcript(n, s), "14")
              for n, s in [(100_000, 1), (1_000_000, 0), (0, 0), (1_000, 10_000)]]

    def chat(messages: list[Any], settings: Any = heuristic) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            s = session()
            slowest = 0.0
            for message in messages:
                started = time.perf_counter()
                try:
                    for _ in s.chat(message, settings):
                        pass
                except DemoError:
                    pass
                except Exception as exc:  # noqa: BLE001
                    return {"seconds": slowest, "crash": escaped(exc)}
                slowest = max(slowest, time.perf_counter() - started)
            too_big = [len(m["content"]) for m in s.history if m["role"] == "user" and len(m["content"]) >
                       MAX_MESSAGE_CHARS]
            return {"seconds": slowest, "lost": cart_lost(s),
                    "unexpected": f"a stored message of {too_big[0]} characters" if too_big else None}
        return run

    cases += [
        Case("chat: 1.3 MB message", chat(["water bottle " * 100_000]), "14"),
        Case("chat: 20 messages of 1 MB", chat(["x" * 1_000_000] * (3 if quick else 20)), "14"),
        Case("chat: script tag", chat(["<script>alert(1)</script> water bottle"])),
        Case("chat: NULs", chat(["\x00" * 10_000])), Case("chat: empty", chat(["", "   ", None])),
        Case("chat: RTL and emoji", chat(["\u202e👟" * 1000])),
        Case("chat: oracle in chat", chat(["water bottle"], TurnSettings(agent="oracle"))),
    ]

    def cart(op: str, *args: Any) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            s = session()
            out, seconds = timed(getattr(s, op), *args)
            crash = None if isinstance(out, DemoError) else escaped(out)
            return {"seconds": seconds, "crash": crash, "lost": cart_lost(s) if crash is None else 0}
        return run

    cases += [Case(f"{op}{args!r}"[:70], cart(op, *args)) for op, args in [
        ("add_to_cart", ("x" * 10_000, 1)), ("add_to_cart", ("", 1)), ("add_to_cart", (keep, "1e9")),
        ("add_to_cart", (keep, -1)), ("add_to_cart", (keep, None)), ("add_to_cart", (keep, "abc")),
        ("add_to_cart", (keep, 1e308)), ("add_to_cart", (keep, float("nan"))), ("add_to_cart", (keep, [1])),
        ("add_to_cart", ("\x00", 1)), ("add_to_cart", (None, 1)), ("remove_from_cart", ("../..",)),
        ("remove_from_cart", ("x" * 10_000,)), ("set_budget", ("lots",)), ("set_budget", ("1e400",)),
        ("set_budget", ("-inf",)), ("set_budget", ("nan",)), ("set_budget", (-5,)), ("set_budget", ("",)),
        ("set_budget", ([1],))]]

    def settings(**values: Any) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            out, seconds = timed(TurnSettings(**values).validated, 30)
            return {"seconds": seconds, "crash": None if isinstance(out, DemoError) else escaped(out)}
        return run

    cases += [Case(f"settings {values}"[:70], settings(**values)) for values in [
        {"agent": "rm -rf /"}, {"backend": "gpt-pirate"}, {"model": "x" * 10_000}, {"model": ""},
        {"temperature": "hot"}, {"temperature": float("nan")}, {"temperature": 1e308}, {"temperature": None},
        {"max_steps": 10**9}, {"max_steps": -5}, {"max_steps": "x"}, {"max_steps": float("nan")},
        {"max_steps": float("inf")}, {"max_steps": None}]]

    def run_task(task_id: Any) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            s = session()
            try:
                out, seconds = timed(lambda: list(s.run_task(task_id, heuristic)))
            except DemoError:
                return {}
            return {"seconds": seconds, "crash": None if isinstance(out, DemoError) else escaped(out),
                    "lost": cart_lost(s)}
        return run

    cases += [Case(f"run_task {n}", run_task(v)) for n, v in [("10k-char id", "x" * 10_000), ("None", None),
                                                               ("a number", 5)]]

    def render_case(fn: Callable[..., str], *args: Any) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            out, seconds = timed(fn, *args)
            raw = not isinstance(out, Exception) and "<script>" in out
            return {"seconds": seconds, "crash": escaped(out), "unexpected": "an unescaped <script>" if raw else None}
        return run

    hostile = "<script>alert(1)</script>"
    cases += [
        Case("render.esc of a script", render_case(render.esc, hostile)),
        Case("render.cart_panel with a hostile title", render_case(render.cart_panel, {
            "items": [{"product_id": hostile, "title": hostile, "quantity": 1, "price": hostile, "subtotal": 1.0}],
            "total": 1.0, "total_after_voucher": 1.0, "voucher": hostile, "discount": 0.0})),
        Case("render.product_cards with a hostile product", render_case(render.product_cards, [
            {"product_id": hostile, "title": hostile, "price": hostile, "shop_id": hostile, "image": hostile}])),
    ]
    for case in cases:
        surface.results.append(run_case("demo", case))
    surface.notes.append("Each case runs on a fresh `DemoSession` whose cart holds a bystander line (lost = it "
                         "changed); chats use the heuristic agent. A `DemoError` is the expected refusal.")
    return surface


# -- runner: agents/runner.py ------------------------------------------------------------------------------
class _Agent:
    """A scripted agent; `script(env)` acts, and may raise."""

    def __init__(self, name: str, script: Callable[[Any], Any]):
        self.name = name
        self.script = script

    def run_episode(self, env: Any) -> dict[str, Any] | None:
        return self.script(env)


def runner_surface(world: Any, quick: bool, work: Path, data_dir: Path) -> Surface:
    from agents.runner import RunConfig, RunFolderBusy, run_benchmark
    from agents.scripted import HeuristicAgent

    surface = Surface("runner")
    tasks = _tasks_per_intent(world, 1 if quick else 2)
    similarity = LexicalSimilarity()
    hostile_calls = [(t, a) for _, _, t, a, _ in tool_corpus(world)[:: 4 if quick else 2]]
    counter = [0]

    def out_dir() -> Path:
        counter[0] += 1
        return work / f"run{counter[0]}"

    def rows_of(folder: Path) -> list[dict[str, Any]]:
        path = folder / "results.jsonl"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8").split("\n"):
            with contextlib.suppress(json.JSONDecodeError):
                if line.strip():
                    rows.append(json.loads(line))
        return rows

    def check(folder: Path, trials: int = 1, summary: dict[str, Any] | None = None) -> dict[str, Any]:
        rows = rows_of(folder)
        keys = [(r.get("task_id"), r.get("trial")) for r in rows]
        want = {(t.task_id, k) for t in tasks for k in range(trials)}
        lost = len(want - set(keys)) + (len(keys) - len(set(keys)))
        slowest = max((ms for r in rows for ms in r.get("tool_latency_ms") or [0.0]), default=0.0) / 1000
        out: dict[str, Any] = {"lost": lost, "seconds": slowest}
        if summary is not None and summary["overall"]["n"] != len(want):
            out["lost"] = lost + abs(summary["overall"]["n"] - len(want))
            out["note"] = f"summary n={summary['overall']['n']} for {len(want)} episodes"
        return out

    def run(folder: Path, agent: Callable[[], Any], trials: int = 1, parallel: int = 1, max_steps: int = 30,
            name: str = "heuristic") -> dict[str, Any]:
        return run_benchmark(world, tasks, agent, folder, RunConfig(agent=name, trials=trials, parallel=parallel,
                                                                    max_steps=max_steps),
                             similarity=similarity, progress=False)

    def plain(agent: Callable[[], Any], trials: int = 1, parallel: int = 1, max_steps: int = 30,
              name: str = "heuristic") -> Callable[[], dict[str, Any]]:
        def case() -> dict[str, Any]:
            folder = out_dir()
            summary = run(folder, agent, trials, parallel, max_steps, name)
            return check(folder, trials, summary)
        return case

    def raising(every: int, exc: type[BaseException] = RuntimeError) -> Callable[[], Any]:
        calls = [0]

        def script(env: Any) -> Any:
            calls[0] += 1
            env.step("find_product", {"q": "shoes"})
            if calls[0] % every == 0:
                raise exc("the agent broke")
            return HeuristicAgent().run_episode(env)
        return lambda: _Agent("heuristic", script)

    def hostile_agent() -> Any:
        def script(env: Any) -> Any:
            for tool, arguments in hostile_calls:
                if env.state.done:
                    break
                env.step(tool, arguments)
            return {"note": "hostile"}
        return _Agent("heuristic", script)

    def looping_agent() -> Any:
        def script(env: Any) -> Any:
            while not env.state.done:
                env.step("view_cart", {})
            return None
        return _Agent("heuristic", script)

    def damaged(mutate: Callable[[str, list[str]], str], trials: int = 1) -> Callable[[], dict[str, Any]]:
        """A finished run whose results file a kill (or a second writer) left damaged, then resumed."""
        def case() -> dict[str, Any]:
            folder = out_dir()
            run(folder, HeuristicAgent, trials)
            path = folder / "results.jsonl"
            text = path.read_text(encoding="utf-8")
            path.write_text(mutate(text, [line for line in text.split("\n") if line]), encoding="utf-8")
            (summary, seconds) = timed(run, folder, HeuristicAgent, trials)
            if isinstance(summary, Exception):
                return {"crash": escaped(summary), "seconds": 0.0}
            return check(folder, trials, summary)
        return case

    def busy() -> dict[str, Any]:
        import fcntl

        folder = out_dir()
        folder.mkdir(parents=True)
        with (folder / ".lock").open("a") as held:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            refused, seconds = timed(run, folder, HeuristicAgent)
        if not isinstance(refused, RunFolderBusy):
            return {"seconds": seconds, "crash": escaped(refused),
                    "unexpected": None if isinstance(refused, Exception) else "a second writer was let in"}
        summary = run(folder, HeuristicAgent)
        return {**check(folder, 1, summary), "seconds": seconds}

    def two_at_once() -> dict[str, Any]:
        folder = out_dir()
        results: list[Any] = []

        def go() -> None:
            results.append(timed(run, folder, raising(1000)))

        threads = [threading.Thread(target=go) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        crashes = [escaped(r) for r, _ in results if isinstance(r, Exception) and not isinstance(r, RunFolderBusy)]
        summary = run(folder, HeuristicAgent)
        return {**check(folder, 1, summary), "crash": crashes[0] if crashes else None}

    def interrupted(after: int) -> Callable[[], dict[str, Any]]:
        """An abrupt stop mid-run (KeyboardInterrupt from the agent, as Ctrl-C), then a resume."""
        def case() -> dict[str, Any]:
            folder = out_dir()
            try:
                run(folder, raising(after, KeyboardInterrupt))
            except KeyboardInterrupt:
                pass
            summary = run(folder, HeuristicAgent)
            return check(folder, 1, summary)
        return case

    def other_agent() -> dict[str, Any]:
        folder = out_dir()
        run(folder, HeuristicAgent)
        refused, seconds = timed(run, folder, HeuristicAgent, name="oracle")
        unexpected = None if isinstance(refused, ValueError) else "another agent's run was appended to"
        return {**check(folder), "seconds": seconds,
                "crash": None if isinstance(refused, ValueError) or not isinstance(refused, Exception)
                else escaped(refused), "unexpected": unexpected}

    def config_cut() -> dict[str, Any]:
        folder = out_dir()
        run(folder, HeuristicAgent)
        config = folder / "config.json"
        config.write_text(config.read_text()[:17])  # killed while writing config.json
        summary, _ = timed(run, folder, HeuristicAgent)
        if isinstance(summary, Exception):
            return {"crash": escaped(summary)}
        return check(folder, 1, summary)

    last = len(tasks)
    cases = [
        Case("a plain run (baseline)", plain(HeuristicAgent)),
        Case("an agent that always raises", plain(raising(1)), "8"),
        Case("an agent that raises every 3rd episode", plain(raising(3)), "8"),
        Case("an agent that raises every 2nd episode, 4 in parallel", plain(raising(2), parallel=4), "8"),
        Case("an agent replaying hostile tool calls", plain(hostile_agent, max_steps=1000), "1,5,19"),
        Case("an agent that never terminates", plain(looping_agent)),
        Case("an agent that never terminates, 1000 steps", plain(looping_agent, max_steps=1000), "6"),
        Case("3 trials, 4 in parallel", plain(HeuristicAgent, trials=3, parallel=4)),
        Case("half a row after a kill", damaged(lambda t, r: "\n".join(r[:-1]) + "\n" + r[-1][:40]), "18"),
        Case("last row without newline", damaged(lambda t, r: "\n".join(r)), "18"),
        Case("last 3 rows lost and half a row", damaged(lambda t, r: "\n".join(r[:-3]) + "\n" + r[-3][:40]), "18"),
        Case("a row written twice", damaged(lambda t, r: t + r[0] + "\n"), "7"),
        Case("every row written twice", damaged(lambda t, r: t + t), "7"),
        Case("a row glued to the next", damaged(lambda t, r: r[0] + r[1] + "\n" + "\n".join(r[2:]) + "\n"), "18"),
        Case("blank lines between rows", damaged(lambda t, r: "\n\n\n".join(r) + "\n\n"), ""),
        Case("a NUL-filled tail (power loss)", damaged(lambda t, r: t + "\x00" * 4096), "18"),
        Case("a garbage line in the middle", damaged(lambda t, r: r[0] + "\n{garbage\n" + "\n".join(r[1:]) + "\n")),
        Case("a row that is a JSON list", damaged(lambda t, r: t + "[1, 2]\n")),
        Case("a row without task_id", damaged(lambda t, r: t + '{"trial": 0}\n')),
        Case("an empty results file", damaged(lambda t, r: "")),
        Case("only garbage", damaged(lambda t, r: "\x00\xff garbage\n" * 10)),
        Case("U+2028 in a row", damaged(lambda t, r: t.replace('"agent"', '"a\u2028"', 1))),
        Case("rows of 3 trials cut at random", damaged(lambda t, r: "\n".join(r[::2]) + "\n" + r[1][:25], trials=3),
             "18"),
        Case("a stopped run (Ctrl-C) after 1 episode, resumed", interrupted(2), "18"),
        Case(f"a stopped run after {max(1, last - 1)} episodes, resumed", interrupted(max(2, last)), "18"),
        Case("a second run while one holds the folder", busy, "7", retry=False),
        Case("two runs started together on one folder", two_at_once, "7", retry=False),
        Case("another agent's run folder", other_agent),
        Case("config.json cut by a kill", config_cut, "7"),
        Case("no tasks", lambda: {"seconds": timed(run_benchmark, world, [], HeuristicAgent, out_dir(),
                                                   RunConfig(agent="heuristic"), similarity=similarity,
                                                   progress=False)[1]}),
    ]
    if not quick:
        cases += [Case(f"SIGKILL mid-run #{k}, resumed", (lambda k=k: _killed_runs(world, data_dir, tasks,
                                                                                     out_dir(), k, similarity)),
                       "7,18", retry=False) for k in (1, 2)]
    for case in cases:
        surface.results.append(run_case("runner", case))
    surface.notes.append(f"{len(tasks)} tasks per run (every intent); lost = (task, trial) rows missing or "
                         "written twice after the run and its resume, or a summary whose n disagrees; over 1 s = "
                         "a tool call in the rows, or a refusal, over 1 s. Agents are scripted; scoring uses a "
                         "lexical title similarity (the rows, not the scores, are under test).")
    return surface


RUN_CHILD = r"""
import sys, time
sys.path.insert(0, {root!r})
from agents.runner import RunConfig, run_benchmark
from agents.scripted import HeuristicAgent
from sandbox import ShoppingWorld
world = ShoppingWorld.open({data_dir!r})
ids = set({ids!r})
tasks = [t for t in world.tasks.values() if t.task_id in ids]
tasks.sort(key=lambda t: {ids!r}.index(t.task_id))

class Slow(HeuristicAgent):
    def run_episode(self, env):
        time.sleep(0.15)
        return super().run_episode(env)

print("started", flush=True)
run_benchmark(world, tasks, Slow, {out!r}, RunConfig(agent="heuristic", trials=2, parallel=2),
              similarity=lambda a, b: 1.0 if a == b else 0.0, progress=False)
"""


def _killed_runs(world: Any, data_dir: Path, tasks: list[Any], folder: Path, kills: int,
                 similarity: Any) -> dict[str, Any]:
    """`kills` real SIGKILLs of a running benchmark process, each after a few more rows, then a resume here."""
    from agents.runner import RunConfig, run_benchmark
    from agents.scripted import HeuristicAgent

    code = RUN_CHILD.format(root=str(ROOT), data_dir=str(data_dir), ids=[t.task_id for t in tasks], out=str(folder))
    results = folder / "results.jsonl"
    at_kill = []
    for k in range(kills):
        have = len(results.read_text(encoding="utf-8").split("\n")) if results.exists() else 0
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            now = len(results.read_text(encoding="utf-8").split("\n")) if results.exists() else 0
            if now >= have + 2 + k:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        at_kill.append(len([line for line in results.read_text(encoding="utf-8").split("\n") if line.strip()])
                       if results.exists() else 0)
    summary = run_benchmark(world, tasks, HeuristicAgent, folder, RunConfig(agent="heuristic", trials=2, parallel=2),
                            similarity=similarity, progress=False)
    rows = [json.loads(line) for line in results.read_text(encoding="utf-8").split("\n") if line.strip()]
    keys = [(r["task_id"], r["trial"]) for r in rows]
    want = {(t.task_id, k) for t in tasks for k in range(2)}
    lost = len(want - set(keys)) + len(keys) - len(set(keys)) + abs(summary["overall"]["n"] - len(want))
    return {"lost": lost, "seconds": 0.0, "note": f"killed with {at_kill} rows written; {len(rows)} rows for "
                                                 f"{len(want)} episodes after the resume"}


def _tasks_per_intent(world: Any, n: int) -> list[Any]:
    seen: dict[str, int] = {}
    out = []
    for t in world.tasks.values():
        if seen.get(t.intent.value, 0) < n:
            seen[t.intent.value] = seen.get(t.intent.value, 0) + 1
            out.append(t)
    return out


# -- http: sandbox/server.py behind a real uvicorn ------------------------------------------------------------
class LiveServer:
    """The app behind uvicorn on 127.0.0.1 in a thread, configured as `shoplab sandbox serve` runs it."""

    def __init__(self, world: Any, **app_options: Any):
        self.world = world
        self.app_options = app_options
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> LiveServer:
        import uvicorn

        from sandbox.server import LOOPBACK_HOSTS, create_app

        try:
            from sandbox.server import server_config
        except ImportError:  # before server_config existed
            def server_config(app: Any, host: str, port: int, log_level: str = "info") -> Any:
                return uvicorn.Config(app, host=host, port=port, log_level=log_level)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        app = create_app(self.world, allowed_hosts=LOOPBACK_HOSTS, **self.app_options)
        self.server = uvicorn.Server(server_config(app, "127.0.0.1", self.port, log_level="critical"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            if self.thread is not None:
                self.thread.join(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def raw_request(port: int, data: bytes | Callable[[socket.socket], None], timeout: float = 10.0) -> tuple[int, bytes]:
    """Send bytes as they are (or let `data` write them); the answer's status (0: none) and its body."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        try:
            data(conn) if callable(data) else conn.sendall(data)
        except OSError:
            pass
        try:
            while chunk := conn.recv(65536):
                got += chunk
                head, sep, body = got.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), None)
                if sep and length is not None and len(body) >= length:
                    break
        except OSError:
            pass
    head, _, body = got.partition(b"\r\n\r\n")
    first = head.split(b"\r\n", 1)[0].split()
    status = int(first[1]) if len(first) > 1 and first[0].startswith(b"HTTP/") and first[1].isdigit() else 0
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])}
    if fields.get(b"content-length", b"").isdigit():
        body = body[:int(fields[b"content-length"])]
    elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = _dechunk(body)
    return status, body


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        try:
            n = int(size.split(b";")[0], 16)
        except ValueError:
            break
        if n == 0:
            break
        out += rest[:n]
        data = rest[n + 2:]
    return out


class HealthWatch:
    """Polls /health every 50 ms on its own connection while a case runs: the slowest answer is the stall."""

    def __init__(self, port: int):
        self.port = port
        self.slowest = 0.0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    conn.request("GET", "/health")
                    resp = conn.getresponse()
                    resp.read()
                    ok = resp.status == 200
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                    ok = False
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self.failed += not ok
                self._stop.wait(0.05)
        finally:
            conn.close()

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=35)


def http_surface(world: Any, quick: bool) -> Surface:
    import httpx

    surface = Surface("http")
    live = LiveServer(world, max_episodes=200).start()
    client = httpx.Client(base_url=live.url, timeout=30)
    tasks = list(world.tasks.values())
    product_task = next(t for t in tasks if t.intent.value == "product")
    filler = world.filler_products(25)
    ids20 = ",".join(p["product_id"] for p in filler[:20])
    bystanders: list[tuple[str, int]] = []  # (episode id, steps it had)
    plain_text: list[str] = []

    def new_bystanders() -> None:
        bystanders.clear()
        for k in range(3):  # three agents, each with its live episode
            who = {"X-Client-Id": f"bystander{k}"}
            eid = client.post("/episodes", json={"max_steps": 100}, headers=who).json()["episode_id"]
            client.post(f"/episodes/{eid}/step", json={"tool": "add_to_cart",
                                                       "arguments": {"product_id": filler[0]["product_id"]}})
            bystanders.append((eid, 1))

    def bystanders_lost() -> int:
        lost = 0
        for eid, steps in bystanders:
            resp = client.get(f"/episodes/{eid}")
            lost += resp.status_code != 200 or resp.json()["steps"] != steps or not resp.json()["cart"]["items"]
        return lost

    new_bystanders()

    def judged(case: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        """Wraps a case: /health is watched while it runs; then the server must answer and bystanders live."""
        def run() -> dict[str, Any]:
            nonlocal live, client
            with HealthWatch(live.port) as watch:
                try:
                    out = case() or {}
                except Exception as exc:  # noqa: BLE001
                    out = {"crash": escaped(exc)}
            out["seconds"] = max(float(out.get("seconds", 0.0)), watch.slowest)
            try:
                alive = client.get("/health", timeout=10).status_code == 200
            except httpx.HTTPError:
                alive = False
            if not alive:
                out["crash"] = out.get("crash") or "the server stopped answering"
                out["lost"] = len(bystanders)
                client.close()
                live.stop()
                live = LiveServer(world, max_episodes=200).start()
                client = httpx.Client(base_url=live.url, timeout=30)
                new_bystanders()
            else:
                out["lost"] = int(out.get("lost", 0)) + bystanders_lost()
            return out
        return run

    def request(method: str, path: str, expect: str = "4xx", **kwargs: Any) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            resp, seconds = timed(client.request, method, path, **kwargs)
            if isinstance(resp, Exception):
                return {"seconds": seconds, "crash": escaped(resp)}
            return _judge_response(resp.status_code, resp.headers.get("content-type", ""), resp.content, seconds,
                                   expect)
        return run

    def raw(data: bytes | Callable[[socket.socket], None], expect: str = "4xx") -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            (status, body), seconds = timed(raw_request, live.port, data)
            out = _judge_response(status, "", body, seconds, expect, raw=True)
            if status == 400 and body == b"Invalid HTTP request received.":
                plain_text.append("")
                out["note"] = "uvicorn's own plain-text 400 (its HTTP parser refused the request)"
            elif status == 0:
                out["note"] = "connection closed or reset before an answer"
            return out
        return run

    episode = client.post("/episodes", json={"max_steps": 1000, "task_id": product_task.task_id}).json()["episode_id"]

    def step(tool: str, arguments: Any, expect: str = "ok") -> Callable[[], dict[str, Any]]:
        body = json.dumps({"tool": tool, "arguments": arguments})  # NaN and Infinity as Python writes them
        return request("POST", f"/episodes/{episode}/step", expect, content=body.encode(),
                       headers={"content-type": "application/json"})

    H = b"Host: 127.0.0.1\r\nConnection: close\r\n"
    cases: list[Case] = []
    # Tool calls over HTTP: the tools corpus, as episode steps (every tool call is a 200 with ok false).
    for name, item, tool, arguments, _expect in tool_corpus(world)[:: 3 if quick else 1]:
        if isinstance(arguments, str) and len(arguments) > 900_000:
            continue  # over the body limit: a case of its own below
        cases.append(Case(f"step {name}", judged(step(tool, arguments)), item))
    find = [("price quadratic", "5", {"q": "shoes", "price": "-" + " " * 19_950 + "x"}),
            ("q 10k", "", {"q": "x" * 10_000}), ("page 99", "", {"q": "shoes", "page": "99"}),
            ("page 1e999", "19", {"q": "shoes", "page": "1e999"}), ("page NaN", "19", {"q": "shoes", "page": "NaN"}),
            ("price NaN-1", "19", {"q": "shoes", "price": "NaN-1"}), ("sort random", "", {"q": "shoes", "sort": "x"}),
            ("no q", "", {}), ("q NUL", "", {"q": "\x00"}), ("q invalid UTF-8", "", "q=%ff%fe%fd"),
            ("q RTL", "", {"q": "\u202eshoes"}), ("q lucene", "", {"q": "*:* OR title:x"})]
    for name, item, params in find:
        cases.append(Case(f"GET /find_product {name}", judged(request("GET", "/find_product", "any", params=params)),
                          item))
    for name, ids in [("21 ids", ",".join(p["product_id"] for p in filler[:21])), ("10k commas", "," * 10_000),
                      ("SQL", "1; DROP TABLE"), ("20 ids", ids20)]:
        cases.append(Case(f"GET /view_product_information {name}",
                          judged(request("GET", "/view_product_information", "any", params={"product_ids": ids}))))
    cases += [
        Case("live score (the gold's leak)", judged(request("GET", f"/episodes/{episode}/score")), "3"),
        Case("60,000 tool names", judged(request("POST", "/episodes", json={"tools": ["view_cart"] * 60_000})), "11"),
        Case("max_steps 0 / 10**9 / 'x'", judged(_all(request("POST", "/episodes", json={"max_steps": 0}),
                                                      request("POST", "/episodes", json={"max_steps": 10**9}),
                                                      request("POST", "/episodes", json={"max_steps": "x"})))),
        Case("a 10k-char task id", judged(request("POST", "/episodes", json={"task_id": "x" * 10_000}))),
        Case("a hostile X-Client-Id", judged(request("POST", "/episodes", json={},
                                                     headers={"X-Client-Id": "x" * 10_000})), "6"),
        Case("a 9000-level nested body", judged(request("POST", f"/episodes/{episode}/step",
                                                        content=b'{"tool": "view_cart", "arguments": '
                                                        + nested(9000).encode() + b"}",
                                                        headers={"content-type": "application/json"})), "19"),
        Case("a body that is not JSON", judged(request("POST", f"/episodes/{episode}/step", content=b"{oops",
                                                       headers={"content-type": "application/json"})), "19"),
        Case("a body of the wrong type", judged(request("POST", f"/episodes/{episode}/step", content=b"[1]",
                                                        headers={"content-type": "application/json"}))),
        Case("form data instead of JSON", judged(request("POST", "/episodes", data={"a": "b"}))),
        Case("a declared 2 MB body", judged(request("POST", f"/episodes/{episode}/step", content=b" " * 2_000_000)),
             "4"),
        Case(f"a chunked {5 if quick else 200} MB body", judged(raw(_chunked(
            f"/episodes/{episode}/step", 5 if quick else 200))), "4"),
        Case("Content-Length: -1", judged(raw(b"POST /episodes HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n{}")),
             "4"),
        Case("Content-Length: 10**22", judged(raw(b"POST /episodes HTTP/1.1\r\n" + H
                                                  + b"Content-Length: 10000000000000000000000\r\n\r\n{}")), "4"),
        Case("Content-Length and chunked", judged(raw(b"POST /episodes HTTP/1.1\r\n" + H + b"Content-Length: 2\r\n"
                                                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "any")), "4"),
        Case("a bad chunk size", judged(raw(b"POST /episodes HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                                            b"zz\r\n{}\r\n0\r\n\r\n")), "4"),
        Case("Host: attacker (DNS rebinding)", judged(request("GET", "/health", headers={"host": "rebind.example"})),
             "19"),
        Case("no Host header", judged(raw(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")), "19"),
        Case("HTTP/1.0 without Host", judged(raw(b"GET /health HTTP/1.0\r\n\r\n")), "19"),
        Case("garbage request line", judged(raw(b"HELLO\r\n\r\n")), "19"),
        Case("a space in the target", judged(raw(b"GET /a b HTTP/1.1\r\n" + H + b"\r\n")), "19"),
        Case("a non-ASCII target", judged(raw(b"GET /h\xffealth HTTP/1.1\r\n" + H + b"\r\n")), "19"),
        Case("a NUL in a header", judged(raw(b"GET /health HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n")), "19"),
        Case("bare LF line ends", judged(raw(b"GET /health HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n\n", "any")),
             "19"),
        Case("an HTTP/2 preface", judged(raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")), "19"),
        Case("HTTP/0.9", judged(raw(b"GET /health\r\n\r\n")), "19"),
        Case("HTTP/9.9", judged(raw(b"GET /health HTTP/9.9\r\n" + H + b"\r\n", "any")), "19"),
        Case("a folded header line", judged(raw(b"GET /health HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n", "any")),
             "19"),
        Case("a space before a colon", judged(raw(b"GET /health HTTP/1.1\r\n" + H + b"X-A : b\r\n\r\n")), "19"),
        Case("an empty header name", judged(raw(b"GET /health HTTP/1.1\r\n" + H + b": b\r\n\r\n")), "19"),
        Case("a control byte in a header", judged(raw(b"GET /health HTTP/1.1\r\n" + H + b"X-A: a\x01\xffb\r\n\r\n",
                                                      "any")), "19"),
        Case("a tab in the target", judged(raw(b"GET /he\talth HTTP/1.1\r\n" + H + b"\r\n")), "19"),
        Case("two Content-Lengths", judged(raw(b"POST /episodes HTTP/1.1\r\n" + H + b"Content-Length: 2\r\n"
                                               b"Content-Length: 3\r\n\r\n{}")), "4"),
        Case("Transfer-Encoding: gzip", judged(raw(b"POST /episodes HTTP/1.1\r\n" + H
                                                   + b"Transfer-Encoding: gzip\r\n\r\n{}")), "4"),
        Case("Expect: 100-continue with 2 MB declared", judged(raw(b"POST /episodes HTTP/1.1\r\n" + H
                                                                   + b"Expect: 100-continue\r\nContent-Length: "
                                                                   b"2000000\r\n\r\n")), "4"),
        Case("an unknown method", judged(raw(b"BREW /health HTTP/1.1\r\n" + H + b"\r\n")), "19"),
        Case("OPTIONS", judged(request("OPTIONS", "/tools"))), Case("DELETE /health", judged(request("DELETE", "/health"))),
        Case("an unknown route", judged(request("GET", "/../../etc/passwd"))),
        Case("a WebSocket handshake", judged(raw(b"GET /episodes HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
                                                 b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                                 b"Sec-WebSocket-Version: 13\r\n\r\n")), "19"),
        Case("an absolute-form target", judged(raw(b"GET http://evil.example/health HTTP/1.1\r\n" + H + b"\r\n", "any"))),
        Case("a 20 MB header", judged(raw(b"GET /health HTTP/1.1\r\n" + H + b"X-A: " + b"a" * 20_000_000
                                          + b"\r\n\r\n")), "19"),
        Case("20,000 headers", judged(raw(b"GET /health HTTP/1.1\r\n" + H
                                          + b"".join(b"X-%d: a\r\n" % i for i in range(20_000)) + b"\r\n")), "19"),
        Case("a 1 MB URL", judged(raw(b"GET /find_product?q=" + b"a" * 1_000_000 + b" HTTP/1.1\r\n" + H + b"\r\n")),
             "19"),
        Case("100 pipelined requests", judged(raw(b"".join([b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"] * 99)
                                                  + b"GET /health HTTP/1.1\r\n" + H + b"\r\n", "ok"))),
        Case("100 half-open connections", judged(_half_open(live.port, 100))),
        Case(f"{50 if quick else 200} concurrent searches", judged(_concurrent(live.url, 50 if quick else 200)),
             ""),
        Case("delete, then step the deleted episode", judged(_deleted(client))),
        Case(f"one client creating {100 if quick else 1000} episodes", judged(_greedy(client, 100 if quick else 1000)),
             "6", retry=False),
        Case("one client growing many large episodes", judged(_greedy_bytes(client, ids20, 4 if quick else 12)), "6",
             retry=False),
        Case(f"a new X-Client-Id for each of {50 if quick else 300} episodes",
             judged(_sybil(client, 50 if quick else 300, bystanders)), "6", retry=False),
    ]
    try:
        for case in cases:
            surface.results.append(run_case("http", case))
    finally:
        client.close()
        live.stop()
    surface.notes.append("A real uvicorn on 127.0.0.1 (`sandbox.server.server_config`, as `shoplab sandbox serve`); "
                         "/health is polled every 50 ms during each case (over 1 s = the request or that poll); "
                         "lost = the live episode of one of three bystander clients gone or changed. "
                         f"{len(plain_text)} answers were uvicorn's own plain-text 400 (requests its HTTP parser "
                         "refuses, listed in the server's docstring); every answer of the app is JSON with a `kind` "
                         "(else the case is 'unexpected').")
    return surface


def _judge_response(status: int, content_type: str, body: bytes, seconds: float, expect: str,
                    raw: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": seconds}
    if status >= 500:
        out["crash"] = f"HTTP {status}: {body[:200]!r}"
        return out
    if status == 0 and expect == "ok":
        out["unexpected"] = "no answer"
    is_app = body != b"Invalid HTTP request received." and status != 0
    if is_app and status >= 400:
        try:
            parsed = json.loads(body)
            ok = isinstance(parsed, dict) and set(parsed) >= {"error", "kind"}
        except ValueError:
            ok = False
        if not ok:
            out["unexpected"] = f"a non-JSON error answer: {body[:80]!r}"
    if expect == "ok" and 400 <= status:
        out["unexpected"] = f"HTTP {status}"
    if expect == "4xx" and 200 <= status < 300 and not raw:
        out["unexpected"] = f"accepted (HTTP {status})"
    if expect == "ok" and status == 200 and not raw:
        with contextlib.suppress(ValueError):
            parsed = json.loads(body)
            if isinstance(parsed, dict) and parsed.get("error_kind") == "internal":
                out["crash"] = f"internal tool error: {parsed.get('error', '')[:200]}"
    return out


def _all(*cases: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        outs = [c() for c in cases]
        merged: dict[str, Any] = {"seconds": max(o.get("seconds", 0.0) for o in outs)}
        for key in ("crash", "unexpected"):
            merged[key] = next((o[key] for o in outs if o.get(key)), None)
        return merged
    return run


def _chunked(path: str, megabytes: int) -> Callable[[socket.socket], None]:
    def send(conn: socket.socket) -> None:
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"%x\r\n" % 1_000_000 + b" " * 1_000_000 + b"\r\n"
        for _ in range(megabytes):
            conn.sendall(chunk)
        conn.sendall(b"0\r\n\r\n")
    return send


def _half_open(port: int, n: int) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        conns = []
        try:
            for _ in range(n):
                c = socket.create_connection(("127.0.0.1", port), timeout=5)
                c.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                conns.append(c)
            time.sleep(0.5)
        finally:
            for c in conns:
                c.close()
        return {"seconds": 0.0}
    return run


def _concurrent(url: str, n: int) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        import httpx

        statuses: list[int] = []
        slowest = [0.0]
        client = httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=n))

        def one(k: int) -> None:
            resp, seconds = timed(client.get, "/find_product", params={"q": ["phone case", "shoes", "water bottle"][k % 3]})
            statuses.append(resp.status_code if not isinstance(resp, Exception) else 0)
            slowest[0] = max(slowest[0], seconds)

        threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client.close()
        bad = [s for s in statuses if s != 200]
        return {"seconds": 0.0, "crash": f"{len(bad)} of {n} failed" if any(s >= 500 or s == 0 for s in bad) else None,
                "note": f"slowest of {n} concurrent: {slowest[0]:.2f} s (they queue on 2 cores)"}
    return run


def _deleted(client: Any) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        eid = client.post("/episodes", json={}).json()["episode_id"]
        client.delete(f"/episodes/{eid}")
        resp, seconds = timed(client.post, f"/episodes/{eid}/step", json={"tool": "view_cart"})
        return _judge_response(resp.status_code, "", resp.content, seconds, "4xx")
    return run


def _greedy(client: Any, n: int) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        slowest = 0.0
        for _ in range(n):
            resp, seconds = timed(client.post, "/episodes", json={}, headers={"X-Client-Id": "mallory"})
            slowest = max(slowest, seconds)
            if isinstance(resp, Exception) or resp.status_code >= 500:
                return {"seconds": slowest, "crash": escaped(resp) or f"HTTP {resp.status_code}"}
        return {"seconds": slowest}
    return run


def _greedy_bytes(client: Any, ids: str, n: int) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        slowest = 0.0
        for _ in range(n):
            eid = client.post("/episodes", json={"max_steps": 1000}, headers={"X-Client-Id": "mallory"}).json()
            for _ in range(40):
                resp, seconds = timed(client.post, f"/episodes/{eid['episode_id']}/step",
                                      json={"tool": "view_product_information", "arguments": {"product_ids": ids}})
                slowest = max(slowest, seconds)
                if isinstance(resp, Exception) or resp.status_code >= 500:
                    return {"seconds": slowest, "crash": escaped(resp) or f"HTTP {resp.status_code}"}
        return {"seconds": slowest}
    return run


def _sybil(client: Any, n: int, bystanders: list[tuple[str, int]]) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        slowest = 0.0
        for k in range(n):
            resp, seconds = timed(client.post, "/episodes", json={}, headers={"X-Client-Id": f"sybil{k}"})
            slowest = max(slowest, seconds)
            if k % 20 == 0:  # the bystanders go on using their episodes meanwhile
                for eid, _ in bystanders:
                    client.get(f"/episodes/{eid}")
        return {"seconds": slowest, "note": "the store holds 200: past that, least recently used first among "
                                            "clients at their equal share"}
    return run


# -- build: shoplab sandbox build -----------------------------------------------------------------------------
def build_surface(quick: bool, work: Path) -> Surface:
    from typer.testing import CliRunner

    from sandbox import ShoppingWorld, build_sandbox
    from sandbox.engines.base import SearchRequest
    from shoplab_cli import app

    surface = Surface("build")
    lines = {name: path.read_text(encoding="utf-8").splitlines() for name, path in
             zip(("product", "shop", "voucher", "web"), TASK_FILES, strict=True)}
    base = work / "base"
    good = work / "good.jsonl"
    good.write_text("\n".join(lines["product"][:20] + lines["shop"][:5] + lines["voucher"][:5] + lines["web"][:5])
                    + "\n", encoding="utf-8")
    build_sandbox(base, [good], n_products=600, seed=0, progress=False)
    fingerprint = _tree_hash(base)
    runner = CliRunner()
    counter = [0]

    def record(kind: str, k: int = 0) -> dict[str, Any]:
        return json.loads(lines[kind][k])

    def product(**change: Any) -> str:
        r = record("product")
        r["reward"].update(change)
        return json.dumps(r)

    def voucher(**change: Any) -> str:
        r = record("voucher")
        r["voucher"].update(change)
        return json.dumps(r)

    def case(content: bytes | str | None, expect: str, args: list[str] | None = None,
             products: int = 300) -> Callable[[], dict[str, Any]]:
        """Build `content` (a task file) into a copy of the good sandbox; the copy must be left intact when the
        build refuses it. expect: refuse, accept or either."""
        def run() -> dict[str, Any]:
            counter[0] += 1
            target = work / f"case{counter[0]}"
            shutil.copytree(base, target)
            tasks = work / f"case{counter[0]}.jsonl"
            if content is not None:
                tasks.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
            argv = ["sandbox", "build", "--data-dir", str(target), "--products", str(products), "--seed", "1",
                    *(args if args is not None else ["--tasks", str(tasks)])]
            result, seconds = timed(runner.invoke, app, argv, catch_exceptions=True)
            if isinstance(result, Exception):
                return {"seconds": seconds, "crash": escaped(result)}
            out: dict[str, Any] = {"seconds": seconds if result.exit_code != 0 else 0.0}
            exc = result.exception
            if exc is not None and not isinstance(exc, SystemExit):
                out["crash"] = f"traceback: {type(exc).__name__}: {str(exc)[:160]}"
            refused = result.exit_code != 0
            if refused:
                out["lost"] = int(_tree_hash(target) != fingerprint or not _searchable(target, ShoppingWorld,
                                                                                      SearchRequest))
                message = " ".join(result.output.split())[:160]
                out["note"] = f"exit {result.exit_code}: {message}"
                if expect == "accept":
                    out["unexpected"] = "a plain input refused"
            else:
                manifest = json.loads((target / "manifest.json").read_text())
                out["note"] = f"built {manifest.get('n_products')} products"
                if expect == "refuse":
                    out["unexpected"] = "accepted"
                if manifest.get("n_products", 0) > products:
                    out["unexpected"] = f"{manifest['n_products']} products built for --products {products}"
            shutil.rmtree(target, ignore_errors=True)
            return out
        return run

    p, s, v, w = (record(k) for k in ("product", "shop", "voucher", "web"))
    web_reusing_gold = dict(w)
    web_reusing_gold["reward"] = {**w["reward"], "product_id": p["reward"]["product_id"]}
    cases = [
        Case("an empty file", case("", "refuse"), "15"),
        Case("blank lines only", case("\n \n\t\n", "refuse"), "15"),
        Case("a non-UTF-8 file", case(lines["product"][0].encode() + b"\n" + "é".encode("latin-1") + b"\n", "refuse"),
             "15"),
        Case("binary garbage", case(os.urandom(4096), "refuse"), "15"),
        Case("a UTF-8 BOM", case("\ufeff" + lines["product"][0] + "\n", "either")),
        Case("CRLF line ends", case(lines["product"][0] + "\r\n" + lines["product"][1] + "\r\n", "accept")),
        Case("not JSON on line 3", case("\n".join(lines["product"][:2] + ["{oops"]) + "\n", "refuse"), "15"),
        Case("a JSON list line", case("[1, 2]\n", "refuse"), "15"),
        Case("a 9000-level nested line", case('{"query": "x", "reward": ' + nested(9000) + "}\n", "refuse"), "19"),
        Case('"title": 5', case(product(title=5) + "\n", "refuse"), "15"),
        Case("no query", case(json.dumps({"reward": p["reward"]}) + "\n", "refuse"), "15"),
        Case("no reward", case(json.dumps({"query": "x"}) + "\n", "refuse"), "15"),
        Case("an empty reward list", case(json.dumps({"query": "x", "reward": []}) + "\n", "refuse"), "15"),
        Case("a reward that is a string", case(json.dumps({"query": "x", "reward": "gold"}) + "\n", "refuse"), "15"),
        Case("a path as product id", case(product(product_id="../../etc/passwd") + "\n", "either")),
        Case("a 10k-char product id", case(product(product_id="9" * 10_000) + "\n", "refuse")),
        Case("a 1 MB query", case(json.dumps({**p, "query": "shoes " * 200_000}) + "\n", "refuse"), "10"),
        Case(f"a {2 if quick else 20} MB title line", case(product(title=["word " * (400_000 if quick else 4_000_000)])
                                                           + "\n", "refuse"), "10"),
        Case("price 1e308", case(product(price=[{"greater than": [1e308, None]}]) + "\n", "refuse"), "15"),
        Case("price NaN", case(product(price=[{"less than": [None, float("nan")]}]) + "\n", "refuse"), "9"),
        Case("prices < 5 and > 50", case(product(price=[{"less than": [None, 5]}, {"greater than": [50, None]}])
                                          + "\n", "refuse"), "9"),
        Case("a range of -100..-10", case(product(price=[{"between": [-100, -10]}]) + "\n", "refuse"), "9"),
        Case("< 10 and > 100", case(product(price=[{"less than": [None, 10]}, {"greater than": [100, None]}])
                                     + "\n", "refuse"), "9"),
        Case("a reversed range 500..10", case(product(price=[{"between": [500, 10]}]) + "\n", "refuse"), "9"),
        Case("budget -50", case(voucher(budget=-50) + "\n", "refuse"), "9"),
        Case('voucher_type "galactic"', case(voucher(voucher_type="galactic") + "\n", "refuse"), "8"),
        Case("discount 5.0 (percentage)", case(voucher(discount_type="percentage", discount=5.0) + "\n", "refuse"),
             "12"),
        Case("a web record reusing a product's gold id", case(lines["product"][0] + "\n" + json.dumps(web_reusing_gold)
                                                              + "\n", "refuse"), "9"),
        Case("one task twice", case(lines["product"][0] + "\n" + lines["product"][0] + "\n", "accept")),
        Case("a shop task of 100 products", case(json.dumps({**s, "reward": (s["reward"] * 50)[:100]}) + "\n",
                                                 "refuse")),
        Case("10k attribute keys", case(product(attributes=[{f"k{i}": ["v"]} for i in range(10_000)]) + "\n",
                                        "refuse")),
        Case("--products 0", case(lines["product"][0] + "\n", "refuse", products=0), "20"),
        Case("--products -5", case(lines["product"][0] + "\n", "refuse", products=-5), "20"),
        Case("--products 2000 for 312 tasks", case(None, "either", products=2000,
                                                   args=[a for f in TASK_FILES for a in ("--tasks", str(f))]), "20"),
        Case("a task file that is a folder", case(None, "refuse", args=["--tasks", str(work)]), "15"),
        Case("a missing task file", case(None, "refuse", args=["--tasks", str(work / "nope.jsonl")]), "15"),
        Case("a data dir that is a file", _into(runner, app, work, good, "file"), "2"),
        Case("a data dir holding other files", _into(runner, app, work, good, "foreign"), "2"),
    ]
    if not quick:
        cases += [Case(f"SIGKILL during a rebuild ({when})", _killed_build(work, base, fingerprint, when), "2",
                       retry=False) for when in ("loading", "indexing")]
    for c in cases:
        surface.results.append(run_case("build", c))
    surface.notes.append("Each case builds into a copy of a good 600-product sandbox (`shoplab sandbox build`, in "
                         "process); lost = the copy changed or unreadable after a refused or killed build; over 1 s "
                         "= a refusal that took over a second (a build that is accepted takes its time); a traceback "
                         "instead of a clear error counts as a crash.")
    return surface


def _into(runner: Any, app: Any, work: Path, good: Path, kind: str) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        target = work / f"into_{kind}"
        if kind == "file":
            target.write_text("mine")
        else:
            target.mkdir(exist_ok=True)
            (target / "notes.txt").write_text("mine")
        before = _tree_hash(target) if target.is_dir() else hashlib.sha1(target.read_bytes()).hexdigest()
        result, seconds = timed(runner.invoke, app, ["sandbox", "build", "--data-dir", str(target), "--tasks", str(good),
                                                     "--products", "300"])
        after = _tree_hash(target) if target.is_dir() else hashlib.sha1(target.read_bytes()).hexdigest()
        out: dict[str, Any] = {"seconds": seconds, "lost": int(before != after),
                               "note": f"exit {getattr(result, 'exit_code', '?')}: "
                                       f"{' '.join(getattr(result, 'output', '').split())[:160]}"}
        exc = getattr(result, "exception", None)
        if exc is not None and not isinstance(exc, SystemExit):
            out["crash"] = f"traceback: {type(exc).__name__}: {str(exc)[:160]}"
        if getattr(result, "exit_code", 1) == 0:
            out["unexpected"] = "built over a folder that is not a sandbox"
        return out
    return run


def _killed_build(work: Path, base: Path, fingerprint: str, when: str) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        from sandbox import ShoppingWorld
        from sandbox.engines.base import SearchRequest

        target = work / f"killed_{when}"
        shutil.copytree(base, target)
        shoplab = Path(sys.executable).with_name("shoplab")
        argv = [str(shoplab), "sandbox", "build", "--data-dir", str(target), "--products", "20000", "--seed", "3",
                *[a for f in TASK_FILES for a in ("--tasks", str(f))]]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        staging = None
        while time.monotonic() < deadline and proc.poll() is None and staging is None:
            staging = next(iter(target.parent.glob(f".{target.name}.building-*")), None)
            time.sleep(0.01)
        if when == "indexing":
            while time.monotonic() < deadline and proc.poll() is None and staging is not None and \
                    not any(staging.glob("*.jsonl")):
                time.sleep(0.01)
            time.sleep(0.5)
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        intact = _tree_hash(target) == fingerprint and _searchable(target, ShoppingWorld, SearchRequest)
        note = "the build had finished before the kill" if finished else f"killed while {when}"
        shutil.rmtree(target, ignore_errors=True)
        for leftover in work.glob(f".{target.name}.*"):
            shutil.rmtree(leftover, ignore_errors=True)
        return {"seconds": 0.0, "lost": int(not intact and not finished), "note": note}
    return run


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha1()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != ".lock" and "tantivy-meta.lock" not in path.name and \
                ".tantivy-writer.lock" not in path.name:
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _searchable(folder: Path, world_cls: Any, request_cls: Any) -> bool:
    try:
        world = world_cls.open(folder)
    except Exception:  # noqa: BLE001
        return False
    try:
        return world.search(request_cls(terms=("case",))).total > 0 or bool(world.tasks)
    except Exception:  # noqa: BLE001
        return False
    finally:
        world.close()


# -- the report -----------------------------------------------------------------------------------------------
def run_report(world: Any, surfaces: tuple[str, ...] = SURFACES, quick: bool = False,
               work: Path | None = None) -> dict[str, Any]:
    """Replay the corpus of each surface against `world`; returns the summary and every case."""
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="hostile_")) if work is None else work
    done: list[Surface] = []
    seconds: dict[str, float] = {}
    try:
        for name in surfaces:
            started = time.perf_counter()
            print(f"[hostile] {name} ...", file=sys.stderr, flush=True)
            if name == "tools":
                done.append(tools_surface(world, quick))
            elif name == "parser":
                done.append(parser_surface(quick))
            elif name == "demo":
                done.append(demo_surface(world, quick))
            elif name == "runner":
                folder = work / "runner"
                folder.mkdir(parents=True, exist_ok=True)
                done.append(runner_surface(world, quick, folder, Path(world.data_dir)))
            elif name == "http":
                done.append(http_surface(world, quick))
            elif name == "build":
                folder = work / "build"
                folder.mkdir(parents=True, exist_ok=True)
                done.append(build_surface(quick, folder))
            else:
                raise ValueError(f"unknown surface {name!r}; choose from {', '.join(SURFACES)}")
            seconds[name] = round(time.perf_counter() - started, 1)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    summary = {s.name: {"tried": len(s.results), "crashes": sum(r.crash is not None for r in s.results),
                        "over_1s": sum(r.over for r in s.results), "lost": sum(r.lost for r in s.results),
                        "unexpected": sum(r.unexpected is not None for r in s.results),
                        "slowest_s": max((r.seconds for r in s.results), default=0.0), "seconds": seconds[s.name]}
               for s in done}
    return {"summary": summary, "notes": {s.name: s.notes for s in done},
            "cases": [asdict(r) | {"over_1s": r.over} for s in done for r in s.results]}


def markdown(report: dict[str, Any]) -> str:
    lines = ["| surface | hostile inputs tried | crashes | calls over 1 s | data lost | unexpected answers | "
             "slowest call (s) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in report["summary"].items():
        lines.append(f"| {name} | {s['tried']} | {s['crashes']} | {s['over_1s']} | {s['lost']} | {s['unexpected']} | "
                     f"{s['slowest_s']:.2f} |")
    total = {k: sum(s[k] for s in report["summary"].values()) for k in ("tried", "crashes", "over_1s", "lost",
                                                                        "unexpected")}
    lines.append(f"| **all** | **{total['tried']}** | **{total['crashes']}** | **{total['over_1s']}** | "
                 f"**{total['lost']}** | **{total['unexpected']}** | |")
    failing = [c for c in report["cases"] if c["crash"] or c["over_1s"] or c["lost"] or c["unexpected"]]
    shown = failing[:80]
    if failing:
        lines += ["", "Cases that missed the target (crash, over 1 s, lost) or answered unexpectedly:", "",
                  "| surface | case | item | crash | s | lost | unexpected | note |", "|---|---|---|---|---:|---:|---|---|"]
        for c in shown:
            cells = [c["surface"], c["case"], c["item"], c["crash"] or "", f"{c['seconds']:.2f}", str(c["lost"]),
                     c["unexpected"] or "", c["note"]]
            lines.append("| " + " | ".join(str(x).replace("|", "\\|").replace("\n", " ")[:160] for x in cells) + " |")
        if len(failing) > len(shown):
            lines.append(f"\n... and {len(failing) - len(shown)} more in hostile_report.json.")
    lines += ["", "How each surface is judged:", ""]
    for name, notes in report["notes"].items():
        lines += [f"- **{name}**: " + " ".join(notes)]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def opened_world(data_dir: Path | None, products: int) -> Iterator[Any]:
    from sandbox import ShoppingWorld, build_sandbox

    tmp = None
    if data_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="hostile_sb_"))
        data_dir = tmp / "sb"
        print(f"[hostile] building a {products}-product sandbox in {data_dir} ...", file=sys.stderr, flush=True)
        build_sandbox(data_dir, TASK_FILES, n_products=products, seed=0, progress=False)
    world = ShoppingWorld.open(data_dir)
    try:
        yield world
    finally:
        world.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _sources_sha1() -> str:
    """Which code was replayed (the tree changes under other people's hands): sha1 of the sources under test."""
    h = hashlib.sha1()
    for package in ("sandbox", "agents", "ui"):
        for path in sorted((ROOT / package).rglob("*.py")):
            h.update(path.relative_to(ROOT).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def main(
    data_dir: Path | None = typer.Option(None, help="A built sandbox; default: build a small one in a temporary "
                                                    "folder."),
    products: int = typer.Option(3000, help="Products of the sandbox built without --data-dir."),
    surfaces: str = typer.Option(",".join(SURFACES), help="Comma-separated: " + ", ".join(SURFACES)),
    quick: bool = typer.Option(False, help="A reduced corpus (no subprocess kills, smaller floods)."),
    out: Path = typer.Option(RESULTS / "hostile_report.json"),
    table: Path = typer.Option(RESULTS / "hostile_report.md"),
) -> None:
    """Replay hostile inputs against every surface; count crashes, calls over 1 s and data lost."""
    chosen = tuple(s.strip() for s in surfaces.split(",") if s.strip())
    started = time.perf_counter()
    with opened_world(data_dir, products) as world:
        report = run_report(world, chosen, quick)
        n_products = world.manifest.get("n_products")
    report = {"benchmark": "hostile_report", "data_dir": str(data_dir) if data_dir else None,
              "n_products": n_products, "quick": quick, "seconds": round(time.perf_counter() - started, 1),
              "load_average": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
              "sources_sha1": _sources_sha1(),
              "captured_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **report}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    table.parent.mkdir(parents=True, exist_ok=True)
    header = (f"Hostile-input report: {n_products} products, {report['seconds']} s, load average "
              f"{report['load_average'][0]} on {report['cpus']} CPUs ({report['captured_at']}; "
              f"`benchmarks/hostile_report.py{' --quick' if quick else ''}`).\n\n")
    table.write_text(header + markdown(report))
    print(json.dumps({k: report[k] for k in ("benchmark", "n_products", "quick", "seconds", "summary")}))


if __name__ == "__main__":
    typer.run(main)
