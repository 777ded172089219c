"""REG4Rec's MPQ (arXiv 2508.15308): MoE-based parallel quantization. M auto-encoder experts
e_r = E_r(v), each with its own codebook; c_r = argmin_j ‖e_r − z_{rj}‖²; a gate combines the chosen
codewords q = Σ_r h_r(v) z_{r,c_r} (h = softmax(W v) [proposal: the gate form is unknown]) and one
decoder reconstructs v. Each item gets M unordered tokens, stored in the fixed expert order.

loss = ‖v − Dec(q)‖² + Σ_r (codebook + β · commitment)_r + orth_weight · Σ_{r<s} |cos(e_r, e_s)|
(the VQ terms are our addition [proposal]; the paper names reconstruction + expert orthogonality).
"""

from __future__ import annotations

from collections.abc import Sequence

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


@register_model("mpq", tasks="semantic_id")
class MPQ(SemanticIdTokenizer):
    def __init__(self, modality_dims: dict[str, int], experts: int = 4, hidden: Sequence[int] = (128,),
                 decoder_hidden: Sequence[int] = (128,), latent_dim: int = 32, codebook_size: int = 256,
                 beta: float = 0.25, orth_weight: float = 0.1, restart_every: int = 20):
        super().__init__(modality_dims)
        if experts < 1:
            raise ValueError(f"MPQ needs at least one expert, got {experts}")
        self.experts = nn.ModuleList(mlp(self.input_dim, list(hidden), latent_dim) for _ in range(experts))
        self.codebooks = nn.ModuleList(Codebook(codebook_size, latent_dim, "l2", beta, restart_every=restart_every)
                                       for _ in range(experts))
        self.gate = nn.Linear(self.input_dim, experts)
        self.decoder = mlp(latent_dim, list(decoder_hidden), self.input_dim)
        self.orth_weight = orth_weight

    @property
    def codebook_sizes(self) -> list[int]:
        return [cb.size for cb in self.codebooks]

    def expert_outputs(self, x: torch.Tensor) -> torch.Tensor:
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
        return recon + vq + self.orth_weight * orth, {"recon": float(recon.detach()), "vq": float(vq.detach()),
                                                      "orth": float(orth.detach())}

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
