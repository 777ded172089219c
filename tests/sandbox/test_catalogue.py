"""The catalogue build: gold products rebuilt from tasks, decoys that break one constraint, fillers, manifest."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from sandbox.catalogue import FillerGenerator, IdSpace, build_sandbox, learn_profile
from sandbox.catalogue.generator import CHUNK
from sandbox.data_model import PRODUCT_FIELDS, Intent, Product
from sandbox.engines.tantivy_backend import TantivyBackend
from sandbox.environment import ShoppingEnv
from sandbox.scorer import budget_satisfied, score_episode, score_product
from sandbox.tasks import load_tasks
from sandbox.world import ShoppingWorld

SB_DIR = Path(__file__).resolve().parents[2] / "data" / "shoppingbench"
DEV_FILES = sorted(SB_DIR.glob("*.jsonl"))
PRODUCT_FILE = SB_DIR / "synthesize_product_dev.jsonl"
DECOY_SAMPLE_PER_KIND = 40  # decoy titles embedded with the real model (about 30 ms a title on 2 cores)


class SameTitle:
    """The real similarity, short-cut for identical strings (cosine of a vector with itself is 1)."""

    def __init__(self, real):
        self.real = real

    def __call__(self, a: str, b: str) -> float:
        return 1.0 if a == b else self.real(a, b)


def neutral_title(_a: str, _b: str) -> float:
    """Title always met: isolates the non-title rules, which do not depend on the embedding."""
    return 1.0


def renamed(product: dict) -> dict:
    """The product under another id: the exact-id short cut is off, every rule must hold on its own."""
    return {**product, "product_id": "rule-check-" + str(product["product_id"])}


def _jsonl(path):
    """JSON lines split on newlines only (the records hold U+2028 and friends, which splitlines() splits on)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]


@pytest.fixture(scope="module")
def specs_by_gold(world):
    out = defaultdict(list)
    for task in world.tasks.values():
        for spec in task.reward:
            out[spec.product_id].append((task, spec))
    return dict(out)


@pytest.fixture(scope="module")
def golds(world, specs_by_gold):
    return world.products(list(specs_by_gold))


@pytest.fixture(scope="module")
def voucher_priced(world):
    """Golds whose price the build derives from a voucher basket."""
    return {s.product_id for t in world.tasks_by_intent("voucher") for s in t.reward}


@pytest.fixture(scope="module")
def conflicted(world):
    """Tasks the build itself reports it could not satisfy (test_found_bugs requires there be none)."""
    ids = {c.split(":", 1)[0] for c in world.manifest["conflicts"]}
    assert len(ids) <= 0.05 * len(world.tasks), world.manifest["conflicts"]
    return ids


@pytest.fixture(scope="module")
def decoys(small_sandbox):
    return _jsonl(small_sandbox / "decoys.jsonl")


@pytest.fixture(scope="module")
def decoy_products(world, decoys):
    return world.products([d["decoy_id"] for d in decoys])


@pytest.fixture(scope="module")
def sound_golds(golds, specs_by_gold):
    """Golds meeting every non-title rule of every spec: a decoy can only be judged against a sound gold."""
    return {pid for pid, entries in specs_by_gold.items()
            if all(not score_product(renamed(golds[pid]), spec, neutral_title).unmet() for _t, spec in entries)}


# -- golds ------------------------------------------------------------------------------------------------

def test_every_gold_is_indexed_and_valid(world, specs_by_gold, golds):
    assert set(golds) == set(specs_by_gold)
    for pid, p in golds.items():
        assert set(p) == set(PRODUCT_FIELDS)
        Product.model_validate(p)
        assert p["product_id"] == pid


def test_every_gold_meets_its_specs_by_rules(world, specs_by_gold, golds, conflicted, similarity):
    sim = SameTitle(similarity)
    failures = []
    n = 0
    for pid, entries in specs_by_gold.items():
        if any(t.task_id in conflicted for t, _ in entries):
            continue
        for task, spec in entries:
            r = score_product(renamed(golds[pid]), spec, sim)
            n += 1
            if r.score < 1.0:
                failures.append((task.task_id, pid, r.unmet()))
    assert n > 600 and not failures
    # exact ids score 1 through score_episode too
    for task in world.tasks.values():
        r = score_episode(task, [s.product_id for s in task.reward], world.products, sim)
        assert r.gt == 1.0 and r.constraint_score == 1.0, task.task_id
        if task.intent != Intent.voucher:
            assert r.success, task.task_id


