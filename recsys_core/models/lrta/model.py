"""Low-rank target attention over long behaviour sequences (arXiv 2503.02542), on the zoo's CTR contract.

Target attention lets the candidate `c` attend over a user's L behaviours: softmax(q·K^T/√d)·V costs O(L)
per candidate, and a ranking request scores hundreds of candidates against the same history. The paper
compresses the history with rank-r projections so each candidate attends over r ≪ L vectors, adds a loss
that keeps what the softmax over all L behaviours computes (linear compression alone loses its
nonlinearity), and serves with matrix absorption and pre-storage. Its formulas are not public; this module's
choices (each `[proposal]`):

- **Compression** `[proposal]`: r learned slot queries S ∈ R^{r×D} read the history once,
  A = softmax_L(S·(H W_s)^T) (masked over padding), Z = A·H ∈ R^{r×D}. Z depends on the user only, never on
  the candidate, so it is computed once per user (pre-storage) and every candidate attends over r slots:
  softmax(q·(Z W_k)^T/√d)·(Z W_v), O(r) per candidate instead of O(L).
- **Nonlinearity-preserving loss** `[proposal]`: during training the full softmax target attention over all L
  behaviours (same W_q, W_k, W_v) is computed too, and `approx_weight`·‖o_lowrank − sg(o_full)‖² pulls the
  compressed attention's output towards it (the full path also trains through its own CTR loss term
  `full_weight`·BCE, so the teacher stays a good attention). `approx_weight: 0` switches the term off.
- **Matrix absorption + pre-storage** (`prestore()`, `score_prestored()`): q·k_j = c^T W_q^T W_k z_j, so
  K̃ = Z (W_q^T W_k)^T / √d (r × D) is stored per user and a candidate's logit needs no projection at all;
  likewise V is absorbed into the output projection, Ṽ = Z W_v^T W_o^T. Serving then costs 2·r·D multiply-adds
  per candidate. `tests` pin that the served scores equal the training forward's.

`rank: 0` is the full softmax target attention (the paper's base at equal architecture); `DIN` is the zoo's
DIN-style activation-unit attention. The pooled interest, the candidate and the user fields go through an MLP.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.layers import FeatureEmbedding, mlp
from recsys_core.registry import register_model


@register_model("lrta", tasks="ctr")
class LowRankTargetAttention(nn.Module):
    def __init__(self, field_vocab_sizes: Sequence[int], max_len: int, dense_dim: int = 0, embed_dim: int = 16,
                 attn_dim: int = 32, rank: int = 16, approx_weight: float = 1.0, full_weight: float = 0.5,
                 mlp_hidden: Sequence[int] = (200, 80), dropout: float = 0.0,
                 user_field_vocab_sizes: Sequence[int] = ()):
        super().__init__()
        if max_len <= 0:
            raise ValueError("lrta needs user behaviour histories (hist_fields); this data has none")
        if rank < 0 or approx_weight < 0 or full_weight < 0:
            raise ValueError("rank, approx_weight and full_weight must be >= 0")
        self.features = FeatureEmbedding(list(field_vocab_sizes), embed_dim)
        self.user_features = FeatureEmbedding(list(user_field_vocab_sizes), embed_dim)
        item_dim = embed_dim * len(field_vocab_sizes)
        self.item_dim, self.attn_dim, self.rank = item_dim, attn_dim, rank
        self.approx_weight, self.full_weight = approx_weight, full_weight
        self.w_q = nn.Linear(item_dim, attn_dim, bias=False)
        self.w_k = nn.Linear(item_dim, attn_dim, bias=False)
        self.w_v = nn.Linear(item_dim, attn_dim, bias=False)
        self.w_o = nn.Linear(attn_dim, item_dim, bias=False)
        if rank:
            self.slots = nn.Parameter(torch.randn(rank, attn_dim) / attn_dim ** 0.5)
            self.w_s = nn.Linear(item_dim, attn_dim, bias=False)
        self.dense_dim = dense_dim
        side = embed_dim * len(self.user_features) + dense_dim
        self.head = mlp(2 * item_dim + side, mlp_hidden, 1, dropout=dropout)

    # ---------------------------------------------------------------- the two attentions
    def compress(self, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Z [B, r, D]: the history [B, L, D] read by the r slot queries (padding never read)."""
        logits = torch.einsum("rd,bld->brl", self.slots, self.w_s(hist))
        logits = logits.masked_fill(~mask[:, None, :], -1e9)
        return torch.softmax(logits, dim=-1) @ hist

    def attend(self, cand: torch.Tensor, keys_from: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Softmax target attention of the candidates [B, D] over `keys_from` [B, n, D] -> [B, D]."""
        q = self.w_q(cand).unsqueeze(1)
        scores = (q * self.w_k(keys_from)).sum(-1) / self.attn_dim ** 0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, -1e9)
        weights = torch.softmax(scores, dim=-1)
        if mask is not None:  # a user without history attends to nothing (all-zero output, not a uniform mix)
            weights = weights * mask.any(-1, keepdim=True)
        return self.w_o((weights.unsqueeze(-1) * self.w_v(keys_from)).sum(1))

    def _head(self, interest: torch.Tensor, cand: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [interest, cand, self.user_features.of_batch(batch).flatten(1)]
        if self.dense_dim:
            parts.append(batch["dense"])
        return self.head(torch.cat(parts, -1)).squeeze(-1)

    def _embed(self, batch):
        hist_ids = batch["hist_fields"]
        return self.features.flat(hist_ids), self.features.flat(batch["cand_fields"]), (hist_ids > 0).any(-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Click logits [B] (the low-rank attention when rank > 0, else the full one)."""
        hist, cand, mask = self._embed(batch)
        if not self.rank:
            return self._head(self.attend(cand, hist, mask), cand, batch)
        z = self.compress(hist, mask)
        has = mask.any(-1, keepdim=True).expand(-1, self.rank)
        return self._head(self.attend(cand, z, has), cand, batch)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hist, cand, mask = self._embed(batch)
        full = self.attend(cand, hist, mask)
        if not self.rank:
            return F.binary_cross_entropy_with_logits(self._head(full, cand, batch), batch["label"])
        has = mask.any(-1, keepdim=True).expand(-1, self.rank)
        low = self.attend(cand, self.compress(hist, mask), has)
        loss = F.binary_cross_entropy_with_logits(self._head(low, cand, batch), batch["label"])
        if self.full_weight:
            loss = loss + self.full_weight * F.binary_cross_entropy_with_logits(self._head(full, cand, batch),
                                                                                  batch["label"])
        if self.approx_weight:
            loss = loss + self.approx_weight * (low - full.detach()).pow(2).sum(-1).mean()
        return loss

    # ---------------------------------------------------------------- serving
    @torch.no_grad()
    def prestore(self, hist_fields: torch.Tensor) -> dict[str, torch.Tensor]:
        """What is stored per user ([B, L, F] histories in): K̃ [B, r, D] with W_q^T W_k absorbed and the
        1/√d scale folded in, Ṽ [B, r, D] with W_o W_v absorbed, and whether the user has any history."""
        if not self.rank:
            raise ValueError("prestore() is the low-rank serving path: this model has rank 0")
        mask = (hist_fields > 0).any(-1)
        z = self.compress(self.features.flat(hist_fields), mask)
        absorbed_qk = self.w_q.weight.T @ self.w_k.weight / self.attn_dim ** 0.5  # [D, D]
        absorbed_ov = self.w_o.weight @ self.w_v.weight  # [D, D]
        return {"keys": z @ absorbed_qk.T, "values": z @ absorbed_ov.T, "has_history": mask.any(-1)}

    @torch.no_grad()
    def score_prestored(self, stored: dict[str, torch.Tensor], user: int, cand_fields: torch.Tensor,
                        user_fields: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [N] of N candidates [N, F] for row `user` of `prestore()`'s output: O(r·D) per candidate."""
        cand = self.features.flat(cand_fields)
        weights = torch.softmax(cand @ stored["keys"][user].T, dim=-1) * stored["has_history"][user]
        batch = {"cand_fields": cand_fields}
        if user_fields is not None:
            batch["user_fields"] = user_fields.expand(len(cand_fields), -1)
        return self._head(weights @ stored["values"][user], cand, batch)

    def score_one_history(self, hist: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """The `rank_products` entry point: one history [T, F], N candidates [N, F] (no user fields)."""
        if self.rank and not len(self.user_features):
            return self.score_prestored(self.prestore(hist.unsqueeze(0)), 0, cand)
        return self({"hist_fields": hist.unsqueeze(0).expand(len(cand), -1, -1), "cand_fields": cand})
