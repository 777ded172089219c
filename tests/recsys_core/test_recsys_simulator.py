"""The shopper simulator over the sandbox catalogue: its folder format, determinism, behaviour, and the
featurizer that maps any catalogue product to the simulator's fields."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys_core.data.simulated import ItemFeaturizer, item_fields, load_items, load_simulated_sequences
from recsys_core.simulate import SimulatorParams, simulate

N_USERS = 600


@pytest.fixture(scope="module")
def sim(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    manifest = simulate(world, out, n_users=N_USERS, seed=7, sessions_per_user=6, progress=False)
    return out, manifest


def _top(category: str) -> str:
    return category.split(">")[0].strip() or "Others"


def test_folder_format(sim, world):
    out, manifest = sim
    for name in ("items.jsonl", "field_vocab.json", "impressions.parquet", "sequences.jsonl", "manifest.json",
                 "featurizer.json"):
        assert (out / name).exists(), name
    items = load_items(out)
    vocab = json.loads((out / "field_vocab.json").read_text())
    assert vocab["names"] == ["item", "category", "shop", "brand", "price_bucket"]
    assert vocab["sizes"][0] == len(items) + 1 == manifest["counts"]["items"] + 1
    # The universe holds every task product (golds and decoys) of the sandbox.
    specials = {json.loads(line)["product_id"] for line in (world.data_dir / "special_products.jsonl").open()}
    assert specials <= {it["product_id"] for it in items}
    fields = item_fields(out)
    assert (fields[1:, 0] == np.arange(1, len(items) + 1)).all()
    assert (fields >= 0).all() and (fields < np.array(vocab["sizes"])).all()
    assert (fields[1:, 1] > 0).all() and (fields[1:, 4] > 0).all()  # every item has a category and a price bucket
    first = items[0]
    assert set(first) == {"index", "product_id", "title", "category", "shop_id", "brand", "price", "service", "fields"}

    imp = pd.read_parquet(out / "impressions.parquet")
    assert list(imp.columns) == ["user", "session", "ts", "item", "position", "clicked", "purchased"]
    assert imp["clicked"].dtype == np.int8 and imp["user"].dtype == np.int64
    assert (imp["ts"].to_numpy() == np.arange(len(imp))).all()
    assert imp["item"].between(1, len(items)).all() and imp["position"].between(0, 9).all()
    assert set(imp["clicked"].unique()) <= {0, 1} and (imp["purchased"] <= imp["clicked"]).all()
    assert not imp.duplicated(["session", "ts"]).any()
    per_session = imp.groupby("session").size()
    assert (per_session % 10 == 0).all() and per_session.max() <= 10 * SimulatorParams().max_pages
    assert (imp.groupby("session")["user"].nunique() == 1).all()
    # sequences.jsonl = each user's clicks in time order
    seqs = [json.loads(line) for line in (out / "sequences.jsonl").read_text().splitlines()]
    assert [s["user"] for s in seqs] == list(range(N_USERS))
    clicks = imp[imp["clicked"] == 1].sort_values("ts")
    for s in seqs[:50]:
        assert s["items"] == clicks.loc[clicks["user"] == s["user"], "item"].tolist()
    assert manifest["counts"]["clicks"] == len(clicks) == sum(len(s["items"]) for s in seqs)
    assert 0.03 < manifest["click_rate"] < 0.4


def test_same_seed_same_logs_other_seed_other_logs(world, tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        simulate(world, tmp_path / name, n_users=120, n_fillers=200, seed=seed, sessions_per_user=3, progress=False)
        runs[name] = pd.read_parquet(tmp_path / name / "impressions.parquet")
    pd.testing.assert_frame_equal(runs["a"], runs["b"])
    assert (tmp_path / "a" / "items.jsonl").read_text() == (tmp_path / "b" / "items.jsonl").read_text()
    assert (tmp_path / "a" / "sequences.jsonl").read_text() == (tmp_path / "b" / "sequences.jsonl").read_text()
    assert len(runs["a"]) != len(runs["c"]) or not runs["a"].equals(runs["c"])


def test_users_click_their_interests_their_price_level_and_the_top_of_the_page(sim):
    out, manifest = sim
    imp = pd.read_parquet(out / "impressions.parquet")
    users = pd.read_parquet(out / "users.parquet")
    items = load_items(out)
    tops = manifest["interest_categories"]
    top_of = np.array([-1] + [tops.index(_top(it["category"])) for it in items])
    interests = np.stack(users["interests"].to_numpy())
    interest = interests[imp["user"].to_numpy(), top_of[imp["item"].to_numpy()]]
    clicked = imp["clicked"].to_numpy() == 1
    ctr_main, ctr_rare = clicked[interest >= 0.5].mean(), clicked[interest < 0.05].mean()
    assert (interest < 0.05).sum() > 1000  # off-interest items are shown, and rarely clicked
    assert ctr_main > 4 * ctr_rare

    # price: within-category relative log-price of clicked items follows the users' preference
    log_price = np.log(np.maximum([1.0] + [it["price"] for it in items], 0.01))
    relative = np.zeros_like(log_price)
    for t in range(len(tops)):
        mask = top_of == t
        relative[mask] = (log_price[mask] - log_price[mask].mean()) / max(log_price[mask].std(), 0.3)
    click_rows = imp[clicked]
    preference = users["price_preference"].to_numpy()[click_rows["user"].to_numpy()]
    clicked_price = relative[click_rows["item"].to_numpy()]
    cheap_lovers, premium_lovers = clicked_price[preference < -0.5].mean(), clicked_price[preference > 0.5].mean()
    assert premium_lovers - cheap_lovers > 0.4

    by_position = imp.groupby("position")["clicked"].mean()
    assert by_position[0] > 1.3 * by_position[9]


def test_consecutive_clicks_share_shop_or_leaf_category_more_than_chance(sim):
    out, _ = sim
    fields = item_fields(out)
    seqs = [np.array(json.loads(line)["items"]) for line in (out / "sequences.jsonl").read_text().splitlines()]
    prev = np.concatenate([s[:-1] for s in seqs if len(s) > 1])
    nxt = np.concatenate([s[1:] for s in seqs if len(s) > 1])
    shuffled = np.random.default_rng(0).permutation(nxt)
    same_shop, chance_shop = (fields[prev, 2] == fields[nxt, 2]).mean(), (fields[prev, 2] == fields[shuffled, 2]).mean()
    same_leaf, chance_leaf = (fields[prev, 1] == fields[nxt, 1]).mean(), (fields[prev, 1] == fields[shuffled, 1]).mean()
    assert same_shop > 4 * chance_shop  # favourite shops alone give ~2.5x; the last-click bias the rest
    assert same_leaf > chance_leaf + 0.1


def test_sequences_load_as_sequence_data_with_titles_and_attributes(sim):
    out, _ = sim
    data = load_simulated_sequences(out)
    items = load_items(out)
    sizes = json.loads((out / "field_vocab.json").read_text())["sizes"]
    assert data.n_items == len(items) and data.item_text[1] == items[0]["title"]
    assert data.item_ids[1] == items[0]["product_id"]
    assert all(len(s) >= 3 for s in data.sequences) and data.n_users > 0.8 * N_USERS
    assert data.n_attributes == sum(s - 1 for s in sizes[1:])
    # first attribute = the leaf category id, so item_category() groups items by category
    assert (data.item_category()[1:] == item_fields(out)[1:, 1]).all()
    attrs = np.concatenate([a for a in data.item_attributes if a])
    assert attrs.min() >= 1 and attrs.max() <= data.n_attributes
    # ratings: the click → purchase cascade, 1 on exactly the clicks that ended in a purchase
    log = pd.read_parquet(out / "impressions.parquet")
    assert [len(r) for r in data.ratings] == [len(s) for s in data.sequences]
    assert sum(int(r.sum()) for r in data.ratings) == int(log.loc[log["user"].isin(kept_users(out)), "purchased"].sum()) > 0
    bought_clicks = log[log["purchased"] > 0].groupby("user")["item"].apply(set)
    for user, seq, r in zip(kept_users(out), data.sequences, data.ratings, strict=True):
        assert set(seq[r > 0].tolist()) == bought_clicks.get(user, set())
    # a log that does not match the sequences gives no labels rather than wrong ones
    (out / "impressions.parquet").rename(out / "impressions.bak")
    try:
        log.assign(item=log["item"].sample(frac=1.0, random_state=0).to_numpy()).to_parquet(out / "impressions.parquet")
        assert load_simulated_sequences(out).ratings is None
    finally:
        (out / "impressions.bak").replace(out / "impressions.parquet")


def kept_users(out):
    rows = [json.loads(line) for line in (out / "sequences.jsonl").read_text().splitlines() if line.strip()]
    return [r["user"] for r in rows if len(r["items"]) >= 3]


def test_featurizer_maps_products_outside_the_universe_to_item_0_with_their_real_side_fields(world, tmp_path):
    simulate(world, tmp_path, n_users=50, n_fillers=300, seed=0, sessions_per_user=2, progress=False)
    featurizer = ItemFeaturizer.load(tmp_path)
    items = load_items(tmp_path)
    in_universe = {it["product_id"] for it in items}
    shop_ids = {it["shop_id"]: it["fields"][2] for it in items}
    category_ids = {it["category"]: it["fields"][1] for it in items}
    outside = [p for p in world.filler_products(1500, start=300)
               if p["product_id"] not in in_universe and p["shop_id"] in shop_ids and p["category"] in category_ids]
    assert outside, "some catalogue products outside the universe sell in the universe's shops"
    product = world.products([outside[0]["product_id"]])[outside[0]["product_id"]]  # the catalogue's record
    fields = featurizer.fields_for(product)
    assert featurizer.index_of(product["product_id"]) == 0
    assert fields[0] == 0 and fields[1] == category_ids[product["category"]] and fields[2] == shop_ids[product["shop_id"]]
    assert 1 <= fields[4] <= 10
    # an item of the universe gets exactly its items.jsonl fields
    assert featurizer.fields_for(world.products([items[5]["product_id"]])[items[5]["product_id"]]) == items[5]["fields"]
    stranger = {"product_id": "x1", "shop_id": "no-such-shop", "brand": "Nobody", "category": "Nowhere", "price": 1e9}
    assert featurizer.fields_for(stranger) == [0, 0, 0, 0, 10]
    with pytest.raises(ValueError, match="dict"):
        featurizer.fields_for("1052242881")


def test_bad_parameters_and_inputs_give_clear_errors(world, tmp_path):
    with pytest.raises(ValueError, match="unknown simulator parameters"):
        SimulatorParams.from_dict({"clik_bias": 1})
    with pytest.raises(ValueError, match="between 0 and 1"):
        simulate(world, tmp_path, n_users=5, params=SimulatorParams(off_interest_share=2), progress=False)
    with pytest.raises(FileNotFoundError, match="not a simulator output folder"):
        load_simulated_sequences(tmp_path / "missing")


def test_cli_simulate(small_sandbox, tmp_path):
    from recsys_core.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["simulate", "--data-dir", str(small_sandbox), "--users", "40", "--out",
                                 str(tmp_path / "s"), "--items", "100", "--seed", "1", "--sessions-per-user", "2",
                                 "--param", "click_bias=-3.5", "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["users"] == 40 and manifest["params"]["click_bias"] == -3.5
    assert manifest["counts"]["filler_items"] == 100
    bad = runner.invoke(app, ["simulate", "--data-dir", str(tmp_path / "nope"), "--users", "5", "--out",
                              str(tmp_path / "t"), "--no-progress"])
    assert bad.exit_code == 2 and "not a built sandbox" in bad.output
    bad_param = runner.invoke(app, ["simulate", "--data-dir", str(small_sandbox), "--users", "5", "--out",
                                    str(tmp_path / "t"), "--param", "nonsense=1", "--no-progress"])
    assert bad_param.exit_code == 2 and "unknown simulator parameters" in bad_param.output