def test_web_golds_keep_their_full_record(world, golds):
    for task in world.tasks_by_intent("web"):
        rec, gold = task.gold_record, golds[task.reward[0].product_id]
        for f in ("title", "description", "brand", "category", "shop_id"):
            assert gold[f] == str(rec[f]), f
        kw = task.knowledge_attribute.lower()
        assert kw in gold["title"].lower() or kw in gold["description"].lower()


def test_shop_task_golds_share_one_shop(world, golds):
    tasks = world.tasks_by_intent("shop") + [t for t in world.tasks_by_intent("voucher")
                                             if t.voucher.voucher_type == "shop"]
    assert len(tasks) > 80
    for task in tasks:
        assert len({golds[s.product_id]["shop_id"] for s in task.reward}) == 1, task.task_id


def test_voucher_golds_fit_the_budget(world, golds, small_sandbox, conflicted):
    vouchers = {v["task_id"]: v for v in _jsonl(small_sandbox / "vouchers.jsonl")}
    checked = [t for t in world.tasks_by_intent("voucher") if t.task_id not in conflicted]
    assert len(checked) >= 0.95 * len(world.tasks_by_intent("voucher"))
    for task in checked:
        basket = [golds[s.product_id] for s in task.reward]
        assert budget_satisfied(basket, task.voucher), task.task_id
        v = world.voucher_for_task(task.task_id)
        assert v is not None and vouchers[task.task_id]["threshold"] == task.voucher.threshold
        if task.voucher.voucher_type == "shop":
            # "applies to the products from the same shop": any single shop, as the scorer reads it
            assert v.shop_id is None and v.applies_to({basket[0]["shop_id"]}, 10 ** 9)
            assert not v.applies_to({"a", "b"}, 10 ** 9)
        # a cart holding the golds is within budget, as the agent sees it
        env = ShoppingEnv(world, task=task)
        for s in task.reward:
            env.step("add_to_cart", {"product_id": s.product_id})
        assert env.cart_summary()["within_budget"], task.task_id


# -- decoys -----------------------------------------------------------------------------------------------

def _kind(entry):
    return entry["broken"].split(":", 1)[0]


def _field_of(entry):
    return {"price": "price", "service": "service", "attribute": "sku & attrs", "sku": "sku & attrs"}.get(_kind(entry))


def _carries(spec, entry):
    kind, _, what = entry["broken"].partition(":")
    if kind == "price":
        return bool(spec.price)
    if kind == "service":
        return what in spec.service
    if kind in ("attribute", "sku"):
        k, _, v = what.partition("=")
        return (k, v) in spec.attribute_pairs() + spec.sku_pairs()
    return False


UNCHANGED_BUT = {  # what a decoy may change besides its id, urls, title and sold count
    "price": {"price"}, "budget": {"price"}, "service": {"service"},
    "attribute": {"attributes", "sku_options", "description", "specification"},
    "sku": {"attributes", "sku_options", "description", "specification"}, "shop": {"shop_id"},
    "knowledge": {"description", "short_description"},
}


def test_decoys_exist_and_change_only_their_constraint(golds, decoys, decoy_products):
    assert decoys and len(decoy_products) == len(decoys)
    assert not set(decoy_products) & set(golds)
    assert set(Counter(_kind(d) for d in decoys)) <= set(UNCHANGED_BUT)
    for d in decoys:
        decoy, gold = decoy_products[d["decoy_id"]], golds[d["gold_id"]]
        changed = {f for f in PRODUCT_FIELDS if decoy[f] != gold[f]}
        allowed = UNCHANGED_BUT[_kind(d)] | {"product_id", "main_image_url", "product_url", "title", "sold_count"}
        allowed |= set().union(*(UNCHANGED_BUT[also.split(":")[0]] for also in d.get("also", [])))
        assert changed <= allowed, (d, changed - allowed)
        assert changed & UNCHANGED_BUT[_kind(d)] or (_kind(d) == "knowledge" and decoy["title"] != gold["title"]), d


