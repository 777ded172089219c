"""Loading ShoppingBench task files: intents by shape, price constraints, errors, round trips."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from sandbox.data_model import Intent
from sandbox.tasks import (
    PriceRange,
    ProductSpec,
    Task,
    TaskFormatError,
    detect_intent,
    load_task_file,
    load_tasks,
    parse_price_constraint,
    parse_task,
    read_tasks,
    task_id_for,
    write_tasks,
)

SB_DIR = Path(__file__).resolve().parents[2] / "data" / "shoppingbench"
DEV_FILES = sorted(SB_DIR.glob("*.jsonl"))

VOUCHER = {"voucher_type": "platform", "threshold": 170, "discount_type": "fixed", "face_value": 34,
           "discount": None, "cap": None, "price_after_voucher": 419.0, "budget": 425}
WEB_RECORD = {"product_id": 5122886302, "shop_id": "5374042", "brand": "", "category": "A > B > C",
              "title": "Metal Milan Magnetic Strap for Xiaomi Band", "short_description": "",
              "description": "a strap", "specification": "k:v", "price": 86.68, "sold_count": 1,
              "sku_options": {"1": {"size": "s"}}, "attributes": {"material": ["metal"]},
              "main_image_url": "", "product_url": "", "service": ["COD"]}


def _raw_records() -> list[tuple[Path, dict]]:
    out = []
    for path in DEV_FILES:
        for line in path.read_text(encoding="utf-8").split("\n"):  # not splitlines(): U+2028 occurs in text
            if line.strip():
                out.append((path, json.loads(line)))
    return out


def _intent_by_keys(record: dict) -> str:
    """An independent restatement of ShoppingBench's four shapes, for counting."""
    if "Knowledge_Attribute" in record:
        return "web"
    if "voucher" in record:
        return "voucher"
    if isinstance(record["reward"], list):
        return "shop"
    assert isinstance(record["reward"], dict)
    return "product"


# -- intent detection -----------------------------------------------------------------------

@pytest.mark.parametrize("record, intent", [
    ({"query": "q", "reward": {"product_id": "1", "title": ["t"]}}, Intent.product),
    ({"query": "q", "reward": [{"product_id": "1", "title": ["t"]}, {"product_id": "2", "title": ["u"]}]},
     Intent.shop),
    ({"query": "q", "reward": [{"product_id": "1", "title": ["t"]}], "voucher": VOUCHER}, Intent.voucher),
    ({"query": "q", "Knowledge_Attribute": "Milan", "reward": WEB_RECORD}, Intent.web),
    ({"query": "q", "knowledge_attribute": "Milan", "reward": WEB_RECORD}, Intent.web),
])
def test_detect_intent_from_shape(record, intent):
    assert detect_intent(record) == intent
    assert parse_task(record).intent == intent


def test_a_voucher_with_a_single_product_list_is_voucher_not_shop():
    rec = {"query": "q", "reward": [{"product_id": "1", "title": ["t"]}], "voucher": VOUCHER}
    task = parse_task(rec)
    assert task.intent == Intent.voucher
    assert task.voucher is not None and task.voucher.budget == 425
    assert task.voucher.face_value == 34


def test_all_dev_tasks_load_with_the_intent_counts_of_the_files():
    records = _raw_records()
    expected = Counter(_intent_by_keys(r) for _, r in records)
    # The data README states the shares; the key inspection must agree with it and with the loader.
    assert expected == {"product": 88, "shop": 80, "voucher": 94, "web": 50}
    tasks = load_tasks(DEV_FILES)
    assert len(tasks) == len(records) == 312
    assert Counter(t.intent.value for t in tasks) == expected
    assert len({t.task_id for t in tasks}) == len(tasks)
    by_query = {t.query: t for t in tasks}
    for path, rec in records:
        t = by_query[rec["query"]]
        assert t.source == path.name
        assert t.intent.value == _intent_by_keys(rec)
        reward = rec["reward"]
        if t.intent == Intent.web:
            assert t.knowledge_attribute == str(rec["Knowledge_Attribute"])
            assert t.gold_record["product_id"] == str(reward["product_id"])
            assert t.reward[0].title == [reward["title"]]
        else:
            entries = reward if isinstance(reward, list) else [reward]
            assert [s.product_id for s in t.reward] == [str(e["product_id"]) for e in entries]
            assert [s.title for s in t.reward] == [e["title"] for e in entries]
        assert (t.voucher is not None) == ("voucher" in rec)


