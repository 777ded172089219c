"""CSMF (arXiv 2504.12920, SIGIR'25): cascaded selective mask fine-tuning for multi-objective retrieval.

Objectives in a cascade, click → conversion (MovieLens-1M: every rated movie is a click, a rating ≥
`conversion_stars` a conversion), learnt by ONE two-tower network (`recsys_core.models.two_tower`) whose
parameters are split between the objectives instead of growing a sub-network per objective:

- **Stage `click`:** the plain two-tower trained on clicks.
- **Stage `conversion`** (`init_from` = a click run): in every weight matrix and embedding table the
  `free_ratio` smallest-magnitude entries are *freed* (set to 0: the click network is what is left, θ⊙M);
  the kept entries are frozen and only the freed ones learn, on conversions, starting from the click
  network (the cascade: conversion builds on what click learnt). The click vectors are the network with the
  freed entries at 0, the conversion vectors the whole network: both live in the same tensors, so serving
  holds no more parameters than one network. Selection by magnitude is `[proposal]` (the paper's selection
  rule is not public). `free_ratio: 1.0` is the no-mask ablation: every parameter is fine-tuned on
  conversions and the click vectors are the fine-tuned network's.
- **Serving, fusion per scenario** `[proposal]`: the index stores [v_click; v_conv] per item and a query
  sends [w_click·u_click; w_conv·u_conv], so one inner product is the weighted fusion w_click·s_click +
  w_conv·s_conv of the objectives' scores; the weights are per scenario at query time
  (`scenario_weights`), with no second index and no second search.
- **Stage `shared_bottom`:** the multi-task baseline the paper compares against: shared embeddings and
  transformer, a user head and an item head *per objective* (extra parameters), both losses summed.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from recsys_core.layers import mlp
from recsys_core.models.two_tower.model import TwoTower
from recsys_core.registry import register_model

STAGES = ("click", "conversion", "shared_bottom")
DEFAULT_SCENARIO_WEIGHTS = {"click": [1.0, 0.0], "conversion": [0.5, 1.0]}


class FreedEntries(nn.Module):
    """Parametrisation W = W_click + Δ ⊙ free: W_click frozen, Δ learnt on the freed entries only.
    `conversion = False` gives the click network (Δ off)."""

    def __init__(self, free: torch.Tensor):
        super().__init__()
        self.register_buffer("free", free.float())
        self.delta = nn.Parameter(torch.zeros_like(free, dtype=torch.float32))
        self.conversion = True

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.delta * self.free if self.conversion else weight


@register_model("csmf", tasks="retrieval")
class CSMF(TwoTower):
    def __init__(self, n_items: int, max_len: int, stage: str = "click", init_from: str | None = None,
                 free_ratio: float = 0.3, conversion_stars: float = 4.0,
                 scenario_weights: dict[str, list[float]] | None = None, **base: Any):
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        if not 0 < free_ratio <= 1:
            raise ValueError(f"free_ratio must be in (0, 1], got {free_ratio}")
        base.pop("min_stars", None)  # which targets count is the stage's business
        super().__init__(n_items, max_len, **base)
        self.stage, self.free_ratio, self.conversion_stars = stage, free_ratio, conversion_stars
        self.weights = {k: [float(w) for w in v] for k, v in (scenario_weights or DEFAULT_SCENARIO_WEIGHTS).items()}
        if any(len(v) != 2 for v in self.weights.values()):
            raise ValueError("scenario_weights: each scenario gives [w_click, w_conversion]")
        self.active = "click"
        if stage == "shared_bottom":
            hidden = self.user_out.in_features
            self.user_out_conv, self.item_mlp_conv = nn.Linear(hidden, hidden), mlp(hidden, [2 * hidden], hidden)
        if stage == "conversion":
            if not init_from:
                raise ValueError("stage: conversion fine-tunes a click run: set model_params.init_from to its folder")
            weights = Path(init_from) / "best.pt"
            if not weights.exists():
                raise FileNotFoundError(f"model_params.init_from: {weights} does not exist (train stage click first)")
            self.load_state_dict(torch.load(weights, map_location="cpu"))  # a two_tower run or stage click
            self.free_entries()

    @property
    def scenarios(self) -> tuple[str, ...] | None:
        return None if self.stage == "click" else tuple(self.weights)

    # -- stage 2: selective masks -------------------------------------------------------------------
    def maskable(self) -> list[tuple[nn.Module, str]]:
        """Every weight matrix and embedding table of both towers (biases and norms, a few hundred numbers, stay
        click's and frozen)."""
        return [(module, name) for module in self.modules() for name, p in list(module.named_parameters(recurse=False))
                if p.dim() >= 2 and not isinstance(module, FreedEntries)]

    def free_entries(self) -> None:
        """Free the `free_ratio` smallest-magnitude entries of each maskable tensor for the conversion objective."""
        if self.free_ratio >= 1:  # the no-mask ablation: plain fine-tuning of every parameter
            return
        for p in self.parameters():  # biases and norms are click's too: only the freed entries learn
            p.requires_grad_(False)
        for module, name in self.maskable():
            weight = getattr(module, name)
            k = max(1, int(weight.numel() * self.free_ratio))
            free = weight.detach().abs() <= weight.detach().abs().flatten().kthvalue(k).values
            with torch.no_grad():
                weight[free] = 0.0  # the click network is θ ⊙ M; freed entries start at 0 for conversion
            weight.requires_grad_(False)  # click's entries are frozen; Δ on the freed ones is what learns
            parametrize.register_parametrization(module, name, FreedEntries(free))

    @contextmanager
    def objective(self, name: str):
        """Compute with one objective's network: heads (shared bottom) or freed entries (CSMF) switched."""
        previous = self.active
        self.active = name
        for m in self.modules():
            if isinstance(m, FreedEntries):
                m.conversion = name == "conversion"
        try:
            yield
        finally:
            self.active = previous
            for m in self.modules():
                if isinstance(m, FreedEntries):
                    m.conversion = previous == "conversion"

    # -- towers with per-objective heads ------------------------------------------------------------
    def encode_items(self, items: torch.Tensor) -> torch.Tensor:
        if self.stage != "shared_bottom" or self.active == "click":
            return super().encode_items(items)
        x = self.item_inputs(items)
        return F.normalize(x + self.item_mlp_conv(x), dim=-1) * (items > 0).unsqueeze(-1).float()

    def user_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.stage != "shared_bottom" or self.active == "click":
            return super().user_states(input_ids)
        x = self.emb_dropout(self.item_inputs(input_ids)) * (input_ids > 0).unsqueeze(-1).float()
        return F.normalize(self.user_out_conv(self.encoder(x, padding_mask=input_ids > 0)), dim=-1)

    def user_vectors(self, input_ids: torch.Tensor, scenario: str | None = None) -> torch.Tensor:
        if self.scenarios is None:
            return super().user_vectors(input_ids)
        w_click, w_conv = self.weights[scenario or "click"]
        with self.objective("click"):
            click = super().user_vectors(input_ids)
        with self.objective("conversion"):
            conv = super().user_vectors(input_ids)
        return torch.cat([w_click * click, w_conv * conv], -1)

    def item_vectors(self, scenario: str | None = None) -> torch.Tensor:
        """[v_click; v_conv] per item: one table serves every scenario (the weights are on the query side)."""
        if self.scenarios is None:
            return super().item_vectors()
        with self.objective("click"):
            click = super().item_vectors()
        with self.objective("conversion"):
            conv = super().item_vectors()
        return torch.cat([click, conv], -1)

    # -- losses -------------------------------------------------------------------------------------
    def objective_loss(self, batch: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        self.min_stars = self.conversion_stars if name == "conversion" else 0.0
        with self.objective(name):
            return super().loss(batch)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.stage == "click":
            return self.objective_loss(batch, "click")
        if self.stage == "conversion":
            return self.objective_loss(batch, "conversion")
        return self.objective_loss(batch, "click") + self.objective_loss(batch, "conversion")
