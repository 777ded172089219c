"""A shopper behaviour simulator over the sandbox catalogue: impressions, clicks, purchases.

The item universe is the sandbox's special products (task golds and their decoys) plus the first
M generated filler products. Each simulated user has

- interests: a Dirichlet draw over the top-level categories ("A" of "A > B > C"), with a base
  measure proportional to sqrt(items per category), so big categories draw more users;
- a price preference: a preferred price level, in standard deviations of log-price within the
  item's top-level category (negative = likes cheaper than usual), and a tolerance around it;
- shop loyalty: a few favourite shops (drawn from the shops of their interest categories);
- a popularity bias: how much the sold_count pulls their clicks;
- service preferences: one weight per service (official, freeShipping, COD, flashsale).

A session picks a category from the user's interests and shows pages of `page_size` items: some
off-interest items from anywhere, the rest from the session category (sold_count-weighted or
uniform). After a click, a share of the next page comes from the clicked item's leaf category or
shop, and the user favours such items, so click sequences have real sequential structure.
Each shown item is clicked with probability sigmoid(bias + interest + price fit + loyalty +
popularity + services + similarity to the last click - position bias); clicks become purchases
with a second logistic model. All users advance in lock step, page by page, fully vectorised.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from recsys_core.data.simulated import FIELD_NAMES, ItemFeaturizer
from sandbox.data_model import SERVICES

DEFAULT_UNIVERSE = 20_000


@dataclass
class SimulatorParams:
    page_size: int = 10
    max_pages: int = 4  # pages per session at most; a session may end earlier
    interest_concentration: float = 0.3  # Dirichlet total mass: lower = users with fewer interests
    off_interest_share: float = 0.2  # share of a page drawn from the whole universe
    popular_share: float = 0.5  # of the in-category slots, drawn by sold_count (the rest uniformly)
    similar_share: float = 0.5  # after a click, share of the in-category slots from its leaf category or shop
    click_bias: float = -4.0
    interest_weight: float = 3.0  # × the category's interest relative to the user's top interest
    price_weight: float = 1.0  # × -0.5 ((relative log-price - preference) / tolerance)^2
    price_preference_sd: float = 0.8  # spread of users' preferred relative log-price
    price_tolerance: tuple[float, float] = (0.5, 1.5)  # log-uniform range of the tolerance
    favourite_shops: int = 3
    shop_weight: float = 1.5  # bonus for a favourite shop's items
    popularity_weight: float = 1.0  # mean over users of the weight on log sold_count (scaled to 0..1)
    popularity_weight_sd: float = 0.5
    service_weight_sd: float = 0.5  # spread of the per-service weights
    similar_weight: float = 1.0  # bonus for items of the last clicked item's leaf category or shop
    position_weight: float = 0.4  # × log(1 + position): users look at the top of a page more
    purchase_bias: float = -1.5
    purchase_price_weight: float = 1.0  # a good price fit turns clicks into purchases
    continue_after_click: float = 0.8  # chance to see another page after a page with a click
    continue_without_click: float = 0.4

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SimulatorParams:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown simulator parameters {unknown}; known: {sorted(known)}")
        return cls(**raw)

    def validate(self) -> None:
        if self.page_size < 1 or self.max_pages < 1 or self.favourite_shops < 0:
            raise ValueError("page_size and max_pages must be at least 1, favourite_shops at least 0")
        for name in ("off_interest_share", "popular_share", "similar_share", "continue_after_click",
                     "continue_without_click"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.interest_concentration <= 0 or min(self.price_tolerance) <= 0:
            raise ValueError("interest_concentration and price_tolerance must be positive")


class GroupSampler:
    """Draw one item per request from a given group (category, shop, ...), uniformly or in
    proportion to item weights, for many requests at once: items sorted by group, a global
    cumulative weight, one searchsorted."""

    def __init__(self, group_of: np.ndarray, n_groups: int, weights: np.ndarray | None = None):
        self.order = np.argsort(group_of, kind="stable")
        counts = np.bincount(group_of, minlength=n_groups)
        self.start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.count = counts
        w = np.ones(len(group_of)) if weights is None else np.asarray(weights, dtype=np.float64)[self.order]
        self.cum = np.cumsum(w)
        before = np.concatenate([[0.0], self.cum])
        self.weight_before = before[self.start]
        self.group_weight = before[self.start + counts] - self.weight_before

    def sample(self, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        target = self.weight_before[groups] + rng.random(groups.shape) * self.group_weight[groups]
        pos = np.searchsorted(self.cum, target, side="right")
        lo = self.start[groups]
        pos = np.clip(pos, lo, lo + np.maximum(self.count[groups], 1) - 1)
        return self.order[pos]


def _top_level(category: str) -> str:
    return category.split(">")[0].strip() or "Others"


def _read_special_products(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "special_products.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {data_dir} is not a built sandbox")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def item_universe(world, n_fillers: int | None = None) -> list[dict[str, Any]]:
    """Special products (golds + decoys) then the first `n_fillers` fillers; default: ~20k items."""
    specials = _read_special_products(Path(world.data_dir))
    if n_fillers is None:
        n_fillers = max(0, DEFAULT_UNIVERSE - len(specials))
    if n_fillers < 0:
        raise ValueError("the number of filler items must be 0 or more")
    seen: set[str] = set()
    universe = []
    for record in specials + world.filler_products(n_fillers):
        pid = str(record["product_id"])
        if pid not in seen:
            seen.add(pid)
            universe.append(record)
    return universe


class _Catalogue:
    """Per-item arrays of the universe (positions 0..n-1 = item indices 1..n)."""

    def __init__(self, records: list[dict[str, Any]], featurizer: ItemFeaturizer):
        self.n = len(records)
        self.fields = featurizer.fields_matrix(records)
        tops = [_top_level(str(r.get("category") or "")) for r in records]
        self.top_names = sorted(set(tops))
        top_id = {name: i for i, name in enumerate(self.top_names)}
        self.top = np.array([top_id[t] for t in tops], dtype=np.int64)
        self.leaf = self.fields[:, 1]
        self.shop = self.fields[:, 2]
        log_price = np.log(np.maximum(np.array([float(r.get("price") or 0.0) for r in records]), 0.01))
        n_top = len(self.top_names)
        counts = np.bincount(self.top, minlength=n_top)
        mean = np.bincount(self.top, weights=log_price, minlength=n_top) / np.maximum(counts, 1)
        var = np.bincount(self.top, weights=(log_price - mean[self.top]) ** 2, minlength=n_top) / np.maximum(counts, 1)
        # Price level within the category: a cheap phone and a cheap spice are both "cheap".
        self.relative_price = (log_price - mean[self.top]) / np.maximum(np.sqrt(var), 0.3)[self.top]
        self.top_counts = counts
        sold = np.array([max(0, int(r.get("sold_count") or 0)) for r in records], dtype=np.float64)
        self.popularity = np.log1p(sold) / max(np.log1p(sold).max(), 1e-9)
        self.services = np.array([[s in (r.get("service") or []) for s in SERVICES] for r in records],
                                 dtype=np.float64).reshape(self.n, len(SERVICES))
        self.by_top = GroupSampler(self.top, n_top)
        self.by_top_popular = GroupSampler(self.top, n_top, weights=1.0 + sold)
        self.by_leaf = GroupSampler(self.leaf, int(self.leaf.max()) + 1)
        self.by_shop = GroupSampler(self.shop, int(self.shop.max()) + 1)


@dataclass
class _Users:
    interests: np.ndarray  # [U, K] Dirichlet draws over top-level categories
    price_preference: np.ndarray  # [U]
    price_tolerance: np.ndarray  # [U]
    popularity_weight: np.ndarray  # [U]
    service_weights: np.ndarray  # [U, S]
    favourite_shops: np.ndarray  # [U, n_fav] shop ids (field ids)


def _sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cum = np.cumsum(probs, axis=1)
    return np.minimum((rng.random(len(probs))[:, None] * cum[:, -1:] > cum).sum(axis=1), probs.shape[1] - 1)


def _draw_users(n_users: int, cat: _Catalogue, p: SimulatorParams, rng: np.random.Generator) -> _Users:
    base = np.sqrt(cat.top_counts.astype(np.float64))
    alpha = p.interest_concentration * len(base) * base / base.sum()
    interests = rng.dirichlet(alpha, size=n_users)
    interests = np.where(np.isfinite(interests), interests, 0.0)
    interests[interests.sum(axis=1) == 0, int(np.argmax(base))] = 1.0
    favourite = np.zeros((n_users, p.favourite_shops), dtype=np.int64)
    for f in range(p.favourite_shops):
        favourite[:, f] = cat.shop[cat.by_top.sample(_sample_rows(interests, rng), rng)]
    low, high = np.log(p.price_tolerance[0]), np.log(p.price_tolerance[1])
    return _Users(
        interests=interests,
        price_preference=rng.normal(0.0, p.price_preference_sd, n_users),
        price_tolerance=np.exp(rng.uniform(min(low, high), max(low, high), n_users)),
        popularity_weight=rng.normal(p.popularity_weight, p.popularity_weight_sd, n_users),
        service_weights=rng.normal(0.0, p.service_weight_sd, (n_users, len(SERVICES))),
        favourite_shops=favourite,
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _page(users: np.ndarray, session_top: np.ndarray, last: np.ndarray, cat: _Catalogue, p: SimulatorParams,
          rng: np.random.Generator) -> np.ndarray:
    """[len(users), page_size] item positions, no duplicates within a page, never the last click."""
    shape = (len(users), p.page_size)
    has_last = (last >= 0)[:, None]
    last_item = np.maximum(last, 0)
    top = np.broadcast_to(session_top[:, None], shape)
    popular = cat.by_top_popular.sample(top, rng)
    uniform = cat.by_top.sample(top, rng)
    same_leaf = cat.by_leaf.sample(np.broadcast_to(cat.leaf[last_item][:, None], shape), rng)
    same_shop = cat.by_shop.sample(np.broadcast_to(cat.shop[last_item][:, None], shape), rng)
    anywhere = rng.integers(cat.n, size=shape)
    in_category = np.where(rng.random(shape) < p.popular_share, popular, uniform)
    similar = np.where(rng.random(shape) < 0.5, same_leaf, same_shop)
    in_category = np.where(has_last & (rng.random(shape) < p.similar_share), similar, in_category)
    page = np.where(rng.random(shape) < p.off_interest_share, anywhere, in_category)
    earlier = np.tril(np.ones((p.page_size, p.page_size), dtype=bool), k=-1)
    for _ in range(3):
        dup = ((page[:, :, None] == page[:, None, :]) & earlier).any(axis=2) | (has_last & (page == last[:, None]))
        if not dup.any():
            break
        page[dup] = rng.integers(cat.n, size=int(dup.sum()))
    return page


def _click_logits(users: np.ndarray, page: np.ndarray, last: np.ndarray, u: _Users, cat: _Catalogue,
                  p: SimulatorParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(click logits, price fit, loyalty) of every shown item."""
    theta = u.interests[users]
    interest = np.take_along_axis(theta, cat.top[page], axis=1) / theta.max(axis=1, keepdims=True)
    price_fit = -0.5 * ((cat.relative_price[page] - u.price_preference[users, None])
                        / u.price_tolerance[users, None]) ** 2
    loyal = (cat.shop[page][:, :, None] == u.favourite_shops[users][:, None, :]).any(axis=2) \
        if u.favourite_shops.shape[1] else np.zeros(page.shape, dtype=bool)
    services = np.einsum("ups,us->up", cat.services[page], u.service_weights[users])
    last_item = np.maximum(last, 0)
    similar = (last >= 0)[:, None] & ((cat.leaf[page] == cat.leaf[last_item][:, None])
                                      | (cat.shop[page] == cat.shop[last_item][:, None]))
    position = np.log1p(np.arange(p.page_size))[None, :]
    logits = (p.click_bias + p.interest_weight * interest + p.price_weight * price_fit + p.shop_weight * loyal
              + u.popularity_weight[users, None] * cat.popularity[page] + services + p.similar_weight * similar
              - p.position_weight * position)
    return logits, price_fit, loyal


