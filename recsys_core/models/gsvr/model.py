"""GSVR (arXiv 2508.14493): scenario-specific variational user and item representations with a global
knowledge-aware prior, on top of a multi-scenario CTR model.

**Scenarios.** On MovieLens-1M a sample's scenario is the genre group of its candidate movie
(`recsys_core.data.movielens.GENRE_GROUPS`: action, comedy, drama, family, horror; the same users rate in
all of them, family and horror are sparse). The model reads the group of every item from the data
(`data_inputs`), so batches need nothing new.

**Base (multi-scenario) model**, `variational: false`: a shared bottom over [softmax target attention of
the candidate over the history, the candidate's fields, the user's fields, a scenario embedding] and a
shared head plus one head per scenario (logit = shared + scenario head): the shared-bottom / per-scenario
tower design GSVR is applied to.

**GSVR**, `variational: true`: every (scenario, user) and (scenario, item) pair has a Gaussian posterior
q = N(μ, diag σ²) (its own mean and log-variance tables); a sample draws z_u, z_i by reparameterisation while
training (the means at inference) and feeds [z_u, z_i, z_u ⊙ z_i] into the bottom. The loss adds
`kl_weight` · (KL(q_u ‖ p_u) + KL(q_i ‖ p_i)).

**Prior** (`prior`):
- `global` `[proposal]` (the paper's global knowledge-aware multinomial prior; its exact form is not
  public): K shared prototype vectors m_1..m_K; a user's *global* representation g_u (the mean of the
  scenario-independent embeddings of its id and profile fields, trained by every scenario) gives
  multinomial weights π_u = softmax(W g_u) over the prototypes, and p_u = N(Σ_k π_uk m_k, I). Items the
  same from their side information (genres, year). Users with akin interests and items with similar side
  information get similar priors, so a user with few records in a sparse scenario is pulled towards what
  its global knowledge says rather than towards 0.
- `standard`: p = N(0, I) (a plain VAE prior: the ablation of the global prior).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.layers import FeatureEmbedding, masked_target_attention, mlp
from recsys_core.registry import register_model


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor, prior_mu: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, e^logvar) ‖ N(prior_mu, I)) summed over the last dimension."""
    return 0.5 * (logvar.exp() + (mu - prior_mu).pow(2) - 1.0 - logvar).sum(-1)


