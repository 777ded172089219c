"""Generated training tasks (`sandbox.task_generator`, `shoplab sandbox gen-tasks`) on a small real sandbox.

A user trains a student on these tasks and evaluates it on the sandbox's own tasks, so every generated
task must be solvable (its gold meets every constraint it states), say in words what it asks for, and
never touch an evaluation product; `shoplab bench run --tasks FILE` must accept the file.
"""

from __future__ import annotations

import json
import re

import pytest
import typer
from typer.testing import CliRunner

from agents.cli import _golds_in_catalogue, _select_tasks
from agents.registry import make_agent
from agents.runner import RunConfig, run_benchmark
from sandbox.data_model import Intent
from sandbox.scorer import score_product
from sandbox.task_generator import (
    OPENERS,
    PRICE_PHRASES,
    SERVICE_PHRASES,
    TaskGeneratorConfig,
    generate_tasks,
    sample_requirements,
)
from sandbox.tasks import Task, load_task_file, parse_price_constraint
from shoplab_cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")  # the teacher's own tokenisation (agents.scripted.oracle)


def _dump(tasks: list[Task]) -> list[dict]:
    return [t.model_dump(mode="json") for t in tasks]


def _golds(tasks) -> list[str]:
    return [s.product_id for t in tasks for s in t.reward]


def _flat(text: str) -> str:
    """CLI output with rich's box drawing and line wrapping removed."""
    return "".join(ch for ch in text if not ch.isspace() and ch not in "│╭╮╰╯─")


@pytest.fixture(scope="module")
def generated(world) -> list[Task]:
    return generate_tasks(world, TaskGeneratorConfig(n_product=40, n_shop=8, seed=0))


@pytest.fixture(scope="module")
def records(world, generated) -> dict[str, dict]:
    return world.products(_golds(generated))


# -- the generator ------------------------------------------------------------------------------------

def test_counts_intents_and_provenance(generated):
    products = [t for t in generated if t.intent == Intent.product]
    shops = [t for t in generated if t.intent == Intent.shop]
    assert len(products) == 40 and len(shops) == 8
    assert all(t.source == "generated" for t in generated)
    assert len({t.task_id for t in generated}) == len(generated)
    assert all(len(t.reward) == 1 for t in products)
    assert all(2 <= len(t.reward) <= 3 for t in shops)
    # Every gold is used once: no product is the answer of two generated tasks.
    assert len(set(_golds(generated))) == len(_golds(generated))


def test_deterministic_for_a_seed_and_different_for_another(world, generated):
    again = generate_tasks(world, TaskGeneratorConfig(n_product=40, n_shop=8, seed=0))
    assert _dump(again) == _dump(generated)
    other = generate_tasks(world, TaskGeneratorConfig(n_product=40, n_shop=8, seed=1))
    assert [t.query for t in other] != [t.query for t in generated]
    assert set(_golds(other)) != set(_golds(generated))


def test_disjoint_filler_ranges_give_disjoint_task_sets(world):
    first = generate_tasks(world, TaskGeneratorConfig(n_product=30, seed=0, start=0, pool=500))
    second = generate_tasks(world, TaskGeneratorConfig(n_product=30, seed=0, start=500, pool=500))
    assert len(first) == len(second) == 30
    assert not set(_golds(first)) & set(_golds(second))


def test_a_sandbox_without_generated_products_is_an_error(world):
    with pytest.raises(ValueError, match="no generated products"):
        generate_tasks(world, TaskGeneratorConfig(n_product=5, start=10**7))


def test_golds_are_catalogue_products_that_meet_every_constraint(generated, records, similarity):
    ids = _golds(generated)
    assert set(records) == set(ids), "some generated gold is not in the catalogue"
    similarity.embed_many([records[i]["title"] for i in ids])
    for task in generated:
        for spec in task.reward:
            record = records[spec.product_id]
            assert score_product(record, spec, similarity).score == 1.0
            # By the rules alone, not by the id shortcut: another product with the same record also passes.
            by_rules = score_product({**record, "product_id": "not-the-gold"}, spec, similarity)
            assert by_rules.score == 1.0, (task.query, spec, by_rules)
            assert not by_rules.unmet()


def test_price_bounds_contain_the_price_strictly_and_are_stated(generated, records):
    with_price = 0
    for task in generated:
        for spec in task.reward:
            for constraint in spec.price:
                with_price += 1
                price = float(records[spec.product_id]["price"])
                (mode, bounds), = constraint.items()
                assert mode in PRICE_PHRASES
                rng = parse_price_constraint(constraint)
                assert rng.low is not None or rng.high is not None
                assert rng.low is None or rng.low < price, (constraint, price)
                assert rng.high is None or price < rng.high, (constraint, price)
                for b in bounds:
                    if b is not None:
                        assert re.search(rf"\b{int(b)}\b", task.query), (task.query, constraint)
    assert with_price >= 10  # p_price = 0.7 over 40 product tasks
    # Shop tasks ask for no price (with_price=False).
    assert all(not s.price for t in generated if t.intent == Intent.shop for s in t.reward)


