"""SGCTR: a symmetric masked generative paradigm for CTR prediction (arXiv 2511.14403).

The paper's equations are not public; every choice below is ours and marked [proposal].

- **Backbone** [proposal]: `SampleFieldEncoder` (layers/field_transformer.py): [CLS], one token per sample
  field (user fields, candidate item fields), the history as context tokens; the click logit is an MLP on
  [CLS].
- **Masked generative training**: each step masks each sample field with probability `mask_rate`
  (its vector becomes a learned per-field [MASK] vector) and predicts the masked ids with the field's tied
  embedding table (cross-entropy, weight `generative_weight`), next to the CTR loss: the model learns the
  dependencies between a sample's features.
- **Inference-time refinement (the symmetry)** [proposal]: `refine_steps` rounds, each encoding the current
  field vectors, reading each field's predicted distribution p_f given the whole sample, and moving the
  field's vector towards the expected embedding under p_f in proportion to how implausible the observed id
  is: e_f <- e_f + β·(1 − p_f(x_f))·(E_{p_f}[e] − e_f), β = sigmoid(learned scalar), started at 0.5.
  The distributions p_f are the generative head's (trained by the masked loss); the CTR loss trains the
  tables and β through the refined vectors but not p_f (no gradient through the refinement's encoder pass).
  A feature the sample's context makes unlikely (a noisy one) is re-defined from the rest; a plausible one
  is left almost as is. The CTR loss is computed on the refined sample in training too (the same path as
  at inference), so training and inference are symmetric. `refine_steps=0` at inference is the ablation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.layers import mlp
from recsys_core.layers.field_transformer import SampleFieldEncoder
from recsys_core.registry import register_model


@register_model("sgctr", tasks="ctr")
class SGCTR(nn.Module):
    def __init__(self, field_vocab_sizes: Sequence[int], max_len: int, dense_dim: int = 0,
                 user_field_vocab_sizes: Sequence[int] = (), embed_dim: int = 16, d_model: int = 64,
                 layers: int = 2, heads: int = 4, dropout: float = 0.0, mlp_hidden: Sequence[int] = (128,),
                 mask_rate: float = 0.2, generative_weight: float = 0.5, refine_steps: int = 1,
                 train_refine: bool = True):
        super().__init__()
        if max_len <= 0:
            raise ValueError("SGCTR reads user histories; this data has none (data.kind ctr_sample)")
        if dense_dim:
            raise ValueError("SGCTR models categorical fields only; this data has dense features")
        if not 0.0 <= mask_rate < 1.0:
            raise ValueError(f"mask_rate must be in [0, 1), got {mask_rate}")
        if refine_steps < 0:
            raise ValueError(f"refine_steps must be >= 0, got {refine_steps}")
        self.encoder = SampleFieldEncoder(field_vocab_sizes, user_field_vocab_sizes, embed_dim, d_model, layers,
                                          heads, dropout)
        self.mask_vectors = nn.Parameter(torch.randn(self.encoder.n_sample_fields, embed_dim) * 0.05)
        self.refine_gate = nn.Parameter(torch.zeros(()))  # β = sigmoid(0) = 0.5 at the start
        self.head = mlp(d_model, mlp_hidden, 1, activation=nn.GELU, dropout=dropout)
        self.mask_rate, self.generative_weight = mask_rate, generative_weight
        self.refine_steps, self.train_refine = refine_steps, train_refine

    def refine(self, vectors: torch.Tensor, ids: torch.Tensor, batch: dict[str, torch.Tensor], steps: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(refined field vectors [B, S, k], observed-id probabilities [B, S] of the last round)."""
        enc = self.encoder
        plausibility = vectors.new_ones(ids.shape)
        beta = torch.sigmoid(self.refine_gate)
        for _ in range(steps):
            # the distributions come from the generative head, which the masked loss trains; the CTR loss
            # reaches the refined vectors (tables, β) but not the distributions: half the cost of a step
            with torch.no_grad():
                states = enc.encode(vectors, batch)
            new = []
            for field in range(enc.n_sample_fields):
                with torch.no_grad():
                    probs = F.softmax(enc.field_logits(states[:, 1 + field], field), -1)  # [B, V]
                expected = probs @ enc.table(field).weight  # [B, k]
                p_obs = probs.gather(1, ids[:, field:field + 1]).squeeze(1)
                p_obs = torch.where(ids[:, field] > 0, p_obs, torch.zeros_like(p_obs))  # unknown id: fully re-defined
                plausibility[:, field] = p_obs.detach()
                step = beta * (1 - p_obs).unsqueeze(-1)
                new.append(vectors[:, field] + step * (expected - vectors[:, field]))
            vectors = torch.stack(new, 1)
        return vectors, plausibility

    def forward(self, batch: dict[str, torch.Tensor], refine_steps: int | None = None) -> torch.Tensor:
        """Click logits [B] after `refine_steps` rounds of feature refinement (default: the config's)."""
        enc = self.encoder
        ids = enc.sample_ids(batch)
        vectors, _ = self.refine(enc.field_vectors(ids), ids, batch,
                                 self.refine_steps if refine_steps is None else refine_steps)
        return self.head(enc.encode(vectors, batch)[:, 0]).squeeze(-1)

    def inference_variants(self) -> dict[str, dict]:
        """The ablation evaluated with the trained weights: no refinement at inference."""
        return {"no_refine": {"refine_steps": 0}} if self.refine_steps else {}

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        enc = self.encoder
        ids = enc.sample_ids(batch)
        vectors = enc.field_vectors(ids)
        logs: dict[str, float] = {}
        loss = vectors.new_zeros(())
        if self.generative_weight:
            masked = torch.rand(ids.shape, device=ids.device) < self.mask_rate
            masked_vectors = torch.where(masked.unsqueeze(-1), self.mask_vectors.expand_as(vectors), vectors)
            gen = enc.generative_loss(enc.encode(masked_vectors, batch), ids, masked)
            loss = loss + self.generative_weight * gen
            logs["generative_loss"] = float(gen.detach())
        steps = self.refine_steps if self.train_refine else 0
        refined, _ = self.refine(vectors, ids, batch, steps)
        ctr = F.binary_cross_entropy_with_logits(self.head(enc.encode(refined, batch)[:, 0]).squeeze(-1),
                                                 batch["label"])
        logs["ctr_loss"] = float(ctr.detach())
        return loss + ctr, logs
