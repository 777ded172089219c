"""Vector-quantisation pieces shared by the semantic-ID tokenizers (RQ-VAE, MMQ, ADA-SID, MPQ).

- `Codebook`: K codewords, k-means initialised on the first training batch (or a passed sample),
  nearest codeword by L2 distance or by cosine similarity, straight-through estimator, VQ-VAE
  codebook + commitment losses (β = 0.25), dead-code restart (unused codewords are re-seeded from
  batch vectors), and soft indexing p = softmax(cos(z, c)/τ) for MMQ's behaviour-aware fine-tuning.
- `ResidualQuantizer`: L codebooks, each quantising the residual the previous levels left.
- `cross_orthogonality` / `mutual_orthogonality`: mean Σ|cos| between expert outputs (MMQ, MPQ).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

METRICS = ("l2", "cosine")


def _scores(x: torch.Tensor, centres: torch.Tensor, metric: str) -> torch.Tensor:
    """[N, K] similarity (higher = closer): negative squared distance, or cosine."""
    if metric == "cosine":
        return F.normalize(x, dim=-1) @ F.normalize(centres, dim=-1).T
    return -(x.pow(2).sum(-1, keepdim=True) - 2 * x @ centres.T + centres.pow(2).sum(-1))


def kmeans(x: torch.Tensor, k: int, iters: int = 10, metric: str = "l2",
           generator: torch.Generator | None = None) -> torch.Tensor:
    """k-means++ seeding then Lloyd steps; empty clusters are re-seeded from random points.
    With fewer points than clusters, the extra centres are jittered copies of points."""
    x = x.detach().float()
    n = x.shape[0]
    if n == 0:
        raise ValueError("k-means needs at least one vector")
    if n <= k:
        extra = x[torch.randint(n, (k - n,), generator=generator)]
        spread = x.std(0, keepdim=True).clamp_min(1e-3) if n > 1 else torch.ones_like(x[:1]) * 1e-2
        noise = torch.randn(extra.shape, generator=generator).to(x) * 0.01 * spread
        return torch.cat([x, extra + noise])
    def distance(centre: torch.Tensor) -> torch.Tensor:
        sims = _scores(x, centre, metric)[:, 0]
        return 1 - sims if metric == "cosine" else -sims

    centres = x[torch.randint(n, (1,), generator=generator)]
    closest = distance(centres)
    for _ in range(1, k):
        weights = closest.clamp_min(0) + 1e-12
        pick = torch.multinomial(weights, 1, generator=generator)
        centres = torch.cat([centres, x[pick]])
        closest = torch.minimum(closest, distance(x[pick]))
    for _ in range(iters):
        assign = _scores(x, centres, metric).argmax(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()
        empty = counts == 0
        centres = torch.where(empty[:, None], centres, sums / counts.clamp_min(1)[:, None])
        if empty.any():
            centres[empty] = x[torch.randint(n, (int(empty.sum()),), generator=generator)]
    return centres


@dataclass
class QuantizeOutput:
    quantized: torch.Tensor  # straight-through: forward = codeword(s), gradient → encoder output
    codes: torch.Tensor  # [B] or [B, L]
    loss: torch.Tensor  # codebook + β·commitment (summed over levels)
    levels: torch.Tensor | None = None  # [B, L, D] per-level straight-through codewords (residual only)
    soft: torch.Tensor | None = None  # Σ_k p_k c_k (soft indexing only)
    probs: torch.Tensor | None = None  # p [B, K] or [B, L, K] (soft indexing only)


class Codebook(nn.Module):
    """One VQ codebook. `metric="cosine"` assigns the codeword of highest cosine similarity (MMQ);
    codewords keep their norm so residual levels can carry magnitude."""

    def __init__(self, size: int, dim: int, metric: str = "l2", beta: float = 0.25, kmeans_init: bool = True,
                 kmeans_iters: int = 10, restart_every: int = 20):
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"codebook metric must be one of {METRICS}, got {metric!r}")
        if size < 1 or dim < 1:
            raise ValueError(f"codebook size and dim must be positive, got {size}, {dim}")
        self.size, self.dim, self.metric, self.beta = size, dim, metric, beta
        self.kmeans_init, self.kmeans_iters, self.restart_every = kmeans_init, kmeans_iters, restart_every
        self.weight = nn.Parameter(torch.randn(size, dim) * (dim ** -0.5))
        self.register_buffer("initialised", torch.tensor(not kmeans_init))
        self.register_buffer("usage", torch.zeros(size))
        self.steps_since_restart = 0

    @torch.no_grad()
    def init_from(self, sample: torch.Tensor) -> None:
        """k-means centres of `sample` become the codewords."""
        self.weight.data.copy_(kmeans(sample, self.size, self.kmeans_iters, self.metric).to(self.weight))
        self.initialised.fill_(True)
        self.usage.zero_()
        self.steps_since_restart = 0

    @torch.no_grad()
    def restart_dead_codes(self, sample: torch.Tensor) -> int:
        """Codewords unused since the last restart move onto random batch vectors; returns how many."""
        dead = (self.usage == 0).nonzero().flatten()
        if len(dead) and len(sample):
            picks = sample[torch.randint(len(sample), (len(dead),), device=sample.device)].float()
            noise = torch.randn_like(picks) * 0.01 * picks.std().clamp_min(1e-3)
            self.weight.data[dead] = (picks + noise).to(self.weight)
        self.usage.zero_()
        self.steps_since_restart = 0
        return len(dead)

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        return _scores(z, self.weight, self.metric)

    def assign(self, z: torch.Tensor) -> torch.Tensor:
        return self.scores(z).argmax(-1)

    def _prepare(self, z: torch.Tensor) -> None:
        """Training-time bookkeeping, done before the codewords enter the graph (in-place edits)."""
        if not self.training:
            return
        if not bool(self.initialised):
            self.init_from(z)
        elif self.restart_every and self.steps_since_restart >= self.restart_every:
            self.restart_dead_codes(z.detach())

    def forward(self, z: torch.Tensor, soft_tau: float | None = None) -> QuantizeOutput:
        self._prepare(z)
        sims = self.scores(z)
        codes = sims.argmax(-1)
        chosen = self.weight[codes]
        if self.training:
            self.usage += torch.bincount(codes.detach(), minlength=self.size).to(self.usage)
            self.steps_since_restart += 1
        loss = ((z.detach() - chosen).pow(2).sum(-1) + self.beta * (z - chosen.detach()).pow(2).sum(-1)).mean()
        if soft_tau is None:
            return QuantizeOutput(z + (chosen - z).detach(), codes, loss)
        # Soft indexing: the forward value stays the hard codeword, gradients follow the soft mixture.
        cos = F.normalize(z, dim=-1) @ F.normalize(self.weight, dim=-1).T
        probs = torch.softmax(cos / soft_tau, -1)
        soft = probs @ self.weight
        return QuantizeOutput(soft + (chosen - soft).detach(), codes, loss, soft=soft, probs=probs)


class ResidualQuantizer(nn.Module):
    """L codebooks over successive residuals: z ≈ Σ_l c_l; codes [B, L]."""

    def __init__(self, levels: int, size: int, dim: int, metric: str = "l2", beta: float = 0.25,
                 kmeans_init: bool = True, restart_every: int = 20):
        super().__init__()
        if levels < 1:
            raise ValueError(f"a residual quantizer needs at least one level, got {levels}")
        self.codebooks = nn.ModuleList(Codebook(size, dim, metric, beta, kmeans_init, restart_every=restart_every)
                                       for _ in range(levels))

    @property
    def sizes(self) -> list[int]:
        return [cb.size for cb in self.codebooks]

    def forward(self, z: torch.Tensor, soft_tau: float | None = None) -> QuantizeOutput:
        residual = z
        levels, codes, soft_parts, probs = [], [], [], []
        loss = z.new_zeros(())
        for codebook in self.codebooks:
            out = codebook(residual, soft_tau)
            levels.append(out.quantized)
            codes.append(out.codes)
            loss = loss + out.loss
            if out.soft is not None:
                soft_parts.append(out.soft)
                probs.append(out.probs)
            residual = residual - out.quantized.detach() if soft_tau is None else residual - out.quantized
        stacked = torch.stack(levels, 1)
        total = stacked.sum(1)
        if soft_tau is None:
            total = z + (total - z).detach()  # one straight-through estimator over the sum (RQ-VAE)
        soft = torch.stack(soft_parts, 1).sum(1) if soft_parts else None
        stacked_probs = torch.stack(probs, 1) if probs else None  # every level has the same size
        return QuantizeOutput(total, torch.stack(codes, 1), loss, levels=stacked, soft=soft, probs=stacked_probs)

    def codewords(self, codes: torch.Tensor) -> torch.Tensor:
        """Σ_l c_l for codes [B, L]: the quantized vector without any straight-through path."""
        return sum(cb.weight[codes[:, level]] for level, cb in enumerate(self.codebooks))

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        residual, codes = z, []
        for codebook in self.codebooks:
            idx = codebook.assign(residual)
            codes.append(idx)
            residual = residual - codebook.weight[idx]
        return torch.stack(codes, 1)


def _abs_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(-1, -2)).abs()


def cross_orthogonality(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MMQ's [proposal] L_orth: mean over items of Σ_{i,j} |cos(a_i, b_j)|, a [B, Na, D], b [B, Nb, D]
    (shared vs specific expert outputs of the same item)."""
    return _abs_cos(a, b).sum((-1, -2)).mean()