def _starts_with_title_span(rest: str, title: str) -> bool:
    words = title.lower().split()
    spans = [" ".join(words[i:i + n]) for n in (2, 3) for i in range(len(words) - n + 1)]
    return any(re.match(re.escape(span) + r"(?=[ ,.]|$)", rest) for span in spans)


def test_instruction_names_the_product_and_every_constraint(generated, records):
    for task in (t for t in generated if t.intent == Intent.product):
        spec = task.reward[0]
        title = records[spec.product_id]["title"]
        opener = next(o for o in sorted(OPENERS, key=len, reverse=True) if task.query.startswith(o + " "))
        rest = task.query[len(opener) + 1:]
        article, rest = rest.split(" ", 1)
        assert article in ("a", "an")
        # The product is asked for by a 2-3 word span of its own title.
        assert _starts_with_title_span(rest, title), (task.query, title)
        for _, value in spec.sku_pairs() + spec.attribute_pairs():
            assert value in task.query, (task.query, value)
        for service in spec.service:
            assert any(p in task.query for p in SERVICE_PHRASES[service]), (task.query, service)


def test_phrase_is_a_span_of_title_words(world):
    import random

    bare = TaskGeneratorConfig(p_attribute=0.0, p_sku=0.0, p_service=0.0, p_price=0.0)
    rng = random.Random(3)
    n = 0
    for product in world.filler_products(200):
        sampled = sample_requirements(product, rng, bare)
        if sampled is None:
            continue
        n += 1
        spec, phrase = sampled
        # Nothing but the title is required, and the phrase is 2-3 consecutive title words.
        assert spec.title == [product["title"]] and spec.n_constraints() == 1
        assert 2 <= len(phrase.split()) <= 3
        assert phrase in " ".join(product["title"].lower().split()), (phrase, product["title"])
        brand_words = set(str(product.get("brand") or "").lower().split())
        assert not brand_words & set(phrase.split()), (phrase, product.get("brand"))
    assert n >= 150


def test_shop_tasks_products_share_one_shop(generated, records):
    shop_tasks = [t for t in generated if t.intent == Intent.shop]
    assert shop_tasks
    for task in shop_tasks:
        shops = {str(records[s.product_id]["shop_id"]) for s in task.reward}
        assert len(shops) == 1, (task.query, shops)
        assert task.query.endswith("all from the same shop.")


def test_never_an_evaluation_gold_or_decoy(world, small_sandbox, generated):
    ids = set(_golds(generated))
    eval_golds = {s.product_id for t in world.tasks.values() for s in t.reward}
    assert eval_golds and not ids & eval_golds
    special = {json.loads(line)["product_id"]
               for line in (small_sandbox / "special_products.jsonl").read_text().splitlines() if line}
    assert not ids & special
    assert not {t.task_id for t in generated} & set(world.tasks)


# -- the teacher on generated tasks --------------------------------------------------------------------

