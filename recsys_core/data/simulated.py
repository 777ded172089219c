"""Reading a simulator output folder (`shoplab recsys simulate`): click sequences, items, and the
featurizer that turns any catalogue product into the simulator's categorical fields.

Fields of an item: [item index, category id, shop idx, brand idx, price bucket]; 0 = unknown or
padding in every field. A catalogue product outside the simulated universe keeps its real
category / shop / brand / price bucket and gets item 0, so a ranker can still score it.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from recsys_core.data.sequences import SequenceData

FIELD_NAMES = ("item", "category", "shop", "brand", "price_bucket")
N_PRICE_BUCKETS = 10
FEATURIZER_FILE = "featurizer.json"


def _sim_folder(path: str | Path) -> Path:
    folder = Path(path)
    if not (folder / "items.jsonl").exists():
        raise FileNotFoundError(f"{folder} is not a simulator output folder (no items.jsonl); "
                                f"make one with `shoplab recsys simulate --data-dir SANDBOX --users N --out {folder}`")
    return folder


def _log_price(price: Any) -> float:
    try:
        value = float(price)
    except (TypeError, ValueError):
        value = 0.0
    if not math.isfinite(value):
        value = 0.0
    return math.log(max(value, 0.01))


class ItemFeaturizer:
    """Vocabularies of the simulated universe: product id → item index, category / shop / brand →
    ids, and the log-price decile edges. Built once by the simulator, saved as featurizer.json."""

    def __init__(self, product_ids: list[str], categories: list[str], shops: list[str], brands: list[str],
                 price_edges: list[float]):
        self.product_ids = list(product_ids)
        self.categories = list(categories)
        self.shops = list(shops)
        self.brands = list(brands)
        self.price_edges = np.asarray(price_edges, dtype=np.float64)
        self._edges = [float(e) for e in self.price_edges]  # bisect on a list: no numpy call per product
        self._item = {pid: i + 1 for i, pid in enumerate(self.product_ids)}
        self._category = {c: i + 1 for i, c in enumerate(self.categories)}
        self._shop = {s: i + 1 for i, s in enumerate(self.shops)}
        self._brand = {b: i + 1 for i, b in enumerate(self.brands)}

    @classmethod
    def build(cls, records: list[dict[str, Any]]) -> ItemFeaturizer:
        """Vocabularies from the universe's records, in index order (item i+1 = records[i])."""
        if not records:
            raise ValueError("the item universe is empty")
        log_prices = np.array([_log_price(r.get("price")) for r in records])
        edges = np.quantile(log_prices, np.arange(1, N_PRICE_BUCKETS) / N_PRICE_BUCKETS)
        return cls(
            product_ids=[str(r["product_id"]) for r in records],
            categories=sorted({str(r.get("category") or "") for r in records}),
            shops=sorted({str(r.get("shop_id") or "") for r in records} - {""}),
            # No brand is no information: "" stays 0, like a brand the universe never saw.
            brands=sorted({str(r.get("brand") or "").strip() for r in records} - {""}),
            price_edges=edges.tolist(),
        )

    @classmethod
    def load(cls, path: str | Path) -> ItemFeaturizer:
        """From a simulator folder or its featurizer.json."""
        path = Path(path)
        file = path / FEATURIZER_FILE if path.is_dir() else path
        if not file.exists():
            raise FileNotFoundError(f"{file} not found: is {path} a simulator output folder?")
        raw = json.loads(file.read_text())
        return cls(raw["product_ids"], raw["categories"], raw["shops"], raw["brands"], raw["price_edges"])

    def save(self, folder: str | Path) -> Path:
        file = Path(folder) / FEATURIZER_FILE
        file.write_text(json.dumps({"names": list(FIELD_NAMES), "sizes": self.sizes,
                                    "product_ids": self.product_ids, "categories": self.categories,
                                    "shops": self.shops, "brands": self.brands,
                                    "price_edges": self.price_edges.tolist()}))
        return file

    @property
    def n_items(self) -> int:
        return len(self.product_ids)

    @property
    def names(self) -> list[str]:
        return list(FIELD_NAMES)

    @property
    def sizes(self) -> list[int]:
        """Vocabulary size of every field, id 0 included."""
        return [self.n_items + 1, len(self.categories) + 1, len(self.shops) + 1, len(self.brands) + 1,
                N_PRICE_BUCKETS + 1]

    def index_of(self, product_id: Any) -> int:
        """The item index of a product, 0 when it is outside the simulated universe."""
        return self._item.get(str(product_id), 0)

    def price_bucket(self, price: Any) -> int:
        return 1 + bisect.bisect_right(self._edges, _log_price(price))

    def fields_for(self, product_record: dict[str, Any]) -> list[int]:
        """[item, category, shop, brand, price bucket] of a catalogue product record."""
        if not isinstance(product_record, dict):
            raise ValueError(f"a product record is a dict, not {type(product_record).__name__}")
        return [
            self.index_of(product_record.get("product_id", "")),
            self._category.get(str(product_record.get("category") or ""), 0),
            self._shop.get(str(product_record.get("shop_id") or ""), 0),
            self._brand.get(str(product_record.get("brand") or "").strip(), 0),
            self.price_bucket(product_record.get("price")),
        ]

    def fields_matrix(self, records: Iterable[dict[str, Any]]) -> np.ndarray:
        rows = [self.fields_for(r) for r in records]
        return np.asarray(rows, dtype=np.int64).reshape(len(rows), len(FIELD_NAMES))


