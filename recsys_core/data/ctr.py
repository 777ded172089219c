"""CTR samples for the ranking models (DIN, DeepFM, GPSD), in the batch contract of the zoo.

A sample is a user history (items, each given by F categorical field ids, field 0 = item index) and
one candidate item. Batches are dicts of tensors: `hist_fields` [B, T, F] (left-padded with 0, T =
the longest history in the batch, at most `max_len`), `cand_fields` [B, F], `label` [B], `user` [B];
samples without histories (the Ali-CCP / Criteo samples) carry `cand_fields` = every sparse field
and `dense` [B, D] instead of `hist_fields`.

Three `data.kind`s:

`sequences`: any `load_sequences` source (`data.source`: s3rec | simulated | synthetic, default
  s3rec), e.g. S3-Rec Beauty. Protocol (GPSD's "last item positive + one random negative", applied
  to every training position):
  - item fields = [item index, category] (category = `SequenceData.item_category()`).
  - train: for every user and every position t >= 1 of the training prefix (all but the last two
    items), the item at t is a positive with history = the items before t (the last `max_len`,
    default 50), and one negative with the same history: a uniformly random item the user never
    interacted with (anywhere in their sequence). Training negatives are drawn anew every epoch.
    `data.max_train_positions: K` keeps only the last K positions of each prefix (K = 1 is GPSD's
    own "last item + one negative" sample set; 0, the default, keeps every position).
  - valid: history = the training prefix, candidates = the second-to-last item + one negative.
  - test: history = everything but the last item, candidates = the last item + one negative.
  - valid/test negatives come from `data.eval_seed` (default 0), not from the run seed: every model
    and seed is scored on the same pairs, so comparisons are paired.

`simulated`: a simulator output folder (items.jsonl, field_vocab.json, impressions.parquet).
  - one sample per impression row, label = clicked; item fields = the item's `fields`.
  - history = the user's clicked items strictly before the impression's `ts`.
  - time split per user: sessions ordered by their first `ts`; the last session is test, the
    second-to-last valid, all earlier sessions train (a user with one session only has test rows).
  - during training the candidate's item-id field is replaced by 0 (unknown) with probability
    `data.cold_item_rate` (default 0.1), so a model can score catalogue items it never saw from
    their side fields.

`ctr_sample`: the committed Ali-CCP / Criteo samples (data/ctr_samples/): no history.
  - a folder with `*train*`, `*val*` and `*test*` CSVs, or one CSV split 80/10/10 by
    `data.split_seed` (default 0).
  - label column `click` or `label` (or `data.label_column`); dense columns: `D...` (Ali-CCP),
    `I1..I13` (Criteo) or `data.dense_columns`; every other column except other labels
    (`purchase`) is sparse.
  - sparse values are label-encoded on train (1..K; values unseen in train -> 0, missing values are
    a category of their own); dense values are log-transformed (sign(x)·log1p|x|, missing -> 0)
    and standardised with train statistics.
  - `user`: Ali-CCP's column `101` (or `data.user_column`) for GAUC; none for Criteo.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys_core.data.movielens import (
    GENRE_GROUPS,
    ITEM_FIELDS,
    USER_FIELDS,
    MovieLens,
    genre_group_table,
    load_movielens,
)
from recsys_core.data.semantic_ids import load_router, load_run_codes
from recsys_core.data.sequences import SequenceData
from recsys_core.data.sources import load_sequences

SPLITS = ("train", "valid", "test")


@dataclass
class HistorySamples:
    """Samples whose history is a slice of one user's item sequence in `flat_items`: the
    `hist_len` items starting at `hist_start` (the model sees the last `max_len` of them)."""

    hist_start: np.ndarray
    hist_len: np.ndarray
    cand: np.ndarray
    label: np.ndarray
    user: np.ndarray
    ts: np.ndarray | None = None  # the sample's time, where a model needs it (batches then carry `ts`)

    def __len__(self) -> int:
        return len(self.cand)

    @staticmethod
    def concat(parts: list[HistorySamples]) -> HistorySamples:
        fields = ["hist_start", "hist_len", "cand", "label", "user"]
        if all(p.ts is not None for p in parts):
            fields.append("ts")
        return HistorySamples(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))


class UserNegativeSampler:
    """Uniform random items a user never interacted with."""

    def __init__(self, sequences: list[np.ndarray], n_items: int):
        self.n_items = n_items
        users = np.concatenate([np.full(len(s), u, dtype=np.int64) for u, s in enumerate(sequences)])
        items = np.concatenate(sequences).astype(np.int64)
        self.keys = np.unique(users * (n_items + 1) + items)
        per_user = np.bincount(self.keys // (n_items + 1), minlength=len(sequences))
        if (per_user >= n_items).any():
            raise ValueError("a user interacted with every item: no negative can be sampled")

    def interacted(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users.astype(np.int64) * (self.n_items + 1) + items
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[pos] == keys

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        items = rng.integers(1, self.n_items + 1, size=len(users))
        bad = self.interacted(users, items)
        while bad.any():
            items[bad] = rng.integers(1, self.n_items + 1, size=int(bad.sum()))
            bad[bad] = self.interacted(users[bad], items[bad])
        return items


class CTRData:
    """Common interface of the CTR datasets (see the module docstring for the protocols)."""

    name: str
    kind: str
    field_names: list[str]
    field_vocab_sizes: list[int]
    dense_dim: int = 0
    max_len: int = 0  # 0 = no histories
    has_user: bool = True

    @property
    def has_history(self) -> bool:
        return self.max_len > 0

    def n_samples(self, split: str) -> int:
        raise NotImplementedError

    def n_train_batches(self, batch_size: int) -> int:
        return -(-self.n_samples("train") // batch_size)

    def train_batches(self, rng: np.random.Generator, batch_size: int):
        raise NotImplementedError

    def eval_batches(self, split: str, batch_size: int):
        raise NotImplementedError


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


class HistoryCTRData(CTRData):
    def __init__(self, name: str, kind: str, field_names: list[str], field_vocab_sizes: list[int],
                 item_fields: np.ndarray, flat_items: np.ndarray, splits: dict[str, HistorySamples],
                 max_len: int, cold_item_rate: float = 0.0, negative_sampler: UserNegativeSampler | None = None,
                 bucket_by_length: bool = True):
        if max_len < 1:
            raise ValueError(f"data.max_len must be >= 1 for data with histories, got {max_len}")
        if not 0.0 <= cold_item_rate < 1.0:
            raise ValueError(f"data.cold_item_rate must be in [0, 1), got {cold_item_rate}")
        self.name, self.kind = name, kind
        self.field_names, self.field_vocab_sizes = field_names, field_vocab_sizes
        self.item_fields = np.ascontiguousarray(item_fields, dtype=np.int64)
        # a trailing 0 keeps slices of users without any item in bounds
        self.flat_items = np.append(flat_items.astype(np.int64), 0)
        self.splits = splits
        self.max_len = max_len
        self.cold_item_rate = cold_item_rate
        self.negative_sampler = negative_sampler  # set: training positives get one fresh negative each epoch
        self.bucket_by_length = bucket_by_length
        self.user_field_names: list[str] = []
        self.user_field_vocab_sizes: list[int] = []
        self.user_fields: np.ndarray | None = None
        # per (item, item field) embedding scales, or None (`add_semantic_id_fields` with router weights)
        self.item_field_scales: np.ndarray | None = None
        self.sid_source: str | None = None  # the tokenizer run whose codes are item fields
        self.router_source: str | None = None  # its router.npy when the scales come from it

    def set_user_fields(self, names: list[str], sizes: list[int], table: np.ndarray) -> None:
        """Per-user categorical fields ([n_users, U] ids, indexed by a sample's `user`): batches then
        carry `user_fields` [B, U] (MovieLens' age, gender, occupation, ...)."""
        table = np.ascontiguousarray(table, dtype=np.int64)
        if table.ndim != 2 or table.shape[1] != len(names) or len(names) != len(sizes):
            raise ValueError(f"user fields: a [users, {len(names)}] table and {len(names)} sizes expected")
        if (table < 0).any() or (table >= np.asarray(sizes)[None, :]).any():
            raise ValueError("user fields: ids outside their vocab sizes")
        self.user_field_names, self.user_field_vocab_sizes, self.user_fields = list(names), list(sizes), table

    @property
    def n_items(self) -> int:
        return len(self.item_fields) - 1

    def n_samples(self, split: str) -> int:
        _check_split(split)
        n = len(self.splits[split])
        return 2 * n if split == "train" and self.negative_sampler else n

    def n_train_batches(self, batch_size: int) -> int:
        unit_size = 2 if self.negative_sampler else 1
        return -(-len(self.splits["train"]) // max(1, batch_size // unit_size))

    def epoch_samples(self, rng: np.random.Generator) -> HistorySamples:
        """The training samples of one epoch (positives plus freshly drawn negatives for `sequences`)."""
        pos = self.splits["train"]
        if self.negative_sampler is None:
            return pos
        neg = HistorySamples(pos.hist_start, pos.hist_len, self.negative_sampler.sample(pos.user, rng),
                             np.zeros(len(pos), dtype=np.float32), pos.user)
        return HistorySamples.concat([pos, neg])

    def history_ids(self, hist_start: np.ndarray, hist_len: np.ndarray) -> np.ndarray:
        """Left-padded item indices [B, T]; T = the longest history in the batch (capped at max_len, >= 1)."""
        width = int(min(self.max_len, max(1, hist_len.max(initial=0))))
        offsets = hist_len[:, None] - width + np.arange(width)[None, :]
        ids = self.flat_items[hist_start[:, None] + np.maximum(offsets, 0)]
        return np.where(offsets >= 0, ids, 0)

    def make_batch(self, samples: HistorySamples, index: np.ndarray, rng: np.random.Generator | None = None
                   ) -> dict[str, torch.Tensor]:
        hist = self.item_fields[self.history_ids(samples.hist_start[index], samples.hist_len[index])]
        cand = self.item_fields[samples.cand[index]].copy()
        if rng is not None and self.cold_item_rate > 0:
            cand[rng.random(len(cand)) < self.cold_item_rate, 0] = 0
        batch = {"hist_fields": torch.from_numpy(hist), "cand_fields": torch.from_numpy(cand),
                 "label": torch.from_numpy(samples.label[index].astype(np.float32)),
                 "user": torch.from_numpy(samples.user[index].astype(np.int64)),
                 "cand_item": torch.from_numpy(samples.cand[index].astype(np.int64))}
        if self.user_fields is not None:
            batch["user_fields"] = torch.from_numpy(self.user_fields[samples.user[index]])
        if samples.ts is not None:
            batch["ts"] = torch.from_numpy(samples.ts[index].astype(np.int64))
        return batch

    def train_batches(self, rng: np.random.Generator, batch_size: int):
        samples = self.epoch_samples(rng)
        # a positive and its negative share a history: they travel in the same batch (units of two),
        # so models can run that history once (GPSD does)
        n_units = len(self.splits["train"])
        unit_size = 2 if self.negative_sampler else 1
        per_batch = max(1, batch_size // unit_size)
        order = rng.permutation(n_units)
        if self.bucket_by_length:
            # batches of similar history lengths (within pools of 64 random batches) pad far less:
            # Beauty histories average ~8 items, a random batch of 512 is padded to ~50
            lengths = np.minimum(samples.hist_len[:n_units], self.max_len)
            pool = 64 * per_batch
            batches = []
            for start in range(0, n_units, pool):
                chunk = order[start:start + pool]
                chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
                batches += [chunk[i:i + per_batch] for i in range(0, len(chunk), per_batch)]
            batches = [batches[i] for i in rng.permutation(len(batches))]
        else:
            batches = [order[i:i + per_batch] for i in range(0, n_units, per_batch)]
        for units in batches:
            index = np.stack([units + k * n_units for k in range(unit_size)], axis=1).ravel()
            yield self.make_batch(samples, index, rng)

    def eval_batches(self, split: str, batch_size: int):
        _check_split(split)
        samples = self.splits[split]
        # by history length (little padding), then by history (samples sharing one sit side by side)
        order = np.lexsort((samples.hist_len, samples.hist_start, np.minimum(samples.hist_len, self.max_len)))
        for start in range(0, len(samples), batch_size):
            yield self.make_batch(samples, order[start:start + batch_size])


def ctr_floors(data: HistoryCTRData, split: str = "test", match_fields: tuple[int, ...] = (1,)) -> dict[str, np.ndarray]:
    """Scores of the two heuristic floors for every sample of `split`, in the split's sample order:
    `popularity` = the candidate's click rate in the training samples (one draw of negatives where the
    protocol samples them; smoothed towards the global rate with 20 pseudo samples); `attribute_match` = the
    share of the user's last `max_len` history items sharing a value of `match_fields` with the candidate
    (the category on Beauty; genre1/genre2, one genre vocabulary, on MovieLens), ties broken by popularity."""
    _check_split(split)
    train = data.epoch_samples(np.random.default_rng(0))
    n = data.n_items + 1
    clicks = np.bincount(train.cand, weights=train.label, minlength=n)
    shown = np.bincount(train.cand, minlength=n)
    prior = float(train.label.mean())
    popularity = (clicks + 20 * prior) / (shown + 20)
    values = data.item_fields[:, list(match_fields)]
    has_value = np.zeros((n, int(values.max(initial=0)) + 1), dtype=bool)
    for f in range(values.shape[1]):
        has_value[np.arange(n), values[:, f]] = True
    has_value[:, 0] = False  # 0 = no value
    samples = data.splits[split]
    hist = data.history_ids(samples.hist_start, samples.hist_len)
    real = hist > 0
    shares = (has_value[hist] & has_value[samples.cand][:, None, :]).any(-1) & real
    match = np.where(real.any(1), shares.sum(1) / np.maximum(real.sum(1), 1), 0.0)
    return {"popularity": popularity[samples.cand], "attribute_match": match + 1e-3 * popularity[samples.cand]}


def floor_metrics(data: HistoryCTRData, split: str = "test", match_fields: tuple[int, ...] = (1,)
                  ) -> dict[str, dict[str, float | None]]:
    """AUC, GAUC and (for the popularity floor, whose score is a click rate) logloss of the `ctr_floors`."""
    from recsys_core.metrics import auc, gauc, logloss

    samples = data.splits[split]
    out: dict[str, dict[str, float | None]] = {}
    for name, scores in ctr_floors(data, split, match_fields).items():
        out[name] = {"auc": auc(samples.label, scores), "gauc": gauc(samples.user, samples.label, scores),
                     "logloss": logloss(samples.label, np.clip(scores, 1e-4, 1 - 1e-4)) if name == "popularity"
                     else None}
    return out


class TabularCTRData(CTRData):
    def __init__(self, name: str, field_names: list[str], field_vocab_sizes: list[int], dense_names: list[str],
                 tables: dict[str, dict[str, np.ndarray]], has_user: bool):
        self.name, self.kind = name, "ctr_sample"
        self.field_names, self.field_vocab_sizes = field_names, field_vocab_sizes
        self.dense_names = dense_names
        self.dense_dim = len(dense_names)
        self.max_len = 0
        self.tables = tables  # split -> {"sparse", "dense", "label", "user"}
        self.has_user = has_user

    def n_samples(self, split: str) -> int:
        _check_split(split)
        return len(self.tables[split]["label"])

    def _batch(self, split: str, index: np.ndarray) -> dict[str, torch.Tensor]:
        table = self.tables[split]
        batch = {"cand_fields": torch.from_numpy(table["sparse"][index]),
                 "dense": torch.from_numpy(table["dense"][index]),
                 "label": torch.from_numpy(table["label"][index])}
        if self.has_user:
            batch["user"] = torch.from_numpy(table["user"][index])
        return batch

    def train_batches(self, rng: np.random.Generator, batch_size: int):
        order = rng.permutation(self.n_samples("train"))
        for start in range(0, len(order), batch_size):
            yield self._batch("train", order[start:start + batch_size])

    def eval_batches(self, split: str, batch_size: int):
        n = self.n_samples(split)
        for start in range(0, n, batch_size):
            yield self._batch(split, np.arange(start, min(start + batch_size, n)))


# ---------------------------------------------------------------- kind: sequences

def sequence_item_fields(data: SequenceData) -> tuple[np.ndarray, list[int]]:
    """[n_items+1, 2] = (item index, category) per item, row 0 = padding; and the two vocab sizes."""
    category = data.item_category()
    category[0] = 0
    fields = np.stack([np.arange(data.n_items + 1), category], axis=1).astype(np.int64)
    return fields, [data.n_items + 1, int(category.max()) + 1]


def ctr_from_sequences(data: SequenceData, max_len: int = 50, eval_seed: int = 0, cold_item_rate: float = 0.0,
                       bucket_by_length: bool = True, max_train_positions: int = 0) -> HistoryCTRData:
    """The `sequences` protocol of the module docstring."""
    lengths = np.array([len(s) for s in data.sequences], dtype=np.int64)
    if (lengths < 3).any():
        raise ValueError("every sequence needs at least 3 items (train prefix, valid, test)")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    flat = np.concatenate(data.sequences)
    users = np.arange(len(lengths))
    # training positions t = 1 .. len-3 of each user (the prefix is items 0 .. len-3), or only the
    # last `max_train_positions` of them
    n_pos = np.maximum(lengths - 3, 0)
    if max_train_positions:
        n_pos = np.minimum(n_pos, max_train_positions)
    train_user = np.repeat(users, n_pos)
    first = np.cumsum(n_pos) - n_pos
    train_t = np.arange(n_pos.sum()) - np.repeat(first, n_pos) + np.repeat(lengths - 2 - n_pos, n_pos)
    sampler = UserNegativeSampler(data.sequences, data.n_items)
    train = HistorySamples(starts[train_user], train_t, flat[starts[train_user] + train_t],
                           np.ones(len(train_t), dtype=np.float32), train_user)
    splits = {"train": train}
    for split, stream, hist_len in (("valid", 1, lengths - 2), ("test", 2, lengths - 1)):
        pos_items = flat[starts + hist_len]
        neg_items = sampler.sample(users, np.random.default_rng([eval_seed, stream]))
        # positive and negative of a user side by side
        splits[split] = HistorySamples(np.repeat(starts, 2), np.repeat(hist_len, 2),
                                       np.stack([pos_items, neg_items], 1).ravel(),
                                       np.tile(np.array([1, 0], dtype=np.float32), len(users)),
                                       np.repeat(users, 2))
    item_fields, sizes = sequence_item_fields(data)
    return HistoryCTRData(data.name, "sequences", ["item", "category"], sizes, item_fields, flat, splits,
                          max_len, cold_item_rate, sampler, bucket_by_length)


# ---------------------------------------------------------------- kind: simulated

def load_simulated_items(folder: Path) -> tuple[np.ndarray, list[str], list[int]]:
    """items.jsonl + field_vocab.json -> (item_fields [n_items+1, F], field names, vocab sizes)."""
    vocab_path, items_path = folder / "field_vocab.json", folder / "items.jsonl"
    for path in (vocab_path, items_path, folder / "impressions.parquet"):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: data.path must be a simulator output folder "
                                    "(shoplab recsys simulate ...)")
    vocab = json.loads(vocab_path.read_text())
    names, sizes = list(vocab["names"]), [int(s) for s in vocab["sizes"]]
    if len(names) != len(sizes) or not names:
        raise ValueError(f"{vocab_path}: names and sizes must be non-empty lists of equal length")
    rows = [np.zeros(len(names), dtype=np.int64)]
    for line_no, line in enumerate(items_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("index") != len(rows):
            raise ValueError(f"{items_path}:{line_no}: expected item index {len(rows)}, got {record.get('index')}")
        fields = np.asarray(record["fields"], dtype=np.int64)
        if fields.shape != (len(names),):
            raise ValueError(f"{items_path}:{line_no}: `fields` must hold {len(names)} ids ({names})")
        rows.append(fields)
    item_fields = np.stack(rows)
    too_big = item_fields >= np.asarray(sizes)[None, :]
    if too_big.any() or (item_fields < 0).any():
        raise ValueError(f"{items_path}: field ids outside the vocab sizes of {vocab_path}")
    return item_fields, names, sizes


def ctr_from_simulated(folder: str | Path, max_len: int = 50, cold_item_rate: float = 0.1,
                       bucket_by_length: bool = True) -> HistoryCTRData:
    """The `simulated` protocol of the module docstring."""
    import pandas as pd

    folder = Path(folder)
    item_fields, names, sizes = load_simulated_items(folder)
    imp = pd.read_parquet(folder / "impressions.parquet")
    missing = {"user", "session", "ts", "item", "clicked"} - set(imp.columns)
    if missing:
        raise ValueError(f"{folder / 'impressions.parquet'} lacks columns {sorted(missing)}")
    if imp.empty:
        raise ValueError(f"{folder / 'impressions.parquet'} has no impressions")
    n_items = len(item_fields) - 1
    if imp["item"].min() < 1 or imp["item"].max() > n_items:
        raise ValueError(f"impressions reference items outside 1..{n_items} (items.jsonl)")
    imp = imp.sort_values(["user", "ts"], kind="stable").reset_index(drop=True)
    user_code, user_ids = pd.factorize(imp["user"], sort=True)
    user_code = user_code.astype(np.int64)
    ts = imp["ts"].to_numpy(np.int64)
    clicked = imp["clicked"].to_numpy() > 0
    # clicks per user in time order: the histories are slices of this flat array
    flat = imp["item"].to_numpy(np.int64)[clicked]
    click_users = user_code[clicked]
    n_users = len(user_ids)
    starts = np.concatenate([[0], np.cumsum(np.bincount(click_users, minlength=n_users))[:-1]])
    span = int(ts.max() - ts.min()) + 2
    click_keys = click_users * span + (ts[clicked] - ts.min())
    imp_keys = user_code * span + (ts - ts.min())
    hist_len = np.searchsorted(click_keys, imp_keys, side="left") - starts[user_code]
    # the time split: rank each user's sessions from the last one
    first_ts = imp.groupby(["user", "session"])["ts"].transform("min")
    session_rank = (pd.DataFrame({"user": imp["user"], "first": first_ts})
                    .groupby("user")["first"].rank(method="dense", ascending=False).to_numpy())
    split_of = np.where(session_rank == 1, "test", np.where(session_rank == 2, "valid", "train"))
    samples = HistorySamples(starts[user_code], hist_len, imp["item"].to_numpy(np.int64),
                             clicked.astype(np.float32), user_ids.to_numpy(np.int64)[user_code])
    splits = {}
    for split in SPLITS:
        idx = np.flatnonzero(split_of == split)
        splits[split] = HistorySamples(*(getattr(samples, f)[idx] for f in
                                         ("hist_start", "hist_len", "cand", "label", "user")))
    return HistoryCTRData(folder.name, "simulated", names, sizes, item_fields, flat, splits, max_len,
                          cold_item_rate, bucket_by_length=bucket_by_length)


# ---------------------------------------------------------------- kind: movielens

def ctr_from_movielens(ml: MovieLens, max_len: int = 30, bucket_by_length: bool = True,
                       candidate_groups: list[str] | None = None,
                       eval_candidate_groups: list[str] | None = None) -> HistoryCTRData:
    """MovieLens' CTR protocol (`recsys_core.data.movielens`'s docstring), in the zoo's batch contract (plus
    `user_fields` [B, 5] and `ts`). The data knows each movie's genre group (`item_group` [n_items + 1], names
    in `group_names`: GENRE_GROUPS, the scenarios and domains) and its text (`item_text`: title, year, genres);
    `candidate_groups` keeps only the samples whose candidate is in those groups (a target domain; histories
    still hold every click), `eval_candidate_groups` (default: the same) does so for valid and test only."""
    user, item, ts, label = ml.rating_user, ml.rating_item, ml.rating_ts, ml.labels
    by_user = np.lexsort((np.arange(len(user)), user))  # per user, time order kept
    clicked = by_user[label[by_user] > 0]
    flat = item[clicked]
    starts = np.concatenate([[0], np.cumsum(np.bincount(user[clicked], minlength=ml.n_users))[:-1]])
    span = int(ts.max() - ts.min()) + 2
    click_keys = user[clicked] * span + (ts[clicked] - ts.min())
    keys = user * span + (ts - ts.min())
    hist_len = np.searchsorted(click_keys, keys, side="left") - starts[user]
    splits = {}
    for code, name in enumerate(SPLITS):
        idx = np.flatnonzero(ml.split_of == code)
        splits[name] = HistorySamples(starts[user[idx]], hist_len[idx], item[idx], label[idx], user[idx], ts[idx])
    item_group = genre_group_table(ml.genre_names)[ml.item_fields[:, 1]]
    eval_candidate_groups = eval_candidate_groups or candidate_groups
    for name, groups in (("train", candidate_groups), ("valid", eval_candidate_groups), ("test", eval_candidate_groups)):
        if not groups:
            continue
        unknown = set(groups) - set(GENRE_GROUPS)
        if unknown:
            raise ValueError(f"data.candidate_groups: unknown groups {sorted(unknown)} (known: {list(GENRE_GROUPS)})")
        wanted = np.isin(item_group, [list(GENRE_GROUPS).index(g) for g in groups])
        s = splits[name]
        keep = wanted[s.cand]
        splits[name] = HistorySamples(s.hist_start[keep], s.hist_len[keep], s.cand[keep], s.label[keep],
                                      s.user[keep], s.ts[keep])
    data = HistoryCTRData("ml-1m", "movielens", list(ITEM_FIELDS), list(ml.item_field_sizes), ml.item_fields, flat,
                          splits, max_len, bucket_by_length=bucket_by_length)
    data.set_user_fields(list(USER_FIELDS), list(ml.user_field_sizes), ml.user_fields)
    data.item_group, data.group_names = item_group, list(GENRE_GROUPS)
    data.item_text = [""] + [f"{ml.titles[i]} ({int(ml.years[i])}). Genres: {', '.join(ml.genres[i])}."
                             for i in range(1, ml.n_items + 1)]
    return data



# ---------------------------------------------------------------- kind: ctr_sample

LABEL_COLUMNS = ("click", "label", "purchase", "conversion")
DENSE_PATTERN = re.compile(r"^(D\w+|I\d+)$")


def _csv_splits(path: Path, split_seed: int):
    import pandas as pd

    def read(file: Path):
        # every cell as text: a sparse id reads the same in every split ("7", never "7.0" beside a gap),
        # and a missing value is the category ""
        return pd.read_csv(file, dtype=str, keep_default_na=False)

    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(path.glob("*.csv"))
    else:
        raise FileNotFoundError(f"{path} not found: data.path must be a CTR sample folder or CSV "
                                "(e.g. data/ctr_samples/ali-ccp)")
    by_split = {}
    for split, keys in (("train", ("train",)), ("valid", ("val", "valid")), ("test", ("test",))):
        match = [f for f in files if any(k in f.stem.lower() for k in keys)]
        if len(match) == 1:
            by_split[split] = read(match[0])
    if len(by_split) == 3:
        return by_split
    if len(files) != 1:
        raise ValueError(f"{path}: expected *train*/*val*/*test* CSVs or a single CSV, found "
                         f"{[f.name for f in files]}")
    frame = read(files[0])
    order = np.random.default_rng(split_seed).permutation(len(frame))
    n_train, n_valid = int(0.8 * len(frame)), int(0.1 * len(frame))
    cuts = {"train": order[:n_train], "valid": order[n_train:n_train + n_valid], "test": order[n_train + n_valid:]}
    return {k: frame.iloc[v].reset_index(drop=True) for k, v in cuts.items()}


def _log_dense(frame, columns: list[str]) -> np.ndarray:
    import pandas as pd

    if not columns:
        return np.zeros((len(frame), 0))
    values = frame[columns].apply(lambda c: pd.to_numeric(c, errors="coerce")).to_numpy(np.float64)
    values = np.nan_to_num(values, nan=0.0)
    return np.sign(values) * np.log1p(np.abs(values))


def load_ctr_sample(path: str | Path, label_column: str | None = None, dense_columns: list[str] | None = None,
                    user_column: str | None = None, split_seed: int = 0) -> TabularCTRData:
    """The `ctr_sample` protocol of the module docstring."""
    path = Path(path)
    frames = _csv_splits(path, split_seed)
    columns = list(frames["train"].columns)
    label = label_column or next((c for c in ("click", "label") if c in columns), None)
    if label is None or label not in columns:
        raise ValueError(f"{path}: no label column (tried {label_column or 'click, label'}); set data.label_column")
    dense = list(dense_columns) if dense_columns is not None else [c for c in columns if DENSE_PATTERN.match(c)]
    sparse = [c for c in columns if c not in dense and c != label and c not in LABEL_COLUMNS]
    if user_column is None and "101" in columns:
        user_column = "101"  # Ali-CCP's user id
    if not sparse:
        raise ValueError(f"{path}: no sparse feature columns")
    vocabularies = {}
    for col in sparse:
        values = frames["train"][col].unique()
        vocabularies[col] = {v: i + 1 for i, v in enumerate(sorted(values))}
    train_dense = _log_dense(frames["train"], dense)
    mean, std = train_dense.mean(0), train_dense.std(0)
    std[std < 1e-8] = 1.0
    user_codes: dict[str, int] = {}
    tables = {}
    for split, frame in frames.items():
        sparse_ids = np.stack([frame[c].map(vocabularies[c]).fillna(0).to_numpy(np.int64) for c in sparse], axis=1)
        table = {"sparse": sparse_ids,
                 "dense": ((_log_dense(frame, dense) - mean) / std).astype(np.float32),
                 "label": frame[label].astype(float).to_numpy(np.float32)}
        if user_column:
            table["user"] = np.array([user_codes.setdefault(u, len(user_codes)) for u in frame[user_column]],
                                     dtype=np.int64)
        tables[split] = table
    sizes = [len(vocabularies[c]) + 1 for c in sparse]
    return TabularCTRData(path.stem if path.is_file() else path.name, sparse, sizes, dense, tables,
                          has_user=bool(user_column))


# ---------------------------------------------------------------- semantic IDs as item fields

def add_semantic_id_fields(data: HistoryCTRData, sid_run: str | Path, router_scales: Any = "auto") -> None:
    """`data.sid_run`: a tokenizer run's L code levels become item fields `sid1..sidL` (id = code + 1; the
    collision suffix is left out: it only numbers the items that share a tuple, which the item id already
    tells apart). With ADA-SID router weights (`data.router_scales`: auto | true | false), `item_field_scales`
    holds each item's weight per level for those fields (1 for every other field), which the CTR task hands to
    the model's `FeatureEmbedding`: the router's weights reach the ranker. `router_scales: mean` is the ablation
    that keeps the scale and drops the per-item information: every item gets each level's mean router weight.
    The codes must index the same items as the data (a tokenizer trained on the same `load_sequences` source)."""
    codes = load_run_codes(sid_run, data.n_items)
    flat = router_scales == "mean"
    source, router = load_router(sid_run, True if flat else router_scales, codes, "data.router_scales")
    if flat:
        router[1:] = router[1:].mean(0)
    levels = codes[:, :-1] + 1
    levels[0] = 0
    n_levels = levels.shape[1]
    data.item_fields = np.ascontiguousarray(np.concatenate([data.item_fields, levels], 1))
    data.field_names = [*data.field_names, *(f"sid{i + 1}" for i in range(n_levels))]
    data.field_vocab_sizes = [*data.field_vocab_sizes, *(int(levels[:, i].max()) + 1 for i in range(n_levels))]
    data.sid_source, data.router_source = str(sid_run), source
    if router is not None:
        scales = np.ones(data.item_fields.shape, dtype=np.float32)
        scales[1:, -n_levels:] = router[1:]
        data.item_field_scales = scales


# ---------------------------------------------------------------- entry point

def load_ctr(data: dict[str, Any]) -> CTRData:
    """The `data:` section of a CTR config: `kind` sequences | simulated | movielens | ctr_sample; with
    `sid_run` (and `router_scales`) the semantic IDs become item fields (`add_semantic_id_fields`)."""
    ctr = _load_ctr_kind(data)
    if data.get("sid_run"):
        if not isinstance(ctr, HistoryCTRData):
            raise ValueError("data.sid_run needs item ids: it works with the sequences, movielens and simulated kinds")
        add_semantic_id_fields(ctr, data["sid_run"], data.get("router_scales", "auto"))
    elif data.get("router_scales") is True:
        raise ValueError("data.router_scales is true but data.sid_run is not set (an ada_sid tokenizer run folder)")
    return ctr


def _load_ctr_kind(data: dict[str, Any]) -> CTRData:
    kind = data.get("kind", "sequences")
    max_len = int(data.get("max_len", 50))
    bucket = bool(data.get("bucket_by_length", True))
    if kind == "movielens":
        ml = load_movielens(data.get("path"), tuple(data.get("split", (0.8, 0.1))), data.get("dataset", "ml-1m"),
                            data.get("synthetic"), int(data.get("user_sample", 0)))
        return ctr_from_movielens(ml, max_len=int(data.get("max_len", 30)), bucket_by_length=bucket,
                                  candidate_groups=data.get("candidate_groups"),
                                  eval_candidate_groups=data.get("eval_candidate_groups"))
    if kind == "sequences":
        seq_cfg = {k: v for k, v in data.items() if k not in ("kind", "source")}
        seq_cfg["kind"] = data.get("source", "s3rec")
        return ctr_from_sequences(load_sequences(seq_cfg), max_len=max_len, eval_seed=int(data.get("eval_seed", 0)),
                                  cold_item_rate=float(data.get("cold_item_rate", 0.0)), bucket_by_length=bucket,
                                  max_train_positions=int(data.get("max_train_positions", 0)))
    if kind == "simulated":
        if not data.get("path"):
            raise ValueError("data.path is required for simulated CTR data (a simulator output folder)")
        return ctr_from_simulated(data["path"], max_len=max_len, cold_item_rate=float(data.get("cold_item_rate", 0.1)),
                                  bucket_by_length=bucket)
    if kind == "ctr_sample":
        return load_ctr_sample(data.get("path", "data/ctr_samples/ali-ccp"), data.get("label_column"),
                               data.get("dense_columns"), data.get("user_column"), int(data.get("split_seed", 0)))
    raise ValueError(f"unknown data.kind {kind!r} for the ctr task (sequences | simulated | movielens | ctr_sample)")
