"""MATT: a model-agnostic test-time paradigm for CTR prediction (arXiv 2510.08932). Its equations are not
public; the choices below are ours, marked [proposal].

MATT wraps a *trained* CTR run (DIN, DeepFM, GPSD, ...: `base_run`) and never retrains it.

- **Hierarchical probabilistic hashing**: for every order o in `orders` (1..3) one count-min sketch
  (`depth` rows × `width` counters) counts how often each combination of o sample fields (user fields and
  the candidate's item fields, with their values) occurs in the training samples. A count-min sketch never
  under-counts and over-counts by at most ~e·N/width with probability 1 − e^−depth, in fixed memory.
- **Confidence** [proposal]: a combination seen n times has confidence 1 − exp(−n/κ) (κ = `kappa`); a
  feature's confidence is, averaged over the orders, the mean confidence of the combinations of that order
  it belongs to. A feature that only occurs in rare combinations has low confidence.
- **Inference paths** [proposal]: path 0 is the sample as it is; each of the other `n_paths − 1` paths
  keeps every feature with probability equal to its confidence and replaces the others by the unknown
  id 0 (the base models' padding id: its embedding is zero, the feature drops out).
- **Aggregation** [proposal]: the click probability is the mean of the paths' probabilities (returned
  as a logit so the CTR task's sigmoid gives it back).

Randomness at inference comes from a generator seeded with `seed`, so scores are reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
import torch
from torch import nn

from recsys_core.registry import register_model

_PRIME = 1_000_003
_ROW_SALTS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5,
              0x94D049BB133111EB, 0xBF58476D1CE4E5B9, 0xD6E8FEB86659FD93, 0xA0761D6478BD642F)


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def combo_keys(ids: torch.Tensor, combo: Sequence[int], combo_id: int) -> torch.Tensor:
    """One int64 key [N] per row of ids [N, fields] for the field combination `combo` (wrapping arithmetic:
    the same on every machine)."""
    key = torch.full((len(ids),), combo_id + 1, dtype=torch.int64, device=ids.device)
    for f in combo:
        key = key * _PRIME + ids[:, f] + 1
    return key


def sketch_rows(keys: torch.Tensor, depth: int, width: int) -> torch.Tensor:
    """Counter indices [depth, N] of the keys in each row of a count-min sketch."""
    rows = []
    for r in range(depth):
        h = keys * _signed(_ROW_SALTS[r]) + r
        h = h ^ (h >> 29)
        rows.append(torch.remainder(h, width))
    return torch.stack(rows)


class CountMinSketches(nn.Module):
    """One count-min sketch per order over the combinations of `n_fields` sample fields."""

    def __init__(self, n_fields: int, orders: Sequence[int], depth: int = 4, width: int = 1 << 18):
        super().__init__()
        if not orders or any(o < 1 or o > n_fields for o in orders):
            raise ValueError(f"orders must be within 1..{n_fields} (the sample's fields), got {list(orders)}")
        if not 1 <= depth <= len(_ROW_SALTS):
            raise ValueError(f"depth must be within 1..{len(_ROW_SALTS)}, got {depth}")
        self.orders, self.depth, self.width = sorted(set(int(o) for o in orders)), depth, width
        self.combos = {o: list(combinations(range(n_fields), o)) for o in self.orders}
        self.register_buffer("counts", torch.zeros(len(self.orders), depth, width, dtype=torch.int32),
                             persistent=False)

    def add(self, ids: torch.Tensor) -> None:
        for k, o in enumerate(self.orders):
            for c, combo in enumerate(self.combos[o]):
                index = sketch_rows(combo_keys(ids, combo, c), self.depth, self.width)
                for r in range(self.depth):
                    self.counts[k, r].index_add_(0, index[r], torch.ones_like(index[r], dtype=torch.int32))

    def estimate(self, ids: torch.Tensor, order: int, combo_index: int) -> torch.Tensor:
        """Estimated counts [N] of the rows' values of combination `combo_index` of `order`."""
        k = self.orders.index(order)
        index = sketch_rows(combo_keys(ids, self.combos[order][combo_index], combo_index), self.depth, self.width)
        return torch.stack([self.counts[k, r][index[r]] for r in range(self.depth)]).min(0).values