def run_simulation(records: list[dict[str, Any]], n_users: int, sessions_per_user: int = 8, seed: int = 0,
                   params: SimulatorParams | None = None, progress: bool = True):
    """(featurizer, catalogue arrays, users, impressions dict of numpy columns) for a universe."""
    from tqdm.auto import tqdm

    p = params or SimulatorParams()
    p.validate()
    if n_users < 1 or sessions_per_user < 1:
        raise ValueError("users and sessions per user must be at least 1")
    rng = np.random.default_rng(seed)
    featurizer = ItemFeaturizer.build(records)
    cat = _Catalogue(records, featurizer)
    users = _draw_users(n_users, cat, p, rng)
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("user", "session", "item", "position", "clicked",
                                                           "purchased")}
    positions = np.arange(p.page_size)
    with tqdm(total=sessions_per_user * p.max_pages, desc="simulating", unit="page", disable=not progress) as bar:
        for session in range(sessions_per_user):
            session_top = _sample_rows(users.interests, rng)
            last = np.full(n_users, -1, dtype=np.int64)
            active = np.ones(n_users, dtype=bool)
            for _ in range(p.max_pages):
                bar.update(1)
                ids = np.flatnonzero(active)
                if not len(ids):
                    continue
                page = _page(ids, session_top[ids], last[ids], cat, p, rng)
                logits, price_fit, loyal = _click_logits(ids, page, last[ids], users, cat, p)
                clicked = rng.random(page.shape) < _sigmoid(logits)
                purchase_logits = p.purchase_bias + p.purchase_price_weight * price_fit + 0.5 * loyal
                purchased = clicked & (rng.random(page.shape) < _sigmoid(purchase_logits))
                columns["user"].append(np.repeat(ids, p.page_size))
                columns["session"].append(np.repeat(ids * sessions_per_user + session, p.page_size))
                columns["item"].append(page.ravel() + 1)
                columns["position"].append(np.tile(positions, len(ids)))
                columns["clicked"].append(clicked.ravel())
                columns["purchased"].append(purchased.ravel())
                any_click = clicked.any(axis=1)
                # Users read a page top to bottom: the lowest clicked slot is the latest click.
                last_slot = p.page_size - 1 - np.argmax(clicked[:, ::-1], axis=1)
                last[ids] = np.where(any_click, page[np.arange(len(ids)), last_slot], last[ids])
                keep = np.where(any_click, p.continue_after_click, p.continue_without_click)
                active[ids] = rng.random(len(ids)) < keep
    impressions = {
        "user": np.concatenate(columns["user"]).astype(np.int64),
        "session": np.concatenate(columns["session"]).astype(np.int64),
        "item": np.concatenate(columns["item"]).astype(np.int64),
        "position": np.concatenate(columns["position"]).astype(np.int64),
        "clicked": np.concatenate(columns["clicked"]).astype(np.int8),
        "purchased": np.concatenate(columns["purchased"]).astype(np.int8),
    }
    # Rows were produced in time order (session round, page, user, slot): that order is the clock.
    impressions["ts"] = np.arange(len(impressions["user"]), dtype=np.int64)
    return featurizer, cat, users, impressions