def test_decoys_break_the_named_rule_and_only_it(decoys, decoy_products, golds, specs_by_gold, sound_golds):
    """Non-title rules on every decoy whose gold carries the named constraint (titles: next test)."""
    checked, only_named = 0, 0
    offenders = []
    for d in decoys:
        field = _field_of(d)
        if field is None or d["gold_id"] not in sound_golds:
            continue
        carrying = [spec for _t, spec in specs_by_gold[d["gold_id"]] if _carries(spec, d)]
        if not carrying:
            continue  # a price decoy of a gold with no price constraint: see the budget test and test_found_bugs
        for spec in carrying:
            r = score_product(decoy_products[d["decoy_id"]], spec, neutral_title)
            checked += 1
            if r.score < 1.0 and r.unmet() == [field]:
                only_named += 1
            else:
                offenders.append((d["broken"], d["decoy_id"], r.unmet()))
    assert checked > 1500
    fraction = only_named / checked
    print(f"decoys breaking exactly their named rule: {only_named}/{checked} = {fraction:.4f}")
    assert fraction >= 0.99, offenders[:10]


def test_price_decoys_without_a_price_rule_break_the_voucher_budget(decoys, decoy_products, golds, specs_by_gold,
                                                                   voucher_priced):
    n = 0
    for d in decoys:
        if _kind(d) != "budget" or d["gold_id"] not in voucher_priced:
            continue
        if any(spec.price for _t, spec in specs_by_gold[d["gold_id"]]):
            continue
        for task, _spec in specs_by_gold[d["gold_id"]]:
            if task.voucher is None:
                continue
            basket = [decoy_products[d["decoy_id"]] if s.product_id == d["gold_id"] else golds[s.product_id]
                      for s in task.reward]
            assert not budget_satisfied(basket, task.voucher), (task.task_id, d)
            n += 1
    assert n > 100


def test_shop_decoys_move_shop_and_fail_the_shop_rule(world, decoys, decoy_products, golds, specs_by_gold,
                                                      sound_golds):
    shop_decoys = [d for d in decoys if _kind(d) == "shop" and d["gold_id"] in sound_golds]
    assert shop_decoys
    n_failing = 0
    for d in shop_decoys:
        decoy = decoy_products[d["decoy_id"]]
        assert decoy["shop_id"] != golds[d["gold_id"]]["shop_id"]
        for task, spec in specs_by_gold[d["gold_id"]]:
            assert score_product(decoy, spec, neutral_title).score == 1.0
            if task.intent == Intent.shop:  # one shop is a rule of shop tasks (platform vouchers ignore it)
                ids = [d["decoy_id"] if s.product_id == d["gold_id"] else s.product_id for s in task.reward]
                r = score_episode(task, ids, world.products, neutral_title)
                assert r.shop_ok is False and not r.success and r.constraint_score == 1.0, task.task_id
                n_failing += 1
    assert n_failing > 100


def test_knowledge_decoys_lose_the_fact(world, decoys, decoy_products, golds, specs_by_gold, similarity):
    sim = SameTitle(similarity)
    kn = [d for d in decoys if _kind(d) == "knowledge"]
    assert len(kn) == len(world.tasks_by_intent("web"))
    similarity.embed_many(sorted({decoy_products[d["decoy_id"]]["title"] for d in kn}
                                 | {golds[d["gold_id"]]["title"] for d in kn}))  # one batch
    title_kept = 0
    for d in kn:
        task = next(t for t, _s in specs_by_gold[d["gold_id"]] if t.intent == Intent.web)
        r = score_episode(task, d["decoy_id"], world.products, sim)
        assert r.knowledge_ok is False and not r.success, d
        title_kept += bool(r.title_ok)
    fraction = title_kept / len(kn)
    print(f"knowledge decoys whose title still passes the 0.8 web threshold: {title_kept}/{len(kn)} = {fraction:.2f}")
    assert fraction >= 0.75