def sample_field_ids(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sample fields [B, U + F]: user fields (where the data has them), then the candidate's item fields."""
    if "user_fields" in batch:
        return torch.cat([batch["user_fields"], batch["cand_fields"]], 1)
    return batch["cand_fields"]


@register_model("matt", tasks="ctr")
class MATT(nn.Module):
    def __init__(self, field_vocab_sizes: Sequence[int], max_len: int = 0, dense_dim: int = 0,
                 user_field_vocab_sizes: Sequence[int] = (), base_run: str | None = None,
                 base_model: nn.Module | None = None, training_ids: torch.Tensor | None = None,
                 orders: Sequence[int] = (1, 2, 3), n_paths: int = 8, kappa: float = 5.0, depth: int = 4,
                 width: int = 1 << 18, seed: int = 0):
        super().__init__()
        if base_model is None:
            raise ValueError("MATT wraps a trained CTR run: set model_params.base_run to its folder")
        if n_paths < 1:
            raise ValueError(f"n_paths must be >= 1, got {n_paths}")
        if kappa <= 0:
            raise ValueError(f"kappa must be > 0, got {kappa}")
        self.base = base_model
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.n_user = len(user_field_vocab_sizes)
        n_fields = self.n_user + len(field_vocab_sizes)
        self.sketches = CountMinSketches(n_fields, [o for o in orders if o <= n_fields], depth, width)
        if training_ids is not None:
            for start in range(0, len(training_ids), 65536):
                self.sketches.add(training_ids[start:start + 65536])
        self.n_paths, self.kappa, self.seed, self.base_run = n_paths, kappa, seed, base_run

    @staticmethod
    def data_inputs(data: Any, params: dict[str, Any]) -> dict[str, Any]:
        """The trained base model (its run must use the same data) and the training samples' field ids."""
        from recsys_core.trainer import load_run

        if not params.get("base_run"):
            raise ValueError("MATT wraps a trained CTR run: set model_params.base_run to its folder")
        base_cfg, base_task, base_model = load_run(params["base_run"])
        if list(base_task.data.field_vocab_sizes) != list(data.field_vocab_sizes) or (
                base_task.data.n_samples("test") != data.n_samples("test")):
            raise ValueError(f"{params['base_run']} was trained on other data ({base_cfg.data}): give MATT the "
                             "base run's data section")
        samples = data.epoch_samples(np.random.default_rng(0))
        cand = data.item_fields[samples.cand]
        ids = np.concatenate([data.user_fields[samples.user], cand], 1) if data.user_fields is not None else cand
        return {"base_model": base_model, "training_ids": torch.from_numpy(np.ascontiguousarray(ids))}

    def confidence(self, ids: torch.Tensor, orders: Sequence[int] | None = None) -> torch.Tensor:
        """Per-feature confidence [B, fields] in [0, 1) from the sketches of `orders` (default: all)."""
        sk = self.sketches
        orders = sk.orders if orders is None else [o for o in orders if o in sk.orders]
        if not orders:
            raise ValueError(f"no sketch for orders {orders}: this MATT counts orders {sk.orders}")
        total = torch.zeros(ids.shape, dtype=torch.float, device=ids.device)
        for order in orders:
            summed = torch.zeros_like(total)
            members = torch.zeros(ids.shape[1], device=ids.device)
            for c, combo in enumerate(sk.combos[order]):
                conf = 1 - torch.exp(-sk.estimate(ids, order, c).float() / self.kappa)
                for f in combo:
                    summed[:, f] += conf
                    members[f] += 1
            total += summed / members.clamp(min=1)
        return total / len(orders)

    def forward(self, batch: dict[str, torch.Tensor], n_paths: int | None = None,
                orders: Sequence[int] | None = None) -> torch.Tensor:
        """Logit of the mean click probability over the inference paths [B] (`n_paths`, `orders`: the
        config's unless given; n_paths=1 is the base model alone)."""
        n_paths = self.n_paths if n_paths is None else n_paths
        ids = sample_field_ids(batch)
        probs = torch.sigmoid(self.base(batch))
        if n_paths > 1:
            conf = self.confidence(ids, orders)
            generator = (torch.Generator(device=ids.device).manual_seed(self.seed)
                         if ids.device.type in ("cpu", "cuda") else None)
            for _ in range(n_paths - 1):
                keep = torch.rand(conf.shape, generator=generator, device=ids.device) < conf
                path = ids * keep
                probs = probs + torch.sigmoid(self.base(self._with_fields(batch, path)))
            probs = probs / n_paths
        probs = probs.clamp(1e-7, 1 - 1e-7)
        return torch.log(probs) - torch.log1p(-probs)

    def inference_variants(self) -> dict[str, dict]:
        """The ablations, with the same sketches and base model: the base alone, fewer or more paths, and
        only the lower orders."""
        variants: dict[str, dict] = {"base": {"n_paths": 1}}
        for n in (2, 4, 16):
            if n != self.n_paths:
                variants[f"paths{n}"] = {"n_paths": n}
        for top in self.sketches.orders[:-1]:
            variants[f"orders1-{top}"] = {"orders": [o for o in self.sketches.orders if o <= top]}
        return variants

    def _with_fields(self, batch: dict[str, torch.Tensor], ids: torch.Tensor) -> dict[str, torch.Tensor]:
        out = dict(batch)
        if self.n_user:
            out["user_fields"] = ids[:, :self.n_user]
        out["cand_fields"] = ids[:, self.n_user:]
        return out

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise ValueError("MATT is a test-time method: it trains nothing (train.epochs: 0)")
