"""CDAnet (arXiv 2312.00078): cross-domain CTR with a translation network, then an augmentation network
trained on the translated features.

**Domains** (MovieLens-1M, documented in `benchmarks/results/recsys/zoo2/README.md`): users are shared, items
are split by genre group (`recsys_core.data.movielens.GENRE_GROUPS`): the *target* domain is
`target_groups` (default: family = Animation / Children's movies, 58k of 1M ratings), the *source* domain
every other movie. A sample's domain is its candidate's; a user's history splits into the behaviours in
each domain. The target model's own history is its target-domain behaviours only: whatever it learns from
the source domain comes through the transfer mechanism being compared.

**Stage 1, translation network** (`stage: translation`, trained on the samples of both domains;
`data.eval_candidate_groups` = the target groups so early stopping watches the target domain)
`[proposal]` for every formula (the paper's are not public):
- per domain d an encoder gives a latent f_d(x) = MLP([attention of the candidate over the user's
  domain-d behaviours, the candidate, the user fields]) and a predictor P_d;
- translators T_s→t and T_t→s (MLPs) map a latent into the other domain's space;
- **cross-supervised feature translator**: for a sample of domain d (o the other domain), the loss is
  BCE(P_d(f_d(x)), y) + BCE(P_d(T_o→d(f_o(x))), y) + `align_weight`·‖T_o→d(f_o(x)) − sg(f_d(x))‖²:
  the translated other-domain view of the same sample must predict the sample's own-domain label with the
  own-domain predictor (supervision crosses the domains), and lie near the own-domain latent.
  `cross_supervision: false` drops the middle term (translators trained by the alignment term only).

**Stage 2, augmentation network** (`stage: augmentation`, trained on target samples; `init_from` = a stage-1
run, frozen): a target CTR network over [attention over the user's target-domain behaviours, candidate, user
fields] plus the **explicit cross-domain knowledge** T_s→t(f_s(x)) of the frozen translation network (and
its P_t logit on it) as augmented inputs. Without `init_from` the same network is the *target-only* base;
trained on both domains' samples (`data.candidate_groups` unset) it is the *shared-embedding transfer* base.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.layers import FeatureEmbedding, masked_target_attention, mlp
from recsys_core.registry import register_model


class DomainEncoder(nn.Module):
    def __init__(self, in_dim: int, latent_dim: int):
        super().__init__()
        self.net = mlp(in_dim, [2 * latent_dim], latent_dim)
        self.predictor = mlp(latent_dim, [latent_dim], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_model("cdanet", tasks="ctr")
class CDAnet(nn.Module):
    def __init__(self, field_vocab_sizes: Sequence[int], max_len: int, item_domain: Any, dense_dim: int = 0,
                 user_field_vocab_sizes: Sequence[int] = (), stage: str = "augmentation",
                 target_groups: Sequence[str] = ("family",), embed_dim: int = 16, latent_dim: int = 32,
                 cross_supervision: bool = True, align_weight: float = 0.1, mlp_hidden: Sequence[int] = (200, 80),
                 dropout: float = 0.0, init_from: str | None = None):
        super().__init__()
        del target_groups  # used by data_inputs only
        if stage not in ("translation", "augmentation"):
            raise ValueError(f"stage must be translation or augmentation, not {stage!r}")
        if max_len <= 0:
            raise ValueError("cdanet reads behaviour histories: this data has none")
        self.stage, self.cross_supervision, self.align_weight = stage, cross_supervision, align_weight
        self.register_buffer("item_domain", torch.as_tensor(np.asarray(item_domain), dtype=torch.bool),
                             persistent=False)  # True = target domain
        self.features = FeatureEmbedding(list(field_vocab_sizes), embed_dim)
        self.user_features = FeatureEmbedding(list(user_field_vocab_sizes), embed_dim)
        item_dim = embed_dim * len(field_vocab_sizes)
        in_dim = 2 * item_dim + embed_dim * len(self.user_features)
        if stage == "translation":
            self.source, self.target = DomainEncoder(in_dim, latent_dim), DomainEncoder(in_dim, latent_dim)
            self.to_target, self.to_source = mlp(latent_dim, [latent_dim], latent_dim), mlp(latent_dim, [latent_dim],
                                                                                              latent_dim)
            self.init_report = {}
            return
        self.translation: CDAnet | None = None
        extra = 0
        if init_from:
            self.translation = self._load_translation(init_from, field_vocab_sizes, max_len, item_domain,
                                                      user_field_vocab_sizes)
            extra = latent_dim + 1
        self.head = mlp(in_dim + extra, mlp_hidden, 1, dropout=dropout)
        self.init_report = {"init_from": init_from}

    @staticmethod
    def data_inputs(data, params: dict[str, Any]) -> dict[str, Any]:
        if not hasattr(data, "item_group"):
            raise ValueError("cdanet's domains are MovieLens genre groups: use data.kind movielens")
        groups = list(params.get("target_groups", ("family",)))
        unknown = set(groups) - set(data.group_names)
        if unknown:
            raise ValueError(f"model_params.target_groups: unknown groups {sorted(unknown)} ({data.group_names})")
        return {"item_domain": np.isin(data.item_group, [data.group_names.index(g) for g in groups])}

    @staticmethod
    def _load_translation(run: str, field_vocab_sizes, max_len, item_domain, user_field_vocab_sizes) -> CDAnet:
        import yaml

        folder = Path(run)
        weights, config = folder / "best.pt", folder / "config.yaml"
        if not weights.exists() or not config.exists():
            raise FileNotFoundError(f"{folder} is not a finished run: init_from must be a cdanet translation run")
        params = dict(yaml.safe_load(config.read_text()).get("model_params", {}))
        if params.get("stage") != "translation":
            raise ValueError(f"{folder} is not a translation-stage cdanet run (stage={params.get('stage')!r})")
        params.pop("init_from", None)
        net = CDAnet(field_vocab_sizes, max_len, item_domain, user_field_vocab_sizes=user_field_vocab_sizes,
                     **params)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("model", state))
        net.requires_grad_(False)
        return net

    def domain_inputs(self, batch: dict[str, torch.Tensor], target: bool) -> torch.Tensor:
        """[attention over the user's behaviours in one domain, candidate, user fields] per sample."""
        hist_ids = batch["hist_fields"]
        hist, cand = self.features.flat(hist_ids), self.features.flat(batch["cand_fields"])
        in_domain = self.item_domain[hist_ids[..., 0]] == target
        mask = (hist_ids > 0).any(-1) & in_domain
        return torch.cat([masked_target_attention(hist, cand, mask)[0], cand, self.user_features.of_batch(batch).flatten(1)], -1)

    def translated(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1's cross-domain knowledge of target samples: (T_s→t(f_s(x)) [B, latent], P_t of it [B])."""
        feature = self.to_target(self.source(self.domain_inputs(batch, target=False)))
        return feature, self.target.predictor(feature).squeeze(-1)

    def _translation_terms(self, batch):
        is_target = self.item_domain[batch["cand_fields"][:, 0]]
        f_s, f_t = self.source(self.domain_inputs(batch, False)), self.target(self.domain_inputs(batch, True))
        own = torch.where(is_target[:, None], f_t, f_s)
        crossed = torch.where(is_target[:, None], self.to_target(f_s), self.to_source(f_t))
        own_logit = torch.where(is_target, self.target.predictor(f_t).squeeze(-1), self.source.predictor(f_s).squeeze(-1))
        crossed_logit = torch.where(is_target, self.target.predictor(crossed).squeeze(-1),
                                    self.source.predictor(crossed).squeeze(-1))
        return own, crossed, own_logit, crossed_logit

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.stage == "translation":
            return self._translation_terms(batch)[2]
        parts = [self.domain_inputs(batch, target=True)]
        if self.translation is not None:
            self.translation.eval()
            with torch.no_grad():
                feature, logit = self.translation.translated(batch)
            parts += [feature, logit.unsqueeze(-1)]
        return self.head(torch.cat(parts, -1)).squeeze(-1)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        label = batch["label"]
        if self.stage == "augmentation":
            return F.binary_cross_entropy_with_logits(self(batch), label)
        own, crossed, own_logit, crossed_logit = self._translation_terms(batch)
        loss = F.binary_cross_entropy_with_logits(own_logit, label)
        if self.cross_supervision:
            loss = loss + F.binary_cross_entropy_with_logits(crossed_logit, label)
        if self.align_weight:
            loss = loss + self.align_weight * (crossed - own.detach()).pow(2).sum(-1).mean()
        return loss