def test_task_ids_are_stable_and_intent_scoped():
    assert task_id_for(Intent.product, "abc") == task_id_for(Intent.product, "abc")
    assert task_id_for(Intent.product, "abc") != task_id_for(Intent.shop, "abc")
    assert task_id_for(Intent.product, "abc") != task_id_for(Intent.product, "abd")
    assert task_id_for(Intent.product, "abc").startswith("product-")


def test_duplicate_queries_keep_the_first(tmp_path):
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_text(json.dumps({"query": "same", "reward": {"product_id": "1", "title": ["first"]}}) + "\n")
    b.write_text(json.dumps({"query": "same", "reward": {"product_id": "2", "title": ["second"]}}) + "\n"
                 + json.dumps({"query": "other", "reward": {"product_id": "3", "title": ["x"]}}) + "\n")
    tasks = load_tasks([a, b])
    assert [t.reward[0].product_id for t in tasks] == ["1", "3"]


# -- price constraints ----------------------------------------------------------------------

@pytest.mark.parametrize("constraint, low, high", [
    ({"less than": [None, 100]}, None, 100.0),
    ({"less than": 100}, None, 100.0),
    ({"less than": [100]}, None, 100.0),
    ({"greater than": [35, None]}, 35.0, None),
    ({"greater than": 35}, 35.0, None),
    ({"greater than": [35]}, 35.0, None),
    ({"between": [11, 206]}, 11.0, 206.0),
    ({"between": ["11.5", "206"]}, 11.5, 206.0),
])
def test_parse_price_constraint(constraint, low, high):
    r = parse_price_constraint(constraint)
    assert (r.low, r.high) == (low, high)


def test_price_bounds_are_inclusive():
    lt = parse_price_constraint({"less than": [None, 100]})
    assert lt.contains(100) and lt.contains(0) and not lt.contains(100.01)
    gt = parse_price_constraint({"greater than": [35, None]})
    assert gt.contains(35) and gt.contains(1e9) and not gt.contains(34.99)
    bt = parse_price_constraint({"between": [11, 206]})
    assert bt.contains(11) and bt.contains(206) and bt.contains(100)
    assert not bt.contains(10.99) and not bt.contains(206.01)


@pytest.mark.parametrize("bad", [
    {"around": [1, 2]},
    {"less than": [None, 1], "greater than": [0, None]},
    {},
    [1, 2],
    {"between": ["cheap", 5]},
])
def test_bad_price_constraints_raise(bad):
    with pytest.raises((TaskFormatError, ValueError)):
        parse_price_constraint(bad)


def test_spec_price_range_is_the_intersection():
    spec = ProductSpec(product_id="1", title=["t"], price=[{"greater than": [35, None]}, {"less than": [None, 90]}])
    r = spec.price_range()
    assert (r.low, r.high) == (35.0, 90.0)
    assert ProductSpec(product_id="1", title=["t"]).price_range() is None


def test_price_range_as_filter():
    assert PriceRange(low=10, high=20.5).as_filter() == "10-20.5"
    assert PriceRange(low=10).as_filter() == "10-"
    assert PriceRange(high=7).as_filter() == "-7"


# -- malformed and unseen shapes --------------------------------------------------------------

