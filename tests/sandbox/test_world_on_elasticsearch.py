"""The whole world on the Elasticsearch backend: build, open, search through the tools, solve tasks."""

from __future__ import annotations

from pathlib import Path

from agents.scripted import OracleAgent
from sandbox import ShoppingEnv, ShoppingWorld
from sandbox.catalogue import build_sandbox
from tests.es_support import CompatHeadersNode, es_server_url  # noqa: F401 (fixture)

TASKS = sorted(Path(__file__).resolve().parents[2].glob("data/shoppingbench/*.jsonl"))


def test_build_and_solve_on_elasticsearch(es_server_url, tmp_path, similarity):  # noqa: F811
    options = {"url": es_server_url, "index": "shoplab-world", "node_class": CompatHeadersNode}
    report = build_sandbox(tmp_path, TASKS, n_products=4000, backend="elasticsearch", es_options=options,
                           progress=False)
    assert report.backend == "elasticsearch" and report.n_products == 4000

    world = ShoppingWorld.open(tmp_path, es_options={"node_class": CompatHeadersNode})
    assert world.backend.name == "elasticsearch" and world.backend.count() == 4000

    env = ShoppingEnv(world)
    hits = env.step("find_product", {"q": "rubber wheel", "price": "10-500", "service": "COD"})
    assert hits.ok and hits.data
    assert all(10 <= h["price"] <= 500 and "COD" in h["service"] for h in hits.data)
    assert not env.step("find_product", {"q": "wheel", "page": 99}).ok

    oracle = OracleAgent(similarity=similarity)
    for intent in ("product", "shop", "voucher", "web"):
        task = world.tasks_by_intent(intent)[0]
        episode = ShoppingEnv(world, task)
        oracle.run_episode(episode)
        assert episode.score(similarity).success, intent