class VariationalTable(nn.Module):
    """Posterior means and log-variances of `rows` × `scenarios` entities (row-major: scenario * rows + row)."""

    def __init__(self, rows: int, scenarios: int, dim: int):
        super().__init__()
        self.rows = rows
        self.mu = nn.Embedding(rows * scenarios, dim)
        self.logvar = nn.Embedding(rows * scenarios, dim)
        nn.init.normal_(self.mu.weight, std=0.01)
        nn.init.constant_(self.logvar.weight, -4.0)

    def forward(self, scenario: torch.Tensor, row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = scenario * self.rows + row
        return self.mu(index), self.logvar(index).clamp(-8.0, 4.0)


class GlobalPrior(nn.Module):
    """[proposal] p = N(Σ_k softmax(W g)_k m_k, I): multinomial weights over K global prototypes."""

    def __init__(self, in_dim: int, dim: int, prototypes: int):
        super().__init__()
        self.weights = nn.Linear(in_dim, prototypes)
        self.prototypes = nn.Parameter(torch.randn(prototypes, dim) * 0.1)

    def forward(self, knowledge: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.weights(knowledge), -1) @ self.prototypes


@register_model("gsvr", tasks="ctr")
class GSVR(nn.Module):
    def __init__(self, field_vocab_sizes: Sequence[int], max_len: int, item_group: Any, n_scenarios: int,
                 dense_dim: int = 0, user_field_vocab_sizes: Sequence[int] = (), embed_dim: int = 16,
                 latent_dim: int = 16, variational: bool = True, prior: str = "global", prototypes: int = 16,
                 kl_weight: float = 1e-3, mlp_hidden: Sequence[int] = (200, 80), dropout: float = 0.0):
        super().__init__()
        if max_len <= 0 or not len(user_field_vocab_sizes):
            raise ValueError("gsvr needs histories and user fields (data.kind: movielens)")
        if prior not in ("global", "standard"):
            raise ValueError(f"prior must be global or standard, not {prior!r}")
        self.register_buffer("item_group", torch.as_tensor(np.asarray(item_group), dtype=torch.long),
                             persistent=False)
        self.n_scenarios, self.variational, self.prior, self.kl_weight = n_scenarios, variational, prior, kl_weight
        self.features = FeatureEmbedding(list(field_vocab_sizes), embed_dim)
        self.user_features = FeatureEmbedding(list(user_field_vocab_sizes), embed_dim)
        self.scenario_emb = nn.Embedding(n_scenarios, embed_dim)
        item_dim = embed_dim * len(field_vocab_sizes)
        in_dim = 2 * item_dim + embed_dim * len(user_field_vocab_sizes) + embed_dim
        if variational:
            n_users, n_items = user_field_vocab_sizes[0], field_vocab_sizes[0]
            self.user_posterior = VariationalTable(n_users, n_scenarios, latent_dim)
            self.item_posterior = VariationalTable(n_items, n_scenarios, latent_dim)
            if prior == "global":
                self.user_prior = GlobalPrior(embed_dim, latent_dim, prototypes)
                self.item_prior = GlobalPrior(embed_dim, latent_dim, prototypes)
            in_dim += 3 * latent_dim
        self.bottom = mlp(in_dim, mlp_hidden[:-1] or mlp_hidden, dropout=dropout)
        bottom_dim = (mlp_hidden[:-1] or mlp_hidden)[-1]
        self.shared_head = mlp(bottom_dim, mlp_hidden[-1:], 1)
        self.scenario_heads = nn.Linear(bottom_dim, n_scenarios)
        self.last_kl = torch.zeros(())

    @staticmethod
    def data_inputs(data, params: dict[str, Any]) -> dict[str, Any]:
        if not hasattr(data, "item_group"):
            raise ValueError("gsvr's scenarios are MovieLens genre groups: use data.kind movielens")
        return {"item_group": data.item_group, "n_scenarios": len(data.group_names)}

    def scenario_of(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.item_group[batch["cand_fields"][:, 0]]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hist_ids, cand_ids = batch["hist_fields"], batch["cand_fields"]
        hist, cand = self.features.flat(hist_ids), self.features.flat(cand_ids)
        mask = (hist_ids > 0).any(-1)
        interest = masked_target_attention(hist, cand, mask)[0]
        user_fields = self.user_features.of_batch(batch)  # [B, U, k]
        scenario = self.scenario_of(batch)
        parts = [interest, cand, user_fields.flatten(1), self.scenario_emb(scenario)]
        kl = hist.new_zeros(len(cand))
        if self.variational:
            user_row, item_row = batch["user_fields"][:, 0], cand_ids[:, 0]
            (mu_u, lv_u), (mu_i, lv_i) = (self.user_posterior(scenario, user_row),
                                          self.item_posterior(scenario, item_row))
            if self.training:
                z_u = mu_u + torch.randn_like(mu_u) * (0.5 * lv_u).exp()
                z_i = mu_i + torch.randn_like(mu_i) * (0.5 * lv_i).exp()
            else:
                z_u, z_i = mu_u, mu_i
            parts += [z_u, z_i, z_u * z_i]
            if self.prior == "global":
                # global knowledge: scenario-independent embeddings, trained by every scenario
                prior_u = self.user_prior(user_fields.mean(1))
                prior_i = self.item_prior(self.features(cand_ids).mean(1))
            else:
                prior_u, prior_i = torch.zeros_like(mu_u), torch.zeros_like(mu_i)
            kl = gaussian_kl(mu_u, lv_u, prior_u) + gaussian_kl(mu_i, lv_i, prior_i)
        self.last_kl = kl
        h = self.bottom(torch.cat(parts, -1))
        return (self.shared_head(h).squeeze(-1)
                + self.scenario_heads(h).gather(1, scenario.unsqueeze(1)).squeeze(1))

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(self(batch), batch["label"])
        if self.variational and self.kl_weight:
            loss = loss + self.kl_weight * self.last_kl.mean()
        return loss