@pytest.mark.parametrize("bad_line", [
    "{not json",
    json.dumps({"reward": {"product_id": "1", "title": ["t"]}}),             # no query
    json.dumps({"query": "q"}),                                              # no reward
    json.dumps({"query": "q", "reward": []}),                                # no product
    json.dumps({"query": "q", "reward": {"title": ["t"]}}),                  # no product_id
    json.dumps({"query": "q", "reward": {"product_id": "1", "title": ["t"], "price": [{"about": 3}]}}),
    json.dumps({"query": "q", "Knowledge_Attribute": "x", "reward": {"product_id": "1"}}),
    json.dumps([1, 2, 3]),
])
def test_malformed_line_names_file_and_line(tmp_path, bad_line):
    good = json.dumps({"query": "fine", "reward": {"product_id": "1", "title": ["t"]}})
    path = tmp_path / "broken_tasks.jsonl"
    path.write_text(good + "\n\n" + good.replace("fine", "fine too") + "\n" + bad_line + "\n", encoding="utf-8")
    with pytest.raises(TaskFormatError) as info:
        load_task_file(path)
    message = str(info.value)
    assert str(path) in message
    assert ":4:" in message  # line numbers count the blank line


def test_unseen_valid_shapes_load(tmp_path):
    lines = [
        # product: title as a plain string, attributes as a dict, scalar attribute, service as a string
        {"query": "a red mug", "reward": {"product_id": 12345, "title": "Red Ceramic Mug",
                                          "attributes": {"color": "red", "material": ["ceramic", "clay"]},
                                          "service": "COD", "sku_options": {"size": "350ml"}}},
        # only a title
        {"query": "just a title", "reward": {"product_id": "9", "title": ["Plain Title"]}},
        # shop with two products, one with only a title
        {"query": "two from one shop", "reward": [{"product_id": "1", "title": "A"},
                                                  {"product_id": "2", "title": ["B"], "price": [{"less than": 50}]}]},
    ]
    path = tmp_path / "unseen.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    product, title_only, shop = load_task_file(path)

    spec = product.reward[0]
    assert product.intent == Intent.product
    assert spec.product_id == "12345"
    assert spec.title == ["Red Ceramic Mug"]
    assert sorted(spec.attribute_pairs()) == [("color", "red"), ("material", "ceramic"), ("material", "clay")]
    assert spec.sku_pairs() == [("size", "350ml")]
    assert spec.service == ["COD"]
    assert spec.n_constraints() == 1 + 0 + 1 + 3 + 1

    assert title_only.intent == Intent.product
    assert title_only.reward[0].n_constraints() == 1
    assert title_only.reward[0].price_range() is None

    assert shop.intent == Intent.shop
    assert [s.title for s in shop.reward] == [["A"], ["B"]]
    assert shop.reward[1].price_range().high == 50.0


# -- round trips ------------------------------------------------------------------------------

def test_to_shoppingbench_round_trips_every_dev_task():
    for path, rec in _raw_records():
        task = parse_task(rec, source=path.name)
        out = task.to_shoppingbench()
        expected = dict(rec)
        if "Knowledge_Attribute" in expected:
            # the knowledge fact is kept as text (a few are years written as JSON numbers)
            expected["Knowledge_Attribute"] = str(expected["Knowledge_Attribute"])
        assert out == expected, (path.name, rec["query"][:60])
        again = parse_task(json.loads(json.dumps(out)), source=path.name)
        assert again == task


def test_to_shoppingbench_keeps_the_product_shape():
    rec = {"query": "q", "reward": {"product_id": "1", "title": ["t"], "price": [{"between": [1, 2]}],
                                    "service": ["COD"]}}
    out = parse_task(rec).to_shoppingbench()
    assert isinstance(out["reward"], dict)  # a product task writes one dict, not a list
    assert detect_intent(out) == Intent.product
    shop = {"query": "q", "reward": [{"product_id": "1", "title": ["t"]}]}
    out = parse_task(shop).to_shoppingbench()
    assert isinstance(out["reward"], list) and detect_intent(out) == Intent.shop


def test_write_and_read_tasks_round_trip(tmp_path):
    tasks = load_tasks(DEV_FILES)
    path = tmp_path / "tasks.jsonl"
    write_tasks(tasks, path)
    back = read_tasks(path)
    assert back == tasks
    assert all(isinstance(t, Task) for t in back)
