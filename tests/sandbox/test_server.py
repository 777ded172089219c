"""The sandbox's HTTP API: ShoppingBench's search endpoints, episodes, hostile input, a real server."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sandbox.catalogue import build_sandbox
from sandbox.data_model import DETAIL_FIELDS, SEARCH_HIT_FIELDS
from sandbox.server import create_app
from sandbox.tools import TOOLS
from sandbox.world import ShoppingWorld
from tests.sandbox.live_server import serving

DATA = Path(__file__).resolve().parents[2] / "data" / "shoppingbench"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("server_sandbox")
    build_sandbox(data_dir, sorted(DATA.glob("*.jsonl")), n_products=3000, seed=0, progress=False)
    w = ShoppingWorld.open(data_dir)
    yield w
    w.close()


@pytest.fixture(scope="module")
def client(world):
    with TestClient(create_app(world, max_episodes=50)) as c:
        yield c


@pytest.fixture(scope="module")
def product_task(world):
    return next(t for t in world.tasks.values() if t.intent.value == "product")


KINDS = {"invalid_arguments", "unknown_tool", "not_found", "rejected", "episode_over", "unavailable", "internal"}


def _error_of(resp, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "kind"} and body["kind"] in KINDS, body
    assert "Traceback" not in body["error"]
    return body["error"]


# -- ShoppingBench-compatible endpoints ------------------------------------------------------------
def test_find_product_shape_and_filters(client):
    resp = client.get("/find_product", params={"q": "phone case", "page": 1, "price": "10-500", "service": "COD"})
    assert resp.status_code == 200
    hits = resp.json()
    assert isinstance(hits, list) and 0 < len(hits) <= 10
    for h in hits:
        assert tuple(h) == SEARCH_HIT_FIELDS
        assert 10 <= h["price"] <= 500 and "COD" in h["service"]


def test_find_product_sort_and_shop(client):
    hits = client.get("/find_product", params={"q": "phone case", "sort": "priceasc"}).json()
    prices = [h["price"] for h in hits]
    assert prices == sorted(prices) and prices
    shop = hits[0]["shop_id"]
    in_shop = client.get("/find_product", params={"q": "phone case", "shop_id": shop}).json()
    assert in_shop and {h["shop_id"] for h in in_shop} == {shop}


def test_plus_in_query_means_space(client):
    a = client.get("/find_product?q=" + urllib.parse.quote_plus("phone case") + "&page=1").json()
    b = client.get("/find_product", params={"q": "phone case"}).json()
    assert a == b and a


def test_no_result_is_empty_list(client):
    assert client.get("/find_product", params={"q": "zzqxv qqzzyx"}).json() == []
    assert client.get("/find_product", params={"q": "phone case", "shop_id": "no_such_shop"}).json() == []


def test_view_product_information(client, product_task):
    gold = product_task.reward[0].product_id
    resp = client.get("/view_product_information", params={"product_ids": f"{gold},0000000001"})
    assert resp.status_code == 200
    items = resp.json()
    assert [i["product_id"] for i in items] == [gold]  # unknown ids are left out
    assert tuple(items[0]) == DETAIL_FIELDS
    assert client.get("/view_product_information", params={"product_ids": "0000000001"}).json() == []


@pytest.mark.parametrize("query, fragment", [
    ({"q": "shoes", "page": "99"}, "page"),
    ({"q": "shoes", "page": "abc"}, "page"),
    ({"q": "shoes", "price": "abc"}, "price"),
    ({"q": "shoes", "price": "500-10"}, "lower bound"),
    ({"q": "shoes", "sort": "random"}, "sort"),
    ({"q": "shoes", "service": "teleport"}, "service"),
    ({"q": "a " * 5000}, "at most 500"),
    ({"q": "   "}, "empty"),
    ({"q": "!!! ???"}, "searchable"),
    ({}, "q"),
])
def test_find_product_hostile_input(client, query, fragment):
    assert fragment in _error_of(client.get("/find_product", params=query), 422)


def test_view_product_hostile_input(client):
    assert "at most 20" in _error_of(client.get("/view_product_information",
                                                params={"product_ids": ",".join(["1"] * 21)}), 422)
    assert "not a product id" in _error_of(client.get("/view_product_information",
                                                      params={"product_ids": "1; DROP TABLE"}), 422)
    assert "product_ids" in _error_of(client.get("/view_product_information"), 422)


# -- catalogue endpoints --------------------------------------------------------------------------
def test_health_tools_tasks_openapi(client, world):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["tasks"] == len(world.tasks)
    tools = client.get("/tools").json()
    assert [t["function"]["name"] for t in tools] == list(TOOLS)
    assert {t["function"]["name"]: t["kind"] for t in tools} == {n: s.kind for n, s in TOOLS.items()}
    tasks = client.get("/tasks", params={"intent": "shop"}).json()
    assert tasks and {t["intent"] for t in tasks} == {"shop"}
    assert all(set(t) == {"task_id", "intent", "query"} for t in tasks)  # no rewards
    assert len(client.get("/tasks").json()) == len(world.tasks)
    assert "intent" in _error_of(client.get("/tasks", params={"intent": "bogus"}), 422)
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/find_product", "/view_product_information", "/episodes", "/episodes/{episode_id}/step",
                 "/episodes/{episode_id}", "/episodes/{episode_id}/score", "/tasks", "/tools", "/health"):
        assert path in paths
    assert "delete" in paths["/episodes/{episode_id}"]
    assert _error_of(client.get("/no/such/route"), 404)


# -- episodes --------------------------------------------------------------------------------------
def test_episode_hostile_steps_keep_the_episode_going(client):
    created = client.post("/episodes", json={"max_steps": 10})
    assert created.status_code == 200
    eid = created.json()["episode_id"]
    assert created.json()["instruction"] == ""
    step = f"/episodes/{eid}/step"

    bad_calls = [
        ({"tool": "teleport", "arguments": {}}, "unknown tool"),
        ({"tool": "find_product", "arguments": "{not json"}, "not valid JSON"),
        ({"tool": "find_product", "arguments": "[1, 2]"}, "JSON object"),
        ({"tool": "find_product", "arguments": {"q": "shoes", "page": 99}}, "page"),
        ({"tool": "find_product", "arguments": {"q": "shoes", "price": "abc"}}, "price"),
        ({"tool": "find_product", "arguments": {"q": "x" * 10_000}}, "at most 500"),
        ({"tool": "find_product", "arguments": {"q": "shoes", "hack": 1}}, "unknown parameter"),
        ({"tool": "find_product", "arguments": {"q": "y" * 30_000}}, "characters long"),
    ]
    for body, fragment in bad_calls:
        resp = client.post(step, json=body)
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert out["ok"] is False and out["done"] is False
        assert out["observation"].startswith("Error: ") and fragment in out["error"], out
    # A good call still works after all that, and every call counted as a step.
    out = client.post(step, json={"tool": "find_product", "arguments": '{"q": "phone case"}'}).json()
    assert out["ok"] and json.loads(out["observation"])
    assert out["steps"] == len(bad_calls) + 1
    # Malformed HTTP bodies are rejected before the episode and do not count.
    assert _error_of(client.post(step, content=b"{oops", headers={"content-type": "application/json"}), 422)
    assert "tool" in _error_of(client.post(step, json={"arguments": {}}), 422)
    assert client.get(f"/episodes/{eid}").json()["steps"] == len(bad_calls) + 1
    # The step limit ends the episode.
    client.post(step, json={"tool": "view_cart"})
    last = client.post(step, json={"tool": "view_cart"}).json()
    assert last["ok"] is False and last["done"] is True and "step limit" in last["error"]
    # No task: nothing to score.
    assert "no task" in _error_of(client.get(f"/episodes/{eid}/score"), 400)
    assert client.delete(f"/episodes/{eid}").json() == {"deleted": eid}


def test_unknown_episode_and_task(client):
    assert "unknown episode" in _error_of(client.post("/episodes/nope/step", json={"tool": "view_cart"}), 404)
    assert "unknown episode" in _error_of(client.get("/episodes/nope"), 404)
    assert "unknown episode" in _error_of(client.get("/episodes/nope/score"), 404)
    assert "unknown episode" in _error_of(client.delete("/episodes/nope"), 404)
    assert "unknown task" in _error_of(client.post("/episodes", json={"task_id": "product-nope"}), 404)
    assert "unknown tools" in _error_of(client.post("/episodes", json={"tools": ["teleport"]}), 422)
    assert "max_steps" in _error_of(client.post("/episodes", json={"max_steps": 0}), 422)


def test_episode_cart_and_restricted_tools(client, product_task):
    gold = product_task.reward[0].product_id
    created = client.post("/episodes", json={"tools": ["find_product", "add_to_cart", "view_cart"]}).json()
    assert [t["function"]["name"] for t in created["tools"]] == ["find_product", "add_to_cart", "view_cart"]
    step = f"/episodes/{created['episode_id']}/step"
    assert client.post(step, json={"tool": "add_to_cart", "arguments": {"product_id": gold, "quantity": 2}}).json()["ok"]
    assert "unknown tool" in client.post(step, json={"tool": "recommend_product",
                                                     "arguments": {"product_ids": gold}}).json()["error"]
    state = client.get(f"/episodes/{created['episode_id']}", params={"history": True}).json()
    assert state["cart"]["items"][0]["product_id"] == gold and state["cart"]["items"][0]["quantity"] == 2
    assert len(state["history"]) == 2


def test_eviction_of_oldest_episodes(world):
    with TestClient(create_app(world, max_episodes=3, max_client_episodes=3)) as c:  # one client may fill it
        ids = [c.post("/episodes").json()["episode_id"] for _ in range(3)]
        c.get(f"/episodes/{ids[0]}")  # touched: now the most recently used
        ids.append(c.post("/episodes").json()["episode_id"])
        assert c.get(f"/episodes/{ids[1]}").status_code == 404
        assert all(c.get(f"/episodes/{i}").status_code == 200 for i in (ids[0], ids[2], ids[3]))
        assert c.get("/health").json()["episodes"] == 3


def test_full_episode_scores_success(client, product_task):
    created = client.post("/episodes", json={"task_id": product_task.task_id}).json()
    assert created["instruction"] == product_task.query and created["intent"] == "product"
    eid = created["episode_id"]
    step = f"/episodes/{eid}/step"
    found = client.post(step, json={"tool": "find_product", "arguments": {"q": product_task.query}}).json()
    assert found["ok"], found
    gold = product_task.reward[0].product_id
    rec = client.post(step, json={"tool": "recommend_product", "arguments": json.dumps({"product_ids": gold})}).json()
    assert rec["ok"], rec
    # A live episode's score would reveal whether the recommendation is the gold: refused until it ends.
    assert "still running" in _error_of(client.get(f"/episodes/{eid}/score"), 409)
    end = client.post(step, json={"tool": "terminate", "arguments": {"status": "success"}}).json()
    assert end["done"] is True
    state = client.get(f"/episodes/{eid}").json()
    assert state["recommended"] == [gold] and state["done"] and state["terminate_status"] == "success"
    score = client.get(f"/episodes/{eid}/score")  # loads the title model: the only score call of the module
    assert score.status_code == 200, score.text
    assert score.json()["success"] is True and score.json()["gt"] == 1.0


# -- a real server, called the way ShoppingBench's toolkit calls it ------------------------------------
@pytest.fixture(scope="module")
def live_url(world):
    with serving(create_app(world)) as port:
        yield f"http://127.0.0.1:{port}"


def _get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_real_server_like_shoppingbench_toolkit(live_url):
    q = "phone case for oppo"
    status, hits = _get(f"{live_url}/find_product?q={urllib.parse.quote_plus(q)}&page=1&price=10-500&service=COD")
    assert status == 200 and isinstance(hits, list) and hits
    for h in hits:
        assert set(h) == set(SEARCH_HIT_FIELDS)
        assert 10 <= h["price"] <= 500 and "COD" in h["service"]
    ids = ",".join(h["product_id"] for h in hits[:3])
    status, details = _get(f"{live_url}/view_product_information?product_ids={ids}")
    assert status == 200 and [d["product_id"] for d in details] == ids.split(",")
    assert all(set(d) == set(DETAIL_FIELDS) for d in details)

    status, err = _get(f"{live_url}/find_product?q=shoes&page=99")
    assert status == 422 and "page" in err["error"]
    status, err = _get(f"{live_url}/find_product?q={urllib.parse.quote_plus('long words ' * 1000)}&page=1")
    assert status == 422 and "at most 500" in err["error"]
    status, err = _get(f"{live_url}/episodes/does-not-exist")
    assert status == 404 and "unknown episode" in err["error"] and err["kind"] == "not_found"

    req = urllib.request.Request(f"{live_url}/episodes", data=b"{}", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        eid = json.loads(resp.read())["episode_id"]
    body = json.dumps({"tool": "find_product", "arguments": '{"q": "phone case", "price": "abc"}'}).encode()
    req = urllib.request.Request(f"{live_url}/episodes/{eid}/step", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        out = json.loads(resp.read())
    assert out["ok"] is False and "price" in out["error"] and not out["done"]


def test_real_server_concurrent_requests(live_url):
    results: list[int] = []

    def worker() -> None:
        for _ in range(5):
            status, _body = _get(f"{live_url}/find_product?q=phone+case&page=1")
            results.append(status)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 40


def test_engine_failure_is_a_json_500_without_traceback(world, monkeypatch):
    def boom(*_args, **_kwargs):
        raise RuntimeError("index is gone")

    monkeypatch.setattr(world, "search", boom)
    monkeypatch.setattr(world, "tasks_by_intent", boom)
    with TestClient(create_app(world), raise_server_exceptions=False) as c:
        assert "index is gone" in _error_of(c.get("/find_product", params={"q": "shoes"}), 500)
        assert _error_of(c.get("/tasks", params={"intent": "shop"}), 500) == "internal error (RuntimeError)"
        eid = c.post("/episodes").json()["episode_id"]
        out = c.post(f"/episodes/{eid}/step", json={"tool": "find_product", "arguments": {"q": "shoes"}}).json()
        assert out["ok"] is False and not out["done"] and "index is gone" in out["error"]