def test_decoy_titles_still_meet_the_title_rule(decoys, decoy_products, specs_by_gold, sound_golds, similarity):
    """Real MiniLM on a fixed sample per kind: a decoy must look like its gold (title cosine >= 0.5)."""
    sim = SameTitle(similarity)
    rng = random.Random(0)
    by_kind = defaultdict(list)
    for d in decoys:
        if _field_of(d) is not None or _kind(d) == "shop":
            by_kind[_kind(d)].append(d)
    sample = [d for kind in sorted(by_kind) for d in rng.sample(by_kind[kind], min(DECOY_SAMPLE_PER_KIND,
                                                                                   len(by_kind[kind])))]
    pairs = [(decoy_products[d["decoy_id"]]["title"], spec.title)
             for d in sample for _t, spec in specs_by_gold[d["gold_id"]]]
    similarity.embed_many(sorted({a for a, _ in pairs} | {t for _, ts in pairs for t in ts}))
    met, exact, judged = 0, 0, 0
    for d in sample:
        decoy = decoy_products[d["decoy_id"]]
        results = [score_product(decoy, spec, sim) for _t, spec in specs_by_gold[d["gold_id"]]]
        title_ok = all("title" not in r.unmet() for r in results)
        met += title_ok
        if d["gold_id"] in sound_golds and title_ok:
            field = _field_of(d)
            carrying = [r for (_t, spec), r in zip(specs_by_gold[d["gold_id"]], results, strict=True)
                        if _carries(spec, d)]
            if field is None:  # a shop decoy meets every product rule
                judged += 1
                exact += all(r.score == 1.0 for r in results)
            elif carrying:
                judged += 1
                exact += all(r.unmet() == [field] for r in carrying)
    fraction = met / len(sample)
    print(f"sampled decoys whose title meets the 0.5 rule: {met}/{len(sample)} = {fraction:.3f}; "
          f"of those judged (sound gold, rule carried), failing exactly their named rule: {exact}/{judged}")
    assert fraction >= 0.95
    assert judged > 100 and exact / judged >= 0.95


# -- fillers, ids, determinism -------------------------------------------------------------------------------

def _dump(data_dir):
    backend = TantivyBackend(Path(data_dir) / "index" / "tantivy")
    try:
        return sorted((p for p in backend.iter_all()), key=lambda p: p["product_id"])
    finally:
        backend.close()


@pytest.fixture(scope="module")
def three_builds(tmp_path_factory):
    out = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        d = tmp_path_factory.mktemp(f"det_{name}")
        report = build_sandbox(d, [PRODUCT_FILE], n_products=2000, seed=seed, progress=False)
        out[name] = (report, _dump(d), d)
    return out


def test_build_is_deterministic(three_builds):
    ra, a, da = three_builds["a"]
    rb, b, db = three_builds["b"]
    assert ra.n_fillers > 1000  # the determinism of the generated part is what is tested
    assert len(a) == 2000
    assert a == b
    assert (da / "decoys.jsonl").read_text() == (db / "decoys.jsonl").read_text()
    assert (da / "special_products.jsonl").read_text() == (db / "special_products.jsonl").read_text()


def test_two_builds_rank_search_results_identically(three_builds):
    """BM25 ties (decoys are near-copies of golds) must break the same way in every build of a sandbox."""
    from sandbox import ShoppingEnv, ShoppingWorld

    worlds = [ShoppingWorld.open(three_builds[k][2]) for k in ("a", "b")]
    try:
        queries = [title for t in load_tasks([PRODUCT_FILE]) for s in t.reward
                   for title in ([s.title] if isinstance(s.title, str) else s.title)][:60]
        pages = [[ShoppingEnv(w).step("find_product", {"q": q}).data for q in queries] for w in worlds]
    finally:
        for w in worlds:
            w.close()
    assert sum(bool(p) for p in pages[0]) > 50, [q for q, p in zip(queries, pages[0], strict=True) if not p][:3]
    assert pages[0] == pages[1]


