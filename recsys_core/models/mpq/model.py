"""REG4Rec's MPQ (arXiv 2508.15308): MoE-based parallel quantization. M auto-encoder experts
e_r = E_r(P_r v), each with its own codebook; c_r = argmin_j ‖e_r − z_{rj}‖²; a gate combines the chosen
codewords q = Σ_r h_r(v) z_{r,c_r} (h = softmax(W v) [proposal: the gate form is unknown]) and one
decoder reconstructs v. Each item gets M unordered tokens (codebook r, code c_r): `TokenSetIndex`
maps any order of them back to the item.

loss = ‖v − Dec(q)‖² + Σ_r (codebook + β · commitment)_r + orth_weight · Σ_{r<s} |cos(e_r, e_s)|
       + diversity_weight · Σ_{r<s} I(c_r; c_s) − balance_weight · Σ_r H(c_r)

The VQ terms are our addition [proposal]; the paper names reconstruction + expert orthogonality.
What keeps the experts apart [proposal]: the first MPQ here (reconstruction + orthogonality only)
collapsed on Beauty, 74% of items sharing their 4-token tuple with another item, every codebook fully
used: the experts split the items the same way, only rotated, which an orthogonality term on the
outputs cannot see. Three pieces stop that:
- per-expert input projections P_r (a learned linear map each, initialised at different random
  orthogonal rotations), so the experts start from different views of the item;
- a code-diversity term: the mutual information between two experts' soft code assignments
  (p_r = softmax(−‖e_r − z_r‖²/τ), estimated over the batch), pushed down for every expert pair, so
  knowing one token tells little about another and the tuple carries M tokens' worth of information;
- code balancing: the entropy of each expert's mean soft assignment, pushed up.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from recsys_core.layers import mlp
from recsys_core.layers.quantize import (
    Codebook,
    SemanticIdTokenizer,
    mutual_orthogonality,
    reconstruction_loss,
)
from recsys_core.registry import register_model


def soft_assignments(z: torch.Tensor, codebook: Codebook, temperature: float) -> torch.Tensor:
    """[B, K] softmax over codewords of −‖z − c‖² scaled by the batch's mean distance (so τ is unitless)."""
    dist = -codebook.scores(z)
    return torch.softmax(-dist / (temperature * dist.detach().mean().clamp_min(1e-6)), -1)


def pairwise_mutual_information(probs: list[torch.Tensor]) -> torch.Tensor:
    """Σ over expert pairs of I(c_r; c_s) from soft assignments [B, K_r], estimated on the batch:
    P_rs = mean_i p_i^r (p_i^s)ᵀ, I = Σ P_rs log(P_rs / (p̄_r p̄_s))."""
    total = probs[0].new_zeros(())
    for a, b in itertools.combinations(probs, 2):
        joint = a.T @ b / a.shape[0]
        outer = a.mean(0)[:, None] * b.mean(0)[None, :]
        total = total + (joint * (torch.log(joint + 1e-10) - torch.log(outer + 1e-10))).sum()
    return total


def marginal_entropy(probs: list[torch.Tensor]) -> torch.Tensor:
    """Σ_r H(p̄_r): the entropy of each expert's average code usage on the batch."""
    return sum(-(p.mean(0) * torch.log(p.mean(0) + 1e-10)).sum() for p in probs)


