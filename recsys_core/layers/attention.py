"""Target attention shared by the ranking models: a candidate reads a user's behaviours."""

from __future__ import annotations

import torch


def masked_target_attention(hist: torch.Tensor, cand: torch.Tensor, mask: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product softmax attention of candidates [B, D] over behaviours [B, L, D] where `mask` [B, L]
    is True. Returns (pooled [B, D], weights [B, L]); a user without behaviours pools to 0 (not a uniform mix)."""
    scores = (hist * cand.unsqueeze(1)).sum(-1) / hist.shape[-1] ** 0.5
    weights = torch.softmax(scores.masked_fill(~mask, -1e9), -1)
    pooled = (weights.unsqueeze(-1) * hist).sum(1) * mask.any(-1, keepdim=True)
    return pooled, weights
