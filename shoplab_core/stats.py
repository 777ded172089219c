"""Statistics every result table shares."""

from __future__ import annotations

from collections.abc import Sequence


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of a − b over paired items (users, queries, tasks) and its 95% percentile interval from `n`
    resamples of the items; `p_le_0`: the share of resampled means at or below zero."""
    import numpy as np

    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if diff.size == 0:
        raise ValueError("paired_bootstrap needs at least one pair")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(n, diff.size))].mean(1)
    return {"diff": float(diff.mean()), "low": float(np.percentile(means, 2.5)),
            "high": float(np.percentile(means, 97.5)), "p_le_0": float((means <= 0).mean())}