def test_another_seed_gives_other_fillers(three_builds):
    _, a, da = three_builds["a"]
    _, c, _ = three_builds["c"]
    gold_ids = {s.product_id for t in load_tasks([PRODUCT_FILE]) for s in t.reward}
    special = {p["product_id"] for p in _jsonl(da / "special_products.jsonl")}
    fill_a = {p["product_id"]: p for p in a if p["product_id"] not in special}
    fill_c = {p["product_id"]: p for p in c}
    assert len(fill_a) > 1000
    assert len(set(fill_a) & set(fill_c)) < 0.01 * len(fill_a)
    titles_a = sorted(p["title"] for p in fill_a.values())
    titles_c = sorted(p["title"] for p in c if p["product_id"] not in gold_ids)
    assert titles_a != titles_c
    assert gold_ids <= {p["product_id"] for p in c}  # golds keep their task ids whatever the seed


def test_generator_stream_is_reproducible_from_any_offset():
    tasks = load_tasks([PRODUCT_FILE])
    gen = FillerGenerator(learn_profile(tasks), seed=3, n_products=20_000)
    full = list(gen.stream(CHUNK + 30))
    for start, n in ((0, 5), (7, 13), (CHUNK - 10, 25), (CHUNK, 30), (4321, 1)):
        assert list(gen.stream(n, start=start)) == full[start:start + n], (start, n)
    again = FillerGenerator(learn_profile(tasks), seed=3, n_products=20_000)
    assert list(again.stream(50, start=CHUNK - 20)) == full[CHUNK - 20:CHUNK + 30]
    ids = [p["product_id"] for p in full]
    assert len(set(ids)) == len(ids)
    for p in full[:200]:
        Product.model_validate(p)


def test_filler_ids_avoid_reserved_ids():
    tasks = load_tasks([PRODUCT_FILE])
    space = IdSpace(0)
    reserved = {space.product_id(i) for i in range(0, 40, 2)}
    gen = FillerGenerator(learn_profile(tasks), seed=0, n_products=1000, reserved_ids=reserved)
    ids = [p["product_id"] for p in gen.stream(40)]
    assert not set(ids) & reserved
    assert len(set(ids)) == 40
    assert ids[1] == space.product_id(1)  # unreserved positions keep their natural id


def test_sandbox_ids_are_unique_and_golds_untouched(small_sandbox, specs_by_gold, golds):
    products = _dump(small_sandbox)
    ids = [p["product_id"] for p in products]
    assert len(ids) == len(set(ids))
    assert set(specs_by_gold) <= set(ids)
    special = _jsonl(small_sandbox / "special_products.jsonl")
    fillers = set(ids) - {p["product_id"] for p in special}
    assert not fillers & set(specs_by_gold)
    assert len(fillers) == len(products) - len(special)


def test_manifest_counts_add_up(small_sandbox, world, decoys, specs_by_gold):
    m = json.loads((small_sandbox / "manifest.json").read_text())
    assert m["n_gold"] + m["n_decoys"] + m["n_fillers"] == m["n_products"]
    assert m["n_products"] == world.backend.count() == len(_dump(small_sandbox)) == m["requested_products"] == 5000
    assert m["n_gold"] == len(specs_by_gold)
    assert m["n_decoys"] == len(decoys)
    assert m["n_tasks"] == len(world.tasks) == 312
    assert m["intents"] == dict(Counter(t.intent.value for t in world.tasks.values()))
    assert m["seed"] == 0 and isinstance(m["conflicts"], list)


# -- an unseen task file ---------------------------------------------------------------------------------------