def click_sequences(impressions: dict[str, np.ndarray], n_users: int) -> list[np.ndarray]:
    """Clicked item indices per user, in time order."""
    clicked = impressions["clicked"] == 1
    user = impressions["user"][clicked]
    item = impressions["item"][clicked]
    order = np.argsort(user, kind="stable")  # stable: keeps time order within a user
    bounds = np.searchsorted(user[order], np.arange(n_users + 1))
    return np.split(item[order], bounds[1:-1])


def _write_items(out: Path, records: list[dict[str, Any]], fields_matrix: np.ndarray) -> None:
    with (out / "items.jsonl").open("w", encoding="utf-8") as fh:
        for index, (r, f) in enumerate(zip(records, fields_matrix, strict=True), 1):
            fh.write(json.dumps({
                "index": index, "product_id": str(r["product_id"]), "title": str(r.get("title", "")),
                "category": str(r.get("category") or ""), "shop_id": str(r.get("shop_id") or ""),
                "brand": str(r.get("brand") or ""), "price": float(r.get("price") or 0.0),
                "service": list(r.get("service") or []), "fields": [int(x) for x in f],
            }, ensure_ascii=False) + "\n")


def _write_users(out: Path, users: _Users, cat: _Catalogue) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(users.price_preference)
    table = pa.table({
        "user": pa.array(np.arange(n, dtype=np.int64)),
        "top_interest": pa.array([cat.top_names[i] for i in users.interests.argmax(axis=1)]),
        "interests": pa.array(list(users.interests.astype(np.float32)), type=pa.list_(pa.float32())),
        "price_preference": pa.array(users.price_preference),
        "price_tolerance": pa.array(users.price_tolerance),
        "popularity_weight": pa.array(users.popularity_weight),
        "service_weights": pa.array(list(users.service_weights.astype(np.float32)), type=pa.list_(pa.float32())),
        "favourite_shops": pa.array(list(users.favourite_shops), type=pa.list_(pa.int64())),
    })
    pq.write_table(table, out / "users.parquet")


