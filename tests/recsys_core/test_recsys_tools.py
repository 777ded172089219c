"""The recommender service and its agent tools (rank_products, similar_products, recommend_next), on a
tiny simulation of the test sandbox with smoke-sized ranker (DIN), tokenizer (RQ-VAE) and retriever
(TIGER) runs trained here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from agents.llm import ChatResult
from agents.react import ReactAgent, ReactConfig
from recsys_core.config import ExperimentConfig
from recsys_core.data.simulated import ItemFeaturizer, load_items
from recsys_core.registry import get_model
from recsys_core.service import RecsysService, write_service
from recsys_core.simulate import simulate
from recsys_core.tools import RecsysToolkit
from recsys_core.trainer import Trainer
from sandbox import ShoppingEnv, load_toolkits


def _train(model: str, run_dir: Path, overrides: list[str]) -> Path:
    cfg = ExperimentConfig.from_yaml(get_model(model).smoke_config, overrides)
    Trainer(cfg, run_dir).fit()
    return run_dir


@pytest.fixture(scope="module")
def service_dir(world, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recsys_service")
    sim = root / "sim"
    # No fillers: the sandbox's 1,988 fillers stay outside the universe, as unknown catalogue products.
    simulate(world, sim, n_users=300, n_fillers=0, seed=0, sessions_per_user=6, progress=False)
    data = ["data.kind=simulated", f"data.path={sim}"]
    ranker = _train("din", root / "din", data + ["train.epochs=1", "train.max_steps=40", "train.batch_size=256"])
    tokenizer = _train("rqvae", root / "rqvae", data + ["train.epochs=4", "train.eval_every=4",
                                                        "train.batch_size=512"])
    retriever = _train("tiger", root / "tiger", data + ["data.codes=null", f"data.sid_run={tokenizer}",
                                                        "train.epochs=1", "train.max_steps=40",
                                                        "task_params.valid_users=50"])
    mpq = _train("mpq", root / "mpq", data + ["train.epochs=4", "train.eval_every=4", "train.batch_size=512"])
    reasoner = _train("reg4rec", root / "reg4rec", data + ["data.codes=null", f"data.sid_run={mpq}",
                                                          "train.epochs=1", "train.max_steps=30",
                                                          "task_params.valid_users=30", "task_params.test_users=30"])
    write_service(root / "service", sim=sim, ranker=ranker, tokenizer=tokenizer, retriever=retriever,
                  reasoner=reasoner)
    return root / "service"


@pytest.fixture(scope="module")
def service(service_dir, world) -> RecsysService:
    return RecsysService.load(service_dir, world)


@pytest.fixture(scope="module")
def universe(service) -> list[dict[str, Any]]:
    return service.items


@pytest.fixture(scope="module")
def outside_ids(service, world) -> list[str]:
    """Catalogue products that are not in the simulated universe (the sandbox's fillers)."""
    ids = [p["product_id"] for p in world.filler_products(20)]
    assert all(service.featurizer.index_of(i) == 0 for i in ids)
    return ids


@pytest.fixture(scope="module")
def recsys_toolkit(world, service_dir) -> RecsysToolkit:
    [kit] = load_toolkits({"recsys": {"service": str(service_dir)}}, world)
    return kit


@pytest.fixture
def env(world, recsys_toolkit):
    return ShoppingEnv(world, toolkits=[recsys_toolkit])


# -- the service ---------------------------------------------------------------------------------------
def test_rank_products_scores_every_candidate_with_the_ranker(service, universe, outside_ids):
    ids = [it["product_id"] for it in universe[:12]] + outside_ids[:3]
    history = [it["product_id"] for it in universe[100:120]]
    ranked = service.rank_products(ids + ids[:2], history=history)  # duplicates are ranked once
    assert sorted(r["product_id"] for r in ranked) == sorted(ids)
    scores = [r["score"] for r in ranked]
    assert scores == sorted(scores, reverse=True) and all(0.0 < s < 1.0 for s in scores)
    # the scores are the ranker task's click probabilities for the products' catalogue fields
    task, model = service.ranker()
    records = service.world.products(ids + history)
    expected = task.score(model, service.featurizer.fields_matrix([records[p] for p in history]),
                          service.featurizer.fields_matrix([records[p] for p in ids]))
    by_id = {r["product_id"]: r["score"] for r in ranked}
    np.testing.assert_allclose([by_id[p] for p in ids], expected, atol=1e-5)
    # products outside the universe are scored from their category / shop / brand / price (item id 0)
    assert all(service.featurizer.fields_for(records[p])[0] == 0 for p in outside_ids[:3])
    other = service.rank_products(ids, history=[it["product_id"] for it in universe[2000:2020]])
    assert [r["score"] for r in other] != scores  # the history is used


def test_a_knowledge_aware_ranker_serves_rank_products(service_dir, world, universe, outside_ids, tmp_path):
    """CoCo (the LLM's product knowledge fused into DIN) trained on the same simulation serves the tool."""
    root = service_dir.parent
    coco = _train("coco", root / "coco", ["data.kind=simulated", f"data.path={root / 'sim'}", "data.synthetic=null",
                                          "data.max_len=20", "task_params.resolution.variants=[]", "task_params.knowledge.max_tokens=12",
                                          f"task_params.knowledge.root={root / 'knowledge'}", "train.epochs=1",
                                          "train.max_steps=30", "train.batch_size=256"])
    write_service(tmp_path / "svc", sim=root / "sim", ranker=coco)  # a ranker-only service
    served = RecsysService.load(tmp_path / "svc", world)
    with pytest.raises(ValueError, match="no semantic-ID tokenizer: rebuild it with"):
        served.similar_products(universe[0]["product_id"])
    with pytest.raises(ValueError, match="no retriever: rebuild it with"):
        served.recommend_next([universe[0]["product_id"]])
    ids = [it["product_id"] for it in universe[:10]] + outside_ids[:2]
    history = [it["product_id"] for it in universe[100:110]]
    ranked = served.rank_products(ids, history=history)
    assert sorted(r["product_id"] for r in ranked) == sorted(ids)
    task, model = served.ranker()
    assert type(model).__name__ == "CoCo" and model.user_context == "history"
    before = {r["product_id"]: r["score"] for r in ranked}
    with torch.no_grad():
        model.item_keys.zero_()  # without the LLM's knowledge the scores move: it reaches the tool
    after = {r["product_id"]: r["score"] for r in served.rank_products(ids, history=history)}
    assert max(abs(before[p] - after[p]) for p in ids) > 1e-4
    with pytest.raises(ValueError, match="unknown product ids: nope"):
        served.rank_products(["nope"])


def test_rank_products_rejects_bad_input_with_what_to_do(service, universe):
    with pytest.raises(ValueError, match="product_ids is empty"):
        service.rank_products([])
    with pytest.raises(ValueError, match="unknown product ids: nope1, nope2"):
        service.rank_products([universe[0]["product_id"], "nope1", "nope2"])
    with pytest.raises(ValueError, match="unknown product ids: ghost"):
        service.rank_products([universe[0]["product_id"]], history=["ghost"])
    with pytest.raises(ValueError, match="at most 100"):
        service.rank_products([it["product_id"] for it in universe[:101]])
    with pytest.raises(ValueError, match="list of product ids"):
        service.rank_products({"a": 1})


def test_similar_products_share_the_longest_semantic_id_prefix(service, universe):
    codes, _ = service.codes()
    index = 10
    target = universe[index - 1]["product_id"]
    similar = service.similar_products(target, 6)
    assert len(similar) == 6 and target not in [s["product_id"] for s in similar]
    shared = np.cumprod(codes[1:] == codes[index], axis=1).sum(axis=1)
    shared[index - 1] = -1
    returned = [service.featurizer.index_of(s["product_id"]) for s in similar]
    assert [s["shared_prefix"] for s in similar] == [int(shared[i - 1]) for i in returned]
    assert min(s["shared_prefix"] for s in similar) >= 1
    assert min(s["shared_prefix"] for s in similar) >= np.delete(shared, np.array(returned) - 1).max()
    assert all(s["title"] == universe[i - 1]["title"] for s, i in zip(similar, returned, strict=True))


def test_similar_products_outside_the_universe_or_unknown(service, outside_ids):
    with pytest.raises(ValueError, match="outside the recommender's item universe"):
        service.similar_products(outside_ids[0], 5)
    with pytest.raises(ValueError, match="unknown product ids: zzz"):
        service.similar_products("zzz", 5)
    with pytest.raises(ValueError, match="k must be an integer between 1 and 100"):
        service.similar_products(outside_ids[0], 0)


def test_recommend_next_returns_k_catalogue_products(service, universe, world, outside_ids):
    history = [it["product_id"] for it in universe[:4]]
    recs = service.recommend_next(history + [outside_ids[0]], 5)
    assert len(recs) == 5 and len({r["product_id"] for r in recs}) == 5
    assert not {r["product_id"] for r in recs} & set(history)
    assert set(world.products([r["product_id"] for r in recs])) == {r["product_id"] for r in recs}
    with pytest.raises(ValueError, match="none of the 2 history products is in the recommender's item universe"):
        service.recommend_next(outside_ids[:2], 5)
    with pytest.raises(ValueError, match="history is empty"):
        service.recommend_next([], 5)


# -- the tools in an episode ---------------------------------------------------------------------------
def test_tools_answer_through_the_environment(env, universe, outside_ids):
    ids = [it["product_id"] for it in universe[:5]]
    ranked = env.step("rank_products", {"product_ids": ids, "context": {"history": ids[:2]}})
    assert ranked.ok and [r["product_id"] for r in ranked.data["ranked"]] != [] and \
        sorted(r["product_id"] for r in ranked.data["ranked"]) == sorted(ids)
    as_text = env.step("rank_products", json.dumps({"product_ids": ",".join(ids)}))  # an LLM's string form
    assert as_text.ok and len(as_text.data["ranked"]) == 5
    similar = env.step("similar_products", {"product_id": int(ids[0]), "k": 3})
    assert similar.ok and len(similar.data["similar"]) == 3
    nxt = env.step("recommend_next", {"history": ids[:3] + [outside_ids[0]], "k": 4})
    assert nxt.ok and len(nxt.data["recommendations"]) == 4
    assert outside_ids[0] in nxt.data["note"] and "ignored" in nxt.data["note"]


@pytest.mark.parametrize("tool,args,expected", [
    ("rank_products", {"product_ids": []}, "give at least one product id"),
    ("rank_products", {"product_ids": ["nope"]}, "unknown product ids: nope"),
    ("rank_products", {"product_ids": [str(i) for i in range(101)]}, "at most 100 product ids"),
    ("rank_products", {"product_ids": ["1"], "context": {"histroy": []}}, "unknown context keys"),
    ("rank_products", {"product_ids": ["a b"]}, "not a product id"),
    ("similar_products", {"product_id": "nope", "k": 3}, "unknown product ids: nope"),
    ("similar_products", {"product_id": "1", "k": 0}, "greater than or equal to 1"),
    ("similar_products", {"product_id": "1", "k": 21}, "less than or equal to 20"),
    ("similar_products", {"product_id": ["1", "2"]}, "exactly one product_id"),
    ("recommend_next", {"history": [], "k": 3}, "give at least one product id"),
    ("recommend_next", {"history": ["1"], "k": True}, "k must be an integer"),
    ("recommend_next", {"history": ["1"], "extra": 1}, "unknown parameter"),
])
def test_bad_tool_calls_are_readable_errors_and_the_episode_goes_on(env, universe, tool, args, expected):
    result = env.step(tool, args)
    assert not result.ok and result.observation.startswith("Error:") and expected in result.observation
    assert not env.state.done
    assert env.step("similar_products", {"product_id": universe[0]["product_id"], "k": 2}).ok


def test_similar_products_outside_the_universe_is_a_tool_error(env, outside_ids):
    result = env.step("similar_products", {"product_id": outside_ids[0]})
    assert not result.ok and "outside the recommender's item universe" in result.observation


def test_no_configured_service_is_a_tool_error(world, universe):
    e = ShoppingEnv(world, toolkits=[RecsysToolkit()])
    result = e.step("rank_products", {"product_ids": [universe[0]["product_id"]]})
    assert not result.ok and "no recommender service is configured" in result.observation
    assert result.error_kind == "unavailable"
    assert e.step("calculate", {"expression": "1+1"}).ok
    e = ShoppingEnv(world, toolkits=[RecsysToolkit("/nonexistent/service")])
    result = e.step("recommend_next", {"history": [universe[0]["product_id"]]})
    assert not result.ok and "could not be loaded" in result.observation and "build-service" in result.observation


class Scripted:
    def __init__(self, replies: list[str]):
        self.replies = list(replies)

    def chat(self, messages, tools=None, sampling=None) -> ChatResult:
        text = self.replies.pop(0) if self.replies else "<response>done</response>"
        return ChatResult(text=text, prompt_tokens=10, completion_tokens=5, finish_reason="stop")


def test_react_agent_config_names_the_service(world, service_dir, universe):
    ids = [it["product_id"] for it in universe[:3]]
    call = {"name": "rank_products", "parameters": {"product_ids": ids}}
    model = Scripted([f"<tool_call>[{json.dumps(call)}]</tool_call>"])
    config = ReactConfig(tools=["shoppingbench", "rank_products"],
                         toolkits={"recsys": {"service": str(service_dir)}})
    env = ShoppingEnv(world, next(t for t in world.tasks.values() if t.intent.value == "product"),
                      toolkits=load_toolkits(config.toolkits, world))
    env.reset()
    info = ReactAgent(model, config).run_episode(env)
    assert "- rank_products:" in info["messages"][0]["content"]
    assert "- similar_products:" not in info["messages"][0]["content"]
    observation = json.loads(info["messages"][3]["content"])
    assert sorted(r["product_id"] for r in observation["ranked"]) == sorted(ids)


# -- building a service ------------------------------------------------------------------------------
def test_build_service_checks_the_runs_fit_together(service_dir, tmp_path):
    spec = json.loads((service_dir / "service.json").read_text())
    root = service_dir.parent
    assert spec["models"] == {"ranker": "din", "tokenizer": "rqvae", "retriever": "tiger", "reasoner": "reg4rec"}
    assert not Path(spec["ranker"]).is_absolute() and not Path(spec["reasoner"]).is_absolute()  # the tree can move
    with pytest.raises(ValueError, match="give a reasoning_retrieval run"):
        write_service(tmp_path / "s", sim=root / "sim", ranker=root / "din", tokenizer=root / "rqvae",
                      retriever=root / "tiger", reasoner=root / "tiger")
    with pytest.raises(ValueError, match="give a ctr run"):
        write_service(tmp_path / "s", sim=root / "sim", ranker=root / "tiger", tokenizer=root / "rqvae",
                      retriever=root / "tiger")
    with pytest.raises(FileNotFoundError, match="has no codes.npy"):
        write_service(tmp_path / "s", sim=root / "sim", ranker=root / "din", tokenizer=root / "din",
                      retriever=root / "tiger")
    with pytest.raises(FileNotFoundError, match="not a recsys service folder"):
        RecsysService.load(tmp_path / "nothing", None)
    from recsys_core.cli import app

    result = CliRunner().invoke(app, ["build-service", "--sim", str(root / "sim"), "--ranker", str(root / "din"),
                                      "--tokenizer", str(root / "rqvae"), "--retriever", str(root / "din"),
                                      "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "generative_retrieval" in result.output
    assert ItemFeaturizer.load(root / "sim").n_items == len(load_items(root / "sim")) == spec["n_items"]


def test_latency_benchmark_reports_batched_and_unbatched_modes(service_dir, small_sandbox, tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_rank_products.py"
    spec = importlib.util.spec_from_file_location("bench_rank_products", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "lat.json"
    report = bench.main(["--service", str(service_dir), "--data-dir", str(small_sandbox), "--calls", "20",
                         "--unbatched-calls", "3", "--warmup", "2", "--baseline-ranker",
                         str(service_dir.parent / "din"), "--out", str(out)])
    assert json.loads(out.read_text()) == report
    results = report["results"]
    assert {"service", "score_only", "unbatched", "baseline_ranker"} <= set(results)
    assert results["service"]["calls"] == 20 and 0 < results["service"]["p50_ms"] <= results["service"]["p99_ms"]
    assert results["unbatched"]["p50_ms"] > results["score_only"]["p50_ms"]  # 100 forward passes vs 1
    assert report["models"]["service"]["model"] == "din"


# -- REG4Rec's recommendations with reasoning paths ----------------------------------------------------
def test_recommend_with_reasoning_gives_real_products_with_the_path_that_spells_each_one(service, universe):
    history = [universe[0]["product_id"], universe[1]["product_id"]]
    recs = service.recommend_with_reasoning(history, k=10)
    assert len(recs) == 10 and len({r["product_id"] for r in recs}) == 10
    assert not {r["product_id"] for r in recs} & set(history)
    task, model = service.reasoner()
    codes = model.item_codes.numpy()
    for rec in recs:
        item = service.featurizer.index_of(rec["product_id"])
        assert item > 0
        tokens = {step["token"] for step in rec["path"]}
        expected = {(f"expert {r}" if r < model.free_codebooks else "collision") + f":{codes[item, r]}"
                    for r in range(codes.shape[1])}
        assert tokens == expected  # the path's tokens are exactly this product's token set
        assert all(0 < step["probability"] <= 1 for step in rec["path"])
        assert all(set(step["shared_with_history"]) <= set(history) for step in rec["path"])


def test_recommend_with_reasoning_tool_answers_bad_input_with_readable_errors(env, universe, outside_ids):
    ok = env.step("recommend_with_reasoning", {"history": [universe[3]["product_id"]], "k": 3})
    assert ok.ok and len(ok.data["recommendations"]) == 3 and ok.data["recommendations"][0]["path"]
    for bad, needle in (({"history": []}, "at least one product id"),
                        ({"history": outside_ids[:2]}, "item universe"),
                        ({"history": ["nope!"]}, "not a product id"),
                        ({"history": [universe[0]["product_id"]], "k": 500}, "less than or equal to 20")):
        out = env.step("recommend_with_reasoning", bad)
        assert not out.ok and needle in out.observation, (bad, out.observation)
        assert not env.state.done


def test_a_service_without_a_reasoner_says_how_to_add_one(service_dir, world, tmp_path):
    spec = json.loads((service_dir / "service.json").read_text())
    spec.pop("reasoner")
    for key in ("sim", "ranker", "tokenizer", "retriever"):
        spec[key] = str((service_dir / spec[key]).resolve())
    (tmp_path / "service.json").write_text(json.dumps(spec))
    plain = RecsysService.load(tmp_path, world)
    with pytest.raises(ValueError, match="--reasoner"):
        plain.recommend_with_reasoning([plain.items[0]["product_id"]], 3)
