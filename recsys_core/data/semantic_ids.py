"""A tokenizer run's semantic IDs as data: its codes and ADA-SID's router weights, read and checked once.

A semantic-ID run folder (`shoplab recsys train` with `task: semantic_id`) holds `codes.npy`, int64
[n_items + 1, L + 1] (row 0 unused; the last column is TIGER's collision suffix, so every item's tuple is
distinct), and, for ADA-SID, `router.npy`, float [n_items + 1, L] (each item's weight per code level: 1 for the
content levels, the router's output for the behavioural ones). Two readers use them:
- generative retrieval (`recsys_core.tasks.generative`): the codes are TIGER's tokens, the router weights scale
  the behavioural token embeddings;
- CTR data (`data.sid_run` of the `ctr` task, `recsys_core.data.ctr`): the L code levels become item fields,
  and the router weights scale those fields' embeddings in the ranker.

`router_scales` (both readers): auto (use the run's router.npy when it has one), true (require it), false (ignore it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def validate_codes(codes: np.ndarray, n_items: int, source: str = "codes") -> np.ndarray:
    """int64 codes [n_items + 1, L], every item's tuple distinct; a readable ValueError otherwise."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{source}: codes must be an integer matrix [n_items + 1, L], got {codes.dtype} "
                         f"{codes.shape}")
    if len(codes) != n_items + 1:
        raise ValueError(f"{source}: {len(codes)} rows but the data has {n_items} items (+ 1 unused row 0)")
    codes = codes.astype(np.int64)
    if codes[1:].min() < 0:
        raise ValueError(f"{source}: codes must be non-negative")
    distinct = len(np.unique(codes[1:], axis=0))
    if distinct != n_items:
        raise ValueError(f"{source}: {n_items - distinct} items share a code tuple with another item; "
                         "the last column must be a collision suffix (add_collision_suffix)")
    return codes


def load_run_codes(sid_run: str | Path, n_items: int, key: str = "data.sid_run") -> np.ndarray:
    """The checked codes of a tokenizer run folder."""
    path = Path(sid_run) / "codes.npy"
    if not path.exists():
        raise FileNotFoundError(f"semantic-ID codes {path} not found: {key} must name a tokenizer run folder "
                                "with codes.npy")
    return validate_codes(np.load(path), n_items, str(path))


def load_router(sid_run: str | Path | None, choice: Any, codes: np.ndarray, key: str = "router_scales"
                ) -> tuple[str | None, np.ndarray | None]:
    """(path, router weights float32 [n_items + 1, L]) of a tokenizer run, or (None, None) when `choice` is false
    or (auto) the run has no router.npy. `codes` are the run's codes with their suffix column (L + 1 columns)."""
    if choice not in ("auto", True, False):
        raise ValueError(f"{key} must be auto, true or false, got {choice!r}")
    path = Path(sid_run) / "router.npy" if sid_run else None
    if choice is False or path is None or not path.exists():
        if choice is True:
            raise ValueError(f"{key} is true but {path or 'data.sid_run'} has no router.npy "
                             "(train an ada_sid tokenizer with its router)")
        return None, None
    router = np.load(path).astype(np.float32)
    if router.shape != (codes.shape[0], codes.shape[1] - 1):
        raise ValueError(f"{path}: router weights {router.shape} do not match the codes {codes.shape} "
                         "(one column per code level before the collision suffix)")
    if not np.isfinite(router).all() or router.min() < 0:
        raise ValueError(f"{path}: router weights must be finite and non-negative")
    return str(path), router
