"""MMQ (arXiv 2508.15281): a shared–specific mixture of experts, residual quantization with
cosine-similarity assignment, multimodal reconstruction, then behaviour-aware fine-tuning.

Stage 1, per item with modalities x_m and x = [x_1; …; x_M]:
- shared experts z_{s,i} = E_{s,i}(x), modality-specific experts z_{m,j} = E_{m,j}(x_m);
- gated fusion z = Σ_e g_e z_e with g = softmax(W x) over all experts [proposal: the gate form is unknown];
- residual quantization of z, each level taking the codeword of highest cosine similarity;
- loss = ‖x − Dec(z_q)‖² + aux_weight · Σ_m ‖x_m − Dec_m(mean_j z_{m,j})‖²
         + orth_weight · Σ_{i,j,m} |cos(z_{s,i}, z_{m,j})| + Σ_l (codebook + β · commitment).
  The per-modality auxiliary reconstruction reads the modality's specific experts (unquantized) so
  they must carry that modality's information [proposal]; L_orth is our reproduction form [proposal]: Σ|cos| between expert outputs.

Stage 2 (behaviour-aware fine-tuning, our reading): the paper trains the tokenizer jointly with the
downstream recommender through soft indexing p = softmax(cos(r, c)/τ). Here the downstream signal is
next-item co-occurrence: batches are (item, next item) pairs from the training prefixes, every level
uses soft indexing (forward = hard codeword, gradient through the soft mixture), and
loss = stage-1 terms on both items + behaviour_weight · InfoNCE(ẑ_a, ẑ_b) over the soft-quantized
vectors ẑ = Σ_l Σ_k p_{lk} c_{lk}, with in-batch negatives.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from recsys_core.layers import mlp
from recsys_core.layers.quantize import (
    ResidualQuantizer,
    SemanticIdTokenizer,
    cross_orthogonality,
    info_nce,
    reconstruction_loss,
)
from recsys_core.registry import register_model


@register_model("mmq", tasks="semantic_id")
class MMQ(SemanticIdTokenizer):
    supports_behaviour_finetune = True

    def __init__(self, modality_dims: dict[str, int], shared_experts: int = 2, specific_experts: int = 1,
                 expert_hidden: Sequence[int] = (128,), decoder_hidden: Sequence[int] = (128,),
                 latent_dim: int = 32, levels: int = 3, codebook_size: int = 256, beta: float = 0.25,
                 orth_weight: float = 0.1, aux_weight: float = 0.5, soft_tau: float = 0.1,
                 behaviour_weight: float = 0.5, nce_temperature: float = 0.1, restart_every: int = 20):
        super().__init__(modality_dims)
        if shared_experts < 1 or specific_experts < 1:
            raise ValueError("MMQ needs at least one shared and one specific expert per modality")
        self.shared = nn.ModuleList(mlp(self.input_dim, list(expert_hidden), latent_dim)
                                    for _ in range(shared_experts))
        self.specific = nn.ModuleDict({m: nn.ModuleList(mlp(d, list(expert_hidden), latent_dim)
                                                        for _ in range(specific_experts))
                                       for m, d in self.modality_dims.items()})
        self.gate = nn.Linear(self.input_dim, shared_experts + specific_experts * len(self.modalities))
        self.quantizer = ResidualQuantizer(levels, codebook_size, latent_dim, "cosine", beta,
                                           restart_every=restart_every)
        self.decoder = mlp(latent_dim, list(decoder_hidden), self.input_dim)
        self.aux_decoders = nn.ModuleDict({m: mlp(latent_dim, list(decoder_hidden), d)
                                           for m, d in self.modality_dims.items()})
        self.orth_weight, self.aux_weight = orth_weight, aux_weight
        self.soft_tau, self.behaviour_weight, self.nce_temperature = soft_tau, behaviour_weight, nce_temperature

    @property
    def codebook_sizes(self) -> list[int]:
        return self.quantizer.sizes

    def experts(self, batch: dict[str, torch.Tensor], prefix: str = ""):
        """(x, fused z, shared outputs [B, S, D], {modality: specific outputs [B, P, D]})."""
        x = self.features(batch, prefix=prefix)
        shared = torch.stack([e(x) for e in self.shared], 1)
        specific = {m: torch.stack([e(batch[prefix + m].float()) for e in self.specific[m]], 1)
                    for m in self.modalities}
        everyone = torch.cat([shared, *specific.values()], 1)
        weights = torch.softmax(self.gate(x), -1)
        return x, (weights.unsqueeze(-1) * everyone).sum(1), shared, specific

    def _stage_one_terms(self, batch, prefix: str = "", soft_tau: float | None = None):
        x, z, shared, specific = self.experts(batch, prefix)
        q = self.quantizer(z, soft_tau)
        recon = reconstruction_loss(self.decoder(q.quantized), x)
        aux = sum(reconstruction_loss(self.aux_decoders[m](specific[m].mean(1)), batch[prefix + m].float())
                  for m in self.modalities)
        orth = cross_orthogonality(shared, torch.cat(list(specific.values()), 1))
        total = recon + self.aux_weight * aux + self.orth_weight * orth + q.loss
        logs = {"recon": float(recon.detach()), "aux": float(aux.detach()), "orth": float(orth.detach()),
                "rq": float(q.loss.detach())}
        return total, logs, q

    def loss(self, batch: dict[str, torch.Tensor]):
        if "next_item" not in batch:
            total, logs, _ = self._stage_one_terms(batch)
            return total, logs
        # Behaviour-aware fine-tuning: anchors and their next items go through one soft-indexed pass.
        both = {m: torch.cat([batch[m], batch["next:" + m]]) for m in self.modalities}
        total, logs, q = self._stage_one_terms(both, soft_tau=self.soft_tau)
        n = len(batch["item"])
        same = batch["next_item"][:, None] == batch["next_item"][None, :]
        behaviour = info_nce(q.soft[:n], q.soft[n:], self.nce_temperature, same).mean()
        logs["behaviour"] = float(behaviour.detach())
        return total + self.behaviour_weight * behaviour, logs

    @torch.no_grad()
    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.quantizer.encode(self.experts(batch)[1])

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.decoder(self.quantizer.codewords(self.encode(batch)))
