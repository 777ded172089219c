"""Hostile inputs (issue 17) that once took seconds or leaked an answer: each is refused quickly now."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from agents.react.parsing import parse_native_turn, parse_text_turn
from sandbox import ShoppingEnv
from sandbox.calculator import CalculationError, calculate
from sandbox.server import create_app
from sandbox.tools import parse_price_filter

FAST = 1.0  # seconds: any tool call or request answers within this or is refused


def timed(fn, *args):
    started = time.perf_counter()
    try:
        out = fn(*args)
    except Exception as exc:  # noqa: BLE001 - the exception is the result under test
        out = exc
    return out, time.perf_counter() - started


@pytest.mark.parametrize("expression", ["round(5, -1000000000000000)", "round(5, -10**7)", "round(5, 10**9)",
                                        "1e6**64", "round(1e15, 1.5)"])
def test_calculator_bombs_are_refused_at_once(expression):
    out, seconds = timed(calculate, expression)
    assert isinstance(out, CalculationError) and seconds < FAST, (out, seconds)


def test_calculator_still_rounds():
    assert calculate("round(3.14159, 2)") == 3.14 and calculate("round(1234.5, -2)") == 1200.0
    assert calculate("round(2.5)") == 2 and isinstance(calculate("round(2.5)"), int)


def test_quadratic_price_filter_is_refused_at_once():
    out, seconds = timed(parse_price_filter, "-" + " " * 19950 + "x")
    assert isinstance(out, ValueError) and "price must look like" in str(out) and seconds < 0.1
    assert parse_price_filter(" 10 - 500 ") == (10.0, 500.0)


def test_long_blank_tool_call_parses_in_linear_time():
    for blanks in (30_000, 60_000):  # both sides of the early length check
        out, seconds = timed(parse_text_turn, "<tool_call>[" + " " * blanks + "]</tool_call>")
        assert out.errors and seconds < 0.1, (blanks, seconds)
    fenced = parse_text_turn('<tool_call>```json\n[{"name": "terminate", "parameters": {}}]\n```</tool_call>')
    assert [c.name for c in fenced.calls] == ["terminate"] and not fenced.errors
    native, seconds = timed(parse_native_turn, "", [{"id": "a", "type": "function", "function": {
        "name": "find_product", "arguments": "{" + " " * 60_000 + "}"}}])
    assert native.errors and seconds < 0.1, seconds


def test_deeply_nested_or_overflowing_arguments_are_invalid_arguments(world):
    env = ShoppingEnv(world)
    nested = "[" * 9000 + "]" * 9000
    result, seconds = timed(env.step, "find_product", '{"q": ' + nested + "}")
    assert result.error_kind == "invalid_arguments" and seconds < FAST, result.observation
    overflow = env.step("calculate", {"expression": "1e6**64"})
    assert overflow.error_kind == "rejected" and "beyond" in overflow.observation


def test_tool_selection_is_bounded_and_the_live_score_is_not_shown(world):
    client = TestClient(create_app(world, max_episodes=4))
    started = time.perf_counter()
    many = client.post("/episodes", json={"tools": ["view_cart"] * 60_000})
    assert many.status_code == 422 and time.perf_counter() - started < 2 * FAST
    task = next(t for t in world.tasks.values() if t.intent.value == "product")
    eid = client.post("/episodes", json={"task_id": task.task_id}).json()["episode_id"]
    client.post(f"/episodes/{eid}/step", json={"tool": "recommend_product",
                                                "arguments": json.dumps({"product_ids": task.reward[0].product_id})})
    live = client.get(f"/episodes/{eid}/score")
    assert live.status_code == 409 and "gt" not in live.text


def test_a_chunked_body_over_the_limit_is_refused_without_reading_it_whole(world):
    import asyncio

    from sandbox.server import MAX_BODY_BYTES

    app = create_app(world, max_episodes=4)
    client = TestClient(app)
    eid = client.post("/episodes").json()["episode_id"]
    pulled = 0

    async def receive():  # a chunked upload of 200 MB (no Content-Length), 1 MB per message
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b" " * 1_000_000, "more_body": pulled < 200}

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": f"/episodes/{eid}/step", "raw_path": f"/episodes/{eid}/step".encode(), "query_string": b"",
             "root_path": "", "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 5631), "app": app}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 413 and b"larger than" in body
    assert pulled <= 2, f"{pulled} MB were read before refusing"
    declared = client.post(f"/episodes/{eid}/step", content=b" " * (MAX_BODY_BYTES + 1))
    assert declared.status_code == 413
    ok = client.post(f"/episodes/{eid}/step", json={"tool": "view_cart", "arguments": {}})
    assert ok.status_code == 200 and ok.json()["ok"]


def test_a_failed_rebuild_leaves_the_previous_sandbox_intact(tmp_path, monkeypatch):
    from sandbox import ShoppingWorld, build_sandbox
    from sandbox.engines.base import SearchRequest
    from tests.conftest import TASK_FILES

    data_dir = tmp_path / "sb"
    build_sandbox(data_dir, TASK_FILES[:1], n_products=800, seed=0, progress=False)
    before = sorted(p.name for p in data_dir.iterdir())

    from sandbox.engines import tantivy_backend

    def broken(self, rows):
        raise OSError("disk full")

    monkeypatch.setattr(tantivy_backend.TantivyBackend, "index_prepared", broken)
    with pytest.raises(OSError, match="disk full"):
        build_sandbox(data_dir, TASK_FILES[1:2], n_products=900, seed=1, progress=False)
    monkeypatch.undo()
    assert sorted(p.name for p in data_dir.iterdir()) == before
    assert not list(tmp_path.glob(".sb.*")), "the staging folder was left behind"
    world = ShoppingWorld.open(data_dir)
    try:
        assert world.manifest["n_products"] == 800 and world.manifest["seed"] == 0
        assert world.search(SearchRequest(terms=("case",))).total > 0
    finally:
        world.close()


def test_a_build_never_replaces_a_folder_that_is_not_a_sandbox(tmp_path):
    from sandbox import build_sandbox
    from tests.conftest import TASK_FILES

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a sandbox"):
        build_sandbox(tmp_path, TASK_FILES[:1], n_products=500, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("change, fragment", [({"voucher_type": "galactic"}, "voucher_type"),
                                              ({"discount_type": "percentage", "discount": 5.0}, "discount"),
                                              ({"budget": -50}, "budget"), ({"threshold": float("nan")}, "threshold")])
def test_a_voucher_that_would_break_pricing_is_refused_with_its_line(tmp_path, change, fragment):
    from sandbox.tasks import TaskFormatError, load_task_file
    from tests.conftest import DATA_DIR

    lines = (DATA_DIR / "synthesize_voucher_dev.jsonl").read_text(encoding="utf-8").splitlines()
    bad = json.loads(lines[1])
    bad["voucher"].update(change)
    path = tmp_path / "vouchers.jsonl"
    path.write_text("\n".join([lines[0], json.dumps(bad)]) + "\n", encoding="utf-8")
    with pytest.raises(TaskFormatError, match=rf"vouchers.jsonl:2: .*{fragment}"):
        load_task_file(path)


def test_episodes_are_bounded_by_bytes_and_expire_when_idle(world):
    from sandbox.server import _EpisodeStore

    now = [0.0]
    store = _EpisodeStore(max_episodes=100, max_bytes=15_000, idle_seconds=60, clock=lambda: now[0])
    first, second = store.add(ShoppingEnv(world)), store.add(ShoppingEnv(world))
    ids = ",".join(p["product_id"] for p in world.filler_products(20))
    for _ in range(3):  # ~3 x 20 product details: the oldest episode goes once the budget is passed
        second.env.step("view_product_information", {"product_ids": ids})
    assert store.evicted == 1 and store.bytes == second.size > 15_000  # only the growing one is left
    with pytest.raises(Exception, match="unknown episode"):
        store.get(first.episode_id)
    assert store.get(second.episode_id) is second  # the episode that grew is never its own victim
    now[0] += 61
    assert len(store) == 0 and store.expired == 1 and store.bytes == 0
    with pytest.raises(Exception, match="idle"):
        store.get(second.episode_id)


def test_a_loopback_server_refuses_other_host_names(world):
    from sandbox.server import LOOPBACK_HOSTS

    client = TestClient(create_app(world, max_episodes=2, allowed_hosts=LOOPBACK_HOSTS))
    rebound = client.get("/health", headers={"host": "attacker.example:5631"})
    assert rebound.status_code == 400 and "not served here" in rebound.json()["error"]
    for host in ("127.0.0.1:5631", "localhost", "[::1]:5631"):
        assert client.get("/health", headers={"host": host}).status_code == 200, host
