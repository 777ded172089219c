"""Which sequence data a config's `data:` section means: the one place that knows every source.

Kept apart from the sources themselves (`sequences`: S3-Rec files and synthetic sets; `simulated`:
the sandbox simulator's output), which build on `SequenceData` and so must not import this.
"""

from __future__ import annotations

from recsys_core.data.sequences import SequenceData, load_s3rec, synthetic_sequences
from recsys_core.data.simulated import load_simulated_sequences


def load_sequences(data: dict) -> SequenceData:
    """The `data:` section of a config: `kind: s3rec` (path + dataset) or `kind: simulated` (a
    simulator output folder) or `kind: movielens` (ML-1M ratings, `data.min_rating`, `data.user_sample`) or `kind: synthetic` (a small generated set for smoke runs)."""
    kind = data.get("kind", "s3rec")
    if kind == "s3rec":
        if not data.get("path"):
            raise ValueError("data.path is required for s3rec data (e.g. ../shared/data/s3rec)")
        return load_s3rec(data["path"], data.get("dataset", "Beauty"))
    if kind == "simulated":
        return load_simulated_sequences(data["path"])
    if kind == "movielens":
        from recsys_core.data.movielens import load_movielens, movielens_sequences

        ml = load_movielens(data.get("path"), dataset=data.get("dataset", "ml-1m"), synthetic=data.get("synthetic"),
                            user_sample=int(data.get("user_sample", 0)))
        return movielens_sequences(ml, float(data.get("min_rating", 0.0)))
    if kind == "synthetic":
        return synthetic_sequences(n_users=int(data.get("users", 300)), n_items=int(data.get("items", 120)),
                                   seed=int(data.get("seed", 0)))
    raise ValueError(f"unknown data.kind {kind!r} for sequences (s3rec | simulated | movielens | synthetic)")