def mutual_orthogonality(x: torch.Tensor) -> torch.Tensor:
    """Mean over items of Σ_{i<j} |cos(x_i, x_j)| for x [B, N, D] (MPQ's experts)."""
    sims = _abs_cos(x, x)
    return torch.triu(sims, diagonal=1).sum((-1, -2)).mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1,
             same: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row symmetric InfoNCE [B] with in-batch negatives; `same` [B, B] marks off-diagonal pairs that are
    not negatives (e.g. the same item twice) and are masked out."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    if same is not None:
        eye = torch.eye(len(a), dtype=torch.bool, device=a.device)
        logits = logits.masked_fill(same & ~eye, float("-inf"))
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target, reduction="none")
                  + F.cross_entropy(logits.T, target, reduction="none"))


class SemanticIdTokenizer(nn.Module):
    """Base of the tokenizers trained by the `semantic_id` task: the batch holds one float tensor
    per modality name (plus "item" and "richness"); the reconstruction target is their concatenation
    in `modality_dims` order. Subclasses define `loss`, `encode`, `reconstruct`, `codebook_sizes`."""

    def __init__(self, modality_dims: dict[str, int]):
        super().__init__()
        if not isinstance(modality_dims, dict) or not modality_dims:
            raise ValueError(f"modality_dims must be a non-empty {{name: dim}} mapping, got {modality_dims!r}")
        bad = {m: d for m, d in modality_dims.items() if not isinstance(d, int) or d < 1}
        if bad:
            raise ValueError(f"modality dims must be positive integers, got {bad}")
        self.modality_dims = dict(modality_dims)
        self.modalities = list(modality_dims)
        self.input_dim = sum(modality_dims.values())

    def features(self, batch: dict[str, torch.Tensor], names: list[str] | None = None,
                 prefix: str = "") -> torch.Tensor:
        names = self.modalities if names is None else names
        missing = [prefix + m for m in names if prefix + m not in batch]
        if missing:
            raise ValueError(f"batch lacks modalities {missing}; it has {sorted(batch)}")
        return torch.cat([batch[prefix + m].float() for m in names], -1)

    @property
    def codebook_sizes(self) -> list[int]:
        raise NotImplementedError

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def reconstruct(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The decoder's output from the items' hard codes (what the codes alone preserve)."""
        raise NotImplementedError

    @torch.no_grad()
    def recon_error(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean over items of ‖x − x̂‖² (summed over the concatenated feature dims)."""
        x = self.features(batch)
        return (self.reconstruct(batch) - x).pow(2).sum(-1).mean()


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x_hat - x).pow(2).sum(-1).mean()