def simulate(world_or_dir, out_dir: str | Path, n_users: int, n_fillers: int | None = None, seed: int = 0,
             sessions_per_user: int = 8, params: SimulatorParams | None = None, progress: bool = True
             ) -> dict[str, Any]:
    """Simulate `n_users` shoppers over a built sandbox and write the simulator folder; returns the
    manifest. `world_or_dir` is an open `ShoppingWorld` or a sandbox data dir."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sandbox.world import ShoppingWorld

    started = time.perf_counter()
    params = params or SimulatorParams()
    own_world = not isinstance(world_or_dir, ShoppingWorld)
    world = ShoppingWorld.open(world_or_dir) if own_world else world_or_dir
    try:
        records = item_universe(world, n_fillers)
    finally:
        if own_world:
            world.close()
    n_special = len(_read_special_products(Path(world.data_dir)))
    featurizer, cat, users, impressions = run_simulation(records, n_users, sessions_per_user, seed, params, progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_items(out, records, cat.fields)
    featurizer.save(out)
    (out / "field_vocab.json").write_text(json.dumps({"names": list(FIELD_NAMES), "sizes": featurizer.sizes}))
    order = ["user", "session", "ts", "item", "position", "clicked", "purchased"]
    pq.write_table(pa.table({k: impressions[k] for k in order}), out / "impressions.parquet")
    sequences = click_sequences(impressions, n_users)
    with (out / "sequences.jsonl").open("w") as fh:
        for user, seq in enumerate(sequences):
            fh.write(json.dumps({"user": user, "items": seq.tolist()}) + "\n")
    _write_users(out, users, cat)
    lengths = np.array([len(s) for s in sequences])
    manifest = {
        "sandbox": str(Path(world.data_dir).resolve()), "users": n_users, "seed": seed,
        "sessions_per_user": sessions_per_user,
        "counts": {
            "items": len(records), "special_items": min(n_special, len(records)),
            "filler_items": len(records) - min(n_special, len(records)),
            "impressions": int(len(impressions["item"])), "clicks": int(impressions["clicked"].sum()),
            "purchases": int(impressions["purchased"].sum()),
            "sessions": int(len(np.unique(impressions["session"]))),
            "users_with_3_clicks": int((lengths >= 3).sum()), "mean_sequence_length": float(lengths.mean()),
        },
        "click_rate": float(impressions["clicked"].mean()),
        "fields": {"names": list(FIELD_NAMES), "sizes": featurizer.sizes},
        "interest_categories": cat.top_names,
        "params": asdict(params),
        "seconds": round(time.perf_counter() - started, 2),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