def load_items(path: str | Path) -> list[dict[str, Any]]:
    """items.jsonl of a simulator folder: one dict per item, list position i = item index i + 1."""
    folder = _sim_folder(path)
    items = [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines() if line.strip()]
    for position, item in enumerate(items, 1):
        if item.get("index") != position:
            raise ValueError(f"{folder}/items.jsonl: line {position} has index {item.get('index')}; "
                             "items must be listed in index order 1..n")
    return items


def load_field_vocab(path: str | Path) -> dict[str, list]:
    folder = _sim_folder(path)
    return json.loads((folder / "field_vocab.json").read_text())


def item_fields(path: str | Path) -> np.ndarray:
    """int64 [n_items + 1, F]: the fields of every item (row 0 = padding, all zeros)."""
    items = load_items(path)
    out = np.zeros((len(items) + 1, len(FIELD_NAMES)), dtype=np.int64)
    for item in items:
        out[item["index"]] = item["fields"]
    return out


def load_simulated_sequences(path: str | Path) -> SequenceData:
    """Click sequences of a simulator folder as `SequenceData` (users with at least 3 clicks, as the
    leave-one-out split needs). Attributes: category, shop, brand, price bucket, offset into one
    attribute space (category first, so `item_category()` is the leaf category)."""
    folder = _sim_folder(path)
    items = load_items(folder)
    n_items = len(items)
    sizes = load_field_vocab(folder)["sizes"]
    offsets = np.concatenate([[0], np.cumsum([s - 1 for s in sizes[1:]])])
    attributes: list[list[int]] = [[]]
    for item in items:
        fields = item["fields"]
        attributes.append([int(offsets[f - 1] + fields[f]) for f in range(1, len(fields)) if fields[f] > 0])
    sequences, users = [], []
    seq_file = folder / "sequences.jsonl"
    if not seq_file.exists():
        raise FileNotFoundError(f"{seq_file} not found: the simulation did not finish")
    for line in seq_file.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        seq = np.asarray(row["items"], dtype=np.int64)
        if len(seq) >= 3:
            if seq.min() < 1 or seq.max() > n_items:
                raise ValueError(f"{seq_file}: item index outside 1..{n_items}")
            sequences.append(seq)
            users.append(int(row["user"]))
    if not sequences:
        raise ValueError(f"{folder}: no user has 3 or more clicks; simulate more users or sessions")
    return SequenceData("simulated", sequences, n_items, attributes, int(offsets[-1]),
                        item_ids=[""] + [str(it["product_id"]) for it in items],
                        item_text=[""] + [str(it.get("title", "")) for it in items],
                        ratings=click_purchases(folder, users, sequences))


def click_purchases(folder: Path, users: list[int], sequences: list[np.ndarray]) -> list[np.ndarray] | None:
    """Per user, 1.0 for each click that ended in a purchase, else 0.0 (aligned with the click sequence), as
    `SequenceData.ratings`: the click → purchase cascade of multi-objective retrieval (a conversion is a
    rating >= 1). None when the folder has no impression log or it does not match the sequences."""
    path = folder / "impressions.parquet"
    if not path.exists():
        return None
    import pandas as pd

    log = pd.read_parquet(path, columns=["user", "session", "ts", "position", "item", "clicked", "purchased"])
    clicks = log[log["clicked"] > 0].sort_values(["user", "session", "ts", "position"], kind="stable")
    by_user = {int(u): g for u, g in clicks.groupby("user", sort=False)}
    out = []
    for user, seq in zip(users, sequences, strict=True):
        rows = by_user.get(user)
        if rows is None or not np.array_equal(rows["item"].to_numpy(), seq):
            return None  # a log from another run: no labels rather than wrong ones
        out.append((rows["purchased"].to_numpy() > 0).astype(np.float32))
    return out
