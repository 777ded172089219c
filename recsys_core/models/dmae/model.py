"""DMAE (arXiv 2508.14485): a distribution-guided multimodal-interest auto-encoder over behaviour sequences.

Early fusion mixes an item's text and image features before the user is considered; DMAE fuses the
*interests* instead: each modality reads the behaviour sequence on its own, and the per-modality interests
are fused at the behaviour level. Modalities here (MovieLens-1M): **behaviour** (the movie id embedding),
**attributes** (genres and release-year bucket) and **text** (the title, year and genres through the bundled
all-MiniLM-L6-v2, frozen, projected). The paper's formulas are not public; this module's choices:

- **Per-modality interest:** softmax target attention of the candidate over the history in the modality's own
  space gives an interest vector i_m and an attention distribution a_m over the L behaviours.
- **Multimodal-interest auto-encoder** `[proposal]`: an encoder maps [i_1, ..., i_M] to a Gaussian latent
  N(μ, σ²) (reparameterised while training, μ at inference), decoders rebuild every modality's interest from
  the latent (mean-squared reconstruction, `recon_weight`) with a KL to N(0, I) (`kl_weight`); the latent is
  the fused interest the CTR head reads beside the per-modality interests and the candidate.
- **Distribution guidance** `[proposal]`: the modalities' attention distributions over the same behaviours
  are pulled towards their consensus (the mean distribution, stop-gradient): `guide_weight` · Σ_m
  KL(ā ‖ a_m), so a modality that attends to behaviours no other modality finds relevant (noise in one
  modality) is corrected by the others, which is what fusing interests at the behaviour level means here.
  `guide_weight: 0` is the ablation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.data.content import cached_minilm_embeddings
from recsys_core.layers import FeatureEmbedding, masked_target_attention, mlp
from recsys_core.registry import register_model

MODALITIES = ("behaviour", "attributes", "text")


@register_model("dmae", tasks="ctr")
class DMAE(nn.Module):
    def __init__(self, field_vocab_sizes: Sequence[int], max_len: int, dense_dim: int = 0,
                 user_field_vocab_sizes: Sequence[int] = (), item_text_vectors: Any = None, embed_dim: int = 16,
                 latent_dim: int = 16, modalities: Sequence[str] = MODALITIES, guide_weight: float = 0.1,
                 recon_weight: float = 0.1, kl_weight: float = 1e-3, mlp_hidden: Sequence[int] = (200, 80),
                 dropout: float = 0.0, text_cache: str | None = "runs/cache"):
        super().__init__()
        del text_cache  # used by data_inputs only
        unknown = set(modalities) - set(MODALITIES)
        if unknown or not modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {list(modalities)}")
        if max_len <= 0:
            raise ValueError("dmae reads behaviour sequences: this data has no histories")
        self.modalities = list(modalities)
        self.guide_weight, self.recon_weight, self.kl_weight = guide_weight, recon_weight, kl_weight
        self.features = FeatureEmbedding(list(field_vocab_sizes), embed_dim)
        self.user_features = FeatureEmbedding(list(user_field_vocab_sizes), embed_dim)
        if "text" in self.modalities:
            if item_text_vectors is None:
                raise ValueError("the text modality needs item_text_vectors (data with item text)")
            self.register_buffer("text_vectors", torch.as_tensor(np.asarray(item_text_vectors), dtype=torch.float),
                                 persistent=False)
            self.text_proj = nn.Linear(self.text_vectors.shape[1], embed_dim)
        m = len(self.modalities)
        self.encoder = mlp(m * embed_dim, [2 * latent_dim], 2 * latent_dim)
        self.decoder = mlp(latent_dim, [2 * latent_dim], m * embed_dim)
        in_dim = latent_dim + 2 * m * embed_dim + embed_dim * len(self.user_features)
        self.head = mlp(in_dim, mlp_hidden, 1, dropout=dropout)
        self.aux = {}

    @staticmethod
    def data_inputs(data, params: dict[str, Any]) -> dict[str, Any]:
        if "text" not in params.get("modalities", MODALITIES):
            return {}
        if not getattr(data, "item_text", None):
            raise ValueError("dmae's text modality needs item text (data.kind movielens); or drop 'text' "
                             "from model_params.modalities")
        return {"item_text_vectors": cached_minilm_embeddings(data.item_text, params.get("text_cache", "runs/cache"))}

    def modality_vectors(self, fields: torch.Tensor) -> list[torch.Tensor]:
        """One [..., k] vector per modality of items given by their fields [..., F]."""
        per_field = self.features(fields)  # [..., F, k]
        out = []
        for name in self.modalities:
            if name == "behaviour":
                out.append(per_field[..., 0, :])
            elif name == "attributes":
                out.append(per_field[..., 1:, :].sum(-2))
            else:
                out.append(self.text_proj(self.text_vectors[fields[..., 0]]))
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hist_ids = batch["hist_fields"]
        mask = (hist_ids > 0).any(-1)
        interests, distributions = [], []
        cand_vectors = self.modality_vectors(batch["cand_fields"])
        for h, c in zip(self.modality_vectors(hist_ids), cand_vectors, strict=True):
            interest, a = masked_target_attention(h, c, mask)
            distributions.append(a)
            interests.append(interest)
        joint = torch.cat(interests, -1)
        mu, logvar = self.encoder(joint).chunk(2, -1)
        logvar = logvar.clamp(-8.0, 4.0)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        self.aux = {"joint": joint, "recon": self.decoder(z), "mu": mu, "logvar": logvar,
                    "distributions": distributions, "mask": mask}
        parts = [z, joint, torch.cat(cand_vectors, -1), self.user_features.of_batch(batch).flatten(1)]
        return self.head(torch.cat(parts, -1)).squeeze(-1)

    def guidance_loss(self, distributions: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """Σ_m KL(ā ‖ a_m) per sample with history, ā the modalities' mean distribution (stop-gradient)."""
        consensus = torch.stack(distributions).mean(0).detach()
        kl = sum((consensus * (consensus.clamp_min(1e-9).log() - a.clamp_min(1e-9).log()) * mask).sum(-1)
                 for a in distributions)
        has = mask.any(-1).float()
        return (kl * has).sum() / has.sum().clamp_min(1.0)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(self(batch), batch["label"])
        aux = self.aux
        if self.recon_weight:
            loss = loss + self.recon_weight * (aux["recon"] - aux["joint"].detach()).pow(2).sum(-1).mean()
        if self.kl_weight:
            kl = 0.5 * (aux["logvar"].exp() + aux["mu"].pow(2) - 1.0 - aux["logvar"]).sum(-1)
            loss = loss + self.kl_weight * kl.mean()
        if self.guide_weight and len(self.modalities) > 1:
            loss = loss + self.guide_weight * self.guidance_loss(aux["distributions"], aux["mask"])
        return loss