@register_model("mpq", tasks="semantic_id")
class MPQ(SemanticIdTokenizer):
    def __init__(self, modality_dims: dict[str, int], experts: int = 4, hidden: Sequence[int] = (128,),
                 decoder_hidden: Sequence[int] = (128,), latent_dim: int = 32, codebook_size: int = 256,
                 beta: float = 0.25, orth_weight: float = 0.1, restart_every: int = 20,
                 expert_projections: bool = True, diversity_weight: float = 1.0, balance_weight: float = 0.1,
                 assign_temperature: float = 0.1):
        super().__init__(modality_dims)
        if experts < 1:
            raise ValueError(f"MPQ needs at least one expert, got {experts}")
        if assign_temperature <= 0:
            raise ValueError(f"assign_temperature must be positive, got {assign_temperature}")
        self.projections = nn.ModuleList()
        if expert_projections:
            for _ in range(experts):
                proj = nn.Linear(self.input_dim, self.input_dim, bias=False)
                nn.init.orthogonal_(proj.weight)
                self.projections.append(proj)
        self.experts = nn.ModuleList(mlp(self.input_dim, list(hidden), latent_dim) for _ in range(experts))
        self.codebooks = nn.ModuleList(Codebook(codebook_size, latent_dim, "l2", beta, restart_every=restart_every)
                                       for _ in range(experts))
        self.gate = nn.Linear(self.input_dim, experts)
        self.decoder = mlp(latent_dim, list(decoder_hidden), self.input_dim)
        self.orth_weight, self.diversity_weight, self.balance_weight = orth_weight, diversity_weight, balance_weight
        self.assign_temperature = assign_temperature

    @property
    def codebook_sizes(self) -> list[int]:
        return [cb.size for cb in self.codebooks]

    def expert_outputs(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.projections):
            return torch.stack([e(p(x)) for e, p in zip(self.experts, self.projections, strict=True)], 1)
        return torch.stack([e(x) for e in self.experts], 1)

    def loss(self, batch: dict[str, torch.Tensor]):
        x = self.features(batch)
        outputs = self.expert_outputs(x)
        quantized = [cb(outputs[:, r]) for r, cb in enumerate(self.codebooks)]
        gate = torch.softmax(self.gate(x), -1)
        q = (gate.unsqueeze(-1) * torch.stack([o.quantized for o in quantized], 1)).sum(1)
        recon = reconstruction_loss(self.decoder(q), x)
        vq = sum(o.loss for o in quantized)
        orth = mutual_orthogonality(outputs)
        total = recon + vq + self.orth_weight * orth
        parts = {"recon": float(recon.detach()), "vq": float(vq.detach()), "orth": float(orth.detach())}
        if self.diversity_weight or self.balance_weight:
            probs = [soft_assignments(outputs[:, r], cb, self.assign_temperature)
                     for r, cb in enumerate(self.codebooks)]
            if self.diversity_weight and len(probs) > 1:
                mi = pairwise_mutual_information(probs)
                total = total + self.diversity_weight * mi
                parts["mutual_info"] = float(mi.detach())
            if self.balance_weight:
                entropy = marginal_entropy(probs)
                total = total - self.balance_weight * entropy
                parts["usage_entropy"] = float(entropy.detach())
        return total, parts

    @torch.no_grad()
    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        outputs = self.expert_outputs(self.features(batch))
        return torch.stack([cb.assign(outputs[:, r]) for r, cb in enumerate(self.codebooks)], 1)

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.features(batch)
        codes = self.encode(batch)
        chosen = torch.stack([cb.weight[codes[:, r]] for r, cb in enumerate(self.codebooks)], 1)
        return self.decoder((torch.softmax(self.gate(x), -1).unsqueeze(-1) * chosen).sum(1))


class TokenSetIndex:
    """Item lookup by an unordered token set: a token is (codebook, code); an item is the set of its
    tokens, one per codebook column of `codes` [n_items + 1, M] (row 0 unused). Rows must be distinct
    (append the collision column first: it is one more codebook)."""

    def __init__(self, codes: np.ndarray):
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or len(codes) < 2:
            raise ValueError(f"codes must be [n_items + 1, M] with at least one item, got shape {codes.shape}")
        self.codes = codes
        self.table: dict[frozenset, int] = {}
        for item in range(1, len(codes)):
            key = frozenset(enumerate(codes[item].tolist()))
            if key in self.table:
                raise ValueError(f"items {self.table[key]} and {item} share a token set; add a collision column")
            self.table[key] = item

    def __len__(self) -> int:
        return len(self.table)

    def lookup(self, tokens: Iterable[tuple[int, int]]) -> int | None:
        """The item whose token set is exactly `tokens` (any order), or None."""
        key = frozenset((int(r), int(c)) for r, c in tokens)
        return self.table.get(key)