def test_teacher_solves_generated_tasks_with_queries_from_the_instruction(world, similarity, generated, tmp_path):
    tasks = [t for t in generated if t.intent == Intent.product][:10]
    out = tmp_path / "teacher"
    summary = run_benchmark(world, tasks, lambda: make_agent("teacher", similarity=similarity), out,
                            RunConfig(agent="teacher"), similarity=similarity, progress=False)
    assert summary["overall"]["n"] == 10
    assert summary["overall"]["asr"] >= 0.8, summary["overall"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    by_id = {t.task_id: t for t in tasks}
    n_queries = 0
    for row in rows:
        assert row["agent"] == "teacher"
        words = set(_TOKEN.findall(by_id[row["task_id"]].query.lower()))
        visible: set[str] = set()
        calls = [(c["function"]["name"], json.loads(c["function"]["arguments"]))
                 for m in row["trajectory"] if m["role"] == "assistant" for c in m["tool_calls"]]
        observations = [m["content"] for m in row["trajectory"] if m["role"] == "tool"]
        for (name, args), obs in zip(calls, observations, strict=True):
            if name == "find_product":
                n_queries += 1
                q = args["q"]
                assert q.strip() and set(q.split()) <= words, (q, by_id[row["task_id"]].query)
                visible.update(hit["product_id"] for hit in json.loads(obs)[:3])
        # It chooses only among the three hits a student would see.
        assert set(row["recommended"]) <= visible, (row["recommended"], visible)
    assert n_queries >= 10


# -- the CLI --------------------------------------------------------------------------------------------

def test_cli_gen_tasks_writes_a_loadable_task_file(small_sandbox, world, tmp_path):
    out = tmp_path / "sub" / "gen.jsonl"
    result = CliRunner().invoke(app, ["sandbox", "gen-tasks", "--data-dir", str(small_sandbox), "--out", str(out),
                                      "--n-product", "6", "--n-shop", "2", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "wrote 8 tasks" in " ".join(result.output.split())
    loaded = load_task_file(out)
    expected = generate_tasks(world, TaskGeneratorConfig(n_product=6, n_shop=2, seed=5))
    assert [t.task_id for t in loaded] == [t.task_id for t in expected]
    assert [t.intent for t in loaded] == [t.intent for t in expected]
    assert [t.reward for t in loaded] == [t.reward for t in expected]
    assert sum(t.intent == Intent.shop for t in loaded) == 2


def test_cli_bench_run_accepts_generated_tasks(small_sandbox, world, tmp_path):
    runner = CliRunner()
    gen = tmp_path / "gen.jsonl"
    made = runner.invoke(app, ["sandbox", "gen-tasks", "--data-dir", str(small_sandbox), "--out", str(gen),
                               "--n-product", "3", "--n-shop", "1", "--seed", "11"])
    assert made.exit_code == 0, made.output
    out = tmp_path / "run"
    ran = runner.invoke(app, ["bench", "run", "--data-dir", str(small_sandbox), "--agent", "teacher",
                              "--tasks", str(gen), "--out", str(out)])
    assert ran.exit_code == 0, ran.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    assert sorted(r["task_id"] for r in rows) == sorted(t.task_id for t in load_task_file(gen))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["n"] == 4 and summary["overall"]["asr"] > 0


def test_cli_bench_run_rejects_tasks_whose_gold_is_not_in_the_catalogue(small_sandbox, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "Find a purple unicorn lamp.",
                               "reward": {"product_id": "1", "title": ["Purple Unicorn Lamp"]}}) + "\n")
    result = CliRunner().invoke(app, ["bench", "run", "--data-dir", str(small_sandbox), "--agent", "teacher",
                                      "--tasks", str(bad), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "1tasksarenotinthissandbox" in _flat(result.output)
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_select_tasks_mixes_builtin_and_generated_tasks(world, generated, tmp_path):
    builtin = next(t for t in world.tasks.values() if t.intent == Intent.product)
    mine = [t for t in generated if t.intent == Intent.shop][:1] + [t for t in generated if t.intent == Intent.product][:2]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(t.to_shoppingbench()) + "\n" for t in [builtin, *mine]))
    selected = _select_tasks(world, [path], None, None)
    assert [t.task_id for t in selected] == [builtin.task_id] + [t.task_id for t in mine]
    assert selected[0] is world.tasks[builtin.task_id]  # a built-in task keeps its registered form
    assert all(_golds_in_catalogue(world, t) for t in mine)
    only_shop = _select_tasks(world, [path], ["shop"], None)
    assert [t.task_id for t in only_shop] == [mine[0].task_id]


def test_select_tasks_rejects_a_missing_gold_and_unregistered_vouchers(world, generated, tmp_path):
    spec = generated[0].reward[0]
    half_missing = Task(task_id="x", intent=Intent.shop, query="Find a thing and a ghost, all from the same shop.",
                        reward=[spec, spec.model_copy(update={"product_id": "999"})])
    assert not _golds_in_catalogue(world, half_missing)
    path = tmp_path / "missing.jsonl"
    path.write_text(json.dumps(half_missing.to_shoppingbench()) + "\n")
    with pytest.raises(typer.BadParameter, match="not in this sandbox"):
        _select_tasks(world, [path], None, None)
    # A voucher task reworded is new to the sandbox: its golds exist, but its voucher was never registered.
    voucher = next(t for t in world.tasks.values() if t.intent == Intent.voucher)
    reworded = voucher.model_copy(update={"query": voucher.query + " Thanks!"})
    assert len(world.products([s.product_id for s in reworded.reward])) == len({s.product_id for s in reworded.reward})
    assert not _golds_in_catalogue(world, reworded)
    vpath = tmp_path / "voucher.jsonl"
    vpath.write_text(json.dumps(reworded.to_shoppingbench()) + "\n")
    with pytest.raises(typer.BadParameter, match="not in this sandbox"):
        _select_tasks(world, [vpath], None, None)