UNSEEN = [
    {"query": "Find an insulated stainless steel tumbler with a straw lid in mint green, 30 oz, with cash on "
              "delivery, under 450 pesos.",
     "reward": {"product_id": "7700000001",
                "title": ["Insulated Stainless Steel Tumbler 30oz with Straw Lid Vacuum Travel Mug"],
                "sku_options": [{"color_family": "mint green", "capacity": "30 oz"}],
                "attributes": [{"material": ["stainless steel"]}],
                "service": ["COD"], "price": [{"less than": [None, 450]}]}},
    {"query": "A shop that sells both a bamboo cutting board (large) and a silicone spatula set over 120 pesos.",
     "reward": [{"product_id": "7700000002", "title": ["Organic Bamboo Cutting Board Large Kitchen Chopping Block"],
                 "sku_options": [{"size": "large"}]},
                {"product_id": "7700000003", "title": ["Heat Resistant Silicone Spatula Set 5 pcs Kitchen Utensils"],
                 "price": [{"greater than": [120, None]}], "attributes": [{"pieces": ["5"]}]}]},
    {"query": "I need a yoga mat and a pair of resistance bands.\n\nMy budget is only `900`, but I have a voucher "
              "with the following rules:\n1. The voucher applies to all products.\n2. It is valid only when the "
              "total price of the products exceeds `600`.\n3. It provides a percentage discount of `20%` with a "
              "maximum discount of `200`.",
     "reward": [{"product_id": "7700000004", "title": ["Non Slip TPE Yoga Mat 6mm Exercise Fitness Mat"]},
                {"product_id": "7700000005", "title": ["Latex Resistance Loop Bands Set of 5 Workout Bands"]}],
     "voucher": {"voucher_type": "platform", "threshold": 600, "discount_type": "percentage", "face_value": None,
                 "discount": 0.2, "cap": 200, "price_after_voucher": 880.0, "budget": 900}},
]


def test_an_unseen_task_file_builds_and_its_golds_are_findable(tmp_path, similarity):
    task_file = tmp_path / "my_tasks.jsonl"
    task_file.write_text("\n".join(json.dumps(t) for t in UNSEEN) + "\n")
    data_dir = tmp_path / "sb"
    report = build_sandbox(data_dir, [task_file], n_products=400, seed=5, progress=False)
    assert report.n_tasks == 3 and report.intents == {"product": 1, "shop": 1, "voucher": 1}
    assert report.n_gold == 5 and report.n_gold + report.n_decoys + report.n_fillers == report.n_products == 400
    world = ShoppingWorld.open(data_dir)
    try:
        sim = SameTitle(similarity)
        golds = world.products([f"77000000{i:02d}" for i in range(1, 6)])
        assert len(golds) == 5
        for task in world.tasks.values():
            for spec in task.reward:
                env = ShoppingEnv(world)
                hits = env.step("find_product", {"q": spec.title[0]}).data
                assert spec.product_id in [h["product_id"] for h in hits[:10]], spec.title[0]
                assert score_product(renamed(golds[spec.product_id]), spec, sim).score == 1.0, spec.product_id
            r = score_episode(task, [s.product_id for s in task.reward], world.products, sim)
            assert r.success, (task.intent, r)
        shop_task = world.tasks_by_intent("shop")[0]
        assert len({golds[s.product_id]["shop_id"] for s in shop_task.reward}) == 1
        voucher_task = world.tasks_by_intent("voucher")[0]
        basket = [golds[s.product_id] for s in voucher_task.reward]
        total = sum(p["price"] for p in basket)
        assert total == pytest.approx(1080, abs=0.02)  # 20% of 1080 is 216, capped at 200: 880 after the voucher
        assert budget_satisfied(basket, voucher_task.voucher)
        env = ShoppingEnv(world, task=voucher_task)
        for s in voucher_task.reward:
            env.step("add_to_cart", {"product_id": s.product_id})
        cart = env.cart_summary()
        assert cart["voucher"] is not None and cart["within_budget"]
        assert cart["total_after_voucher"] == pytest.approx(880, abs=0.02)
        # the tumbler's decoys each fail it, and none of them is its gold
        entries = _jsonl(data_dir / "decoys.jsonl")
        tumbler = world.tasks_by_intent("product")[0].reward[0]
        mine = [e for e in entries if e["gold_id"] == tumbler.product_id]
        assert {e["broken"] for e in mine} >= {"price", "service:COD", "attribute:material=stainless steel",
                                              "sku:color_family=mint green", "sku:capacity=30 oz"}
        decoy_products = world.products([e["decoy_id"] for e in mine])
        for e in mine:
            assert score_product(decoy_products[e["decoy_id"]], tumbler, neutral_title).score < 1.0, e
    finally:
        world.close()
