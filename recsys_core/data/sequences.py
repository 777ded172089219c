"""Implicit-feedback sequences (Amazon Beauty / Sports / Toys in the S3-Rec format, or simulator logs)
with the standard leave-one-out split: per user, the last item is the test target, the one before it
the validation target, everything earlier is training.

Item indices run 1..n_items; 0 is padding everywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

S3REC_DATASETS = ("Beauty", "Sports_and_Outdoors", "Toys_and_Games")


@dataclass
class SequenceData:
    name: str
    sequences: list[np.ndarray]  # one int array of item indices per user, time order
    n_items: int
    item_attributes: list[list[int]] = field(default_factory=list)  # index → attribute ids (1-based)
    n_attributes: int = 0
    item_ids: list[str] = field(default_factory=list)  # index → original id ("" at 0)
    item_text: list[str] | None = None  # index → title/description when the data has text
    ratings: list[np.ndarray] | None = None  # per user, the rating of each sequence item (explicit-feedback data)

    def __post_init__(self) -> None:
        if not self.item_ids:
            self.item_ids = [""] + [str(i) for i in range(1, self.n_items + 1)]
        if not self.item_attributes:
            self.item_attributes = [[] for _ in range(self.n_items + 1)]

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    def item_category(self) -> np.ndarray:
        """One coarse id per item (its first attribute; 0 when none), for models with a category
        embedding (GPSD). In the S3-Rec files the first attribute is usually a category."""
        return np.array([attrs[0] if attrs else 0 for attrs in self.item_attributes], dtype=np.int64)

    def item_counts(self, split: str = "train") -> np.ndarray:
        """Interactions per item in the training part (the `split` prefix), index 0 = 0."""
        counts = np.zeros(self.n_items + 1, dtype=np.int64)
        for seq in self.sequences:
            part = seq[:-2] if split == "train" else seq
            np.add.at(counts, part, 1)
        counts[0] = 0
        return counts

    def stats(self) -> dict[str, float]:
        lengths = np.array([len(s) for s in self.sequences])
        return {"users": self.n_users, "items": self.n_items, "interactions": int(lengths.sum()),
                "mean_length": float(lengths.mean()), "attributes": self.n_attributes}


def load_s3rec(path: str | Path, dataset: str = "Beauty") -> SequenceData:
    """`path` is the folder holding `<dataset>.txt` (one `user item item ...` line per user) and
    `<dataset>_item2attributes.json`, e.g. ../shared/data/s3rec."""
    folder = Path(path)
    seq_file = folder / f"{dataset}.txt"
    if not seq_file.exists():
        known = ", ".join(S3REC_DATASETS)
        raise FileNotFoundError(f"{seq_file} not found: pass the folder of the S3-Rec data ({known}) as data.path")
    sequences = []
    for line_no, line in enumerate(seq_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            items = np.array([int(x) for x in parts[1:]], dtype=np.int64)
        except ValueError as exc:
            raise ValueError(f"{seq_file}:{line_no}: item ids must be integers") from exc
        if len(items) >= 3:  # leave-one-out needs a train, a validation and a test item
            sequences.append(items)
    n_items = int(max(s.max() for s in sequences))
    attributes: list[list[int]] = [[] for _ in range(n_items + 1)]
    attr_file = folder / f"{dataset}_item2attributes.json"
    n_attributes = 0
    if attr_file.exists():
        for item, attrs in json.loads(attr_file.read_text()).items():
            idx = int(item)
            if 0 < idx <= n_items:
                attributes[idx] = [int(a) for a in attrs]
                n_attributes = max([n_attributes, *attributes[idx]])
    return SequenceData(dataset, sequences, n_items, attributes, n_attributes)


def synthetic_sequences(n_users: int = 300, n_items: int = 120, n_groups: int = 6, seed: int = 0) -> SequenceData:
    """Users walk within a group of items in a fixed order, so a sequence model can learn the next
    item: the smoke configs and tests use it to check that training actually learns."""
    rng = np.random.default_rng(seed)
    group_of = np.arange(1, n_items + 1) % n_groups
    groups = [np.flatnonzero(group_of == g) + 1 for g in range(n_groups)]
    sequences = []
    for _ in range(n_users):
        items = groups[rng.integers(n_groups)]
        start = rng.integers(len(items))
        length = int(rng.integers(5, 12))
        sequences.append(items[(start + np.arange(length)) % len(items)].astype(np.int64))
    attributes = [[]] + [[int(group_of[i - 1]) + 1, n_groups + 1 + int(i % 3)] for i in range(1, n_items + 1)]
    return SequenceData("synthetic", sequences, n_items, attributes, n_groups + 3)


def left_pad(seqs: list[np.ndarray], max_len: int) -> torch.Tensor:
    """The last `max_len` items of each sequence, left-padded with 0."""
    out = torch.zeros(len(seqs), max_len, dtype=torch.long)
    for row, seq in enumerate(seqs):
        tail = seq[-max_len:]
        if len(tail):
            out[row, max_len - len(tail):] = torch.as_tensor(tail)
    return out


def split_inputs(data: SequenceData, split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """(histories, targets) for `valid` (target = second to last) or `test` (target = last)."""
    if split == "valid":
        return [s[:-2] for s in data.sequences], np.array([s[-2] for s in data.sequences])
    if split == "test":
        return [s[:-1] for s in data.sequences], np.array([s[-1] for s in data.sequences])
    raise ValueError(f"split must be valid or test, not {split!r}")


def training_sequences(data: SequenceData) -> list[np.ndarray]:
    """The training prefix of every user (all but the last two items)."""
    return [s[:-2] for s in data.sequences if len(s) >= 4]


class NextItemBatches:
    """Shuffled batches of (input, target) sequences for causal next-item training: input = the
    training prefix without its last item, targets = the prefix shifted by one; 0 = padding."""

    def __init__(self, data: SequenceData, max_len: int, batch_size: int):
        self.seqs = training_sequences(data)
        self.max_len = max_len
        self.batch_size = batch_size

    def __len__(self) -> int:
        return (len(self.seqs) + self.batch_size - 1) // self.batch_size

    def batches(self, rng: np.random.Generator):
        order = rng.permutation(len(self.seqs))
        for start in range(0, len(order), self.batch_size):
            chunk = [self.seqs[i] for i in order[start:start + self.batch_size]]
            yield {"input_ids": left_pad([s[:-1] for s in chunk], self.max_len),
                   "targets": left_pad([s[1:] for s in chunk], self.max_len)}


def item_windows(data: SequenceData, max_items: int, windows_per_user: int = 0) -> list[np.ndarray]:
    """Each training prefix cut from its end into windows of up to `max_items + 1` items (consecutive windows
    share one item, so every item but a prefix's first is a target once); `windows_per_user` > 0 keeps only
    each user's last that-many windows (the most recent behaviour, for CPU-sized runs on long histories)."""
    if windows_per_user < 0:
        raise ValueError(f"windows_per_user must be >= 0 (0 = all), got {windows_per_user}")
    windows: list[np.ndarray] = []
    for seq in training_sequences(data):
        ends = list(range(len(seq), 1, -max_items))
        for end in ends[:windows_per_user] if windows_per_user else ends:
            windows.append(np.asarray(seq[max(0, end - max_items - 1):end], dtype=np.int64))
    return windows
