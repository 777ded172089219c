"""TIGER's RQ-VAE tokenizer (Rajput et al. 2023): an MLP encoder over the concatenated item features,
residual quantization (3 levels × 256 codes, dim 32, k-means init, dead-code restart), an MLP decoder.

loss = ‖x − Dec(z + sg(Σ_l c_l − z))‖² + Σ_l (‖sg(r_l) − c_l‖² + β‖r_l − sg(c_l)‖²), β = 0.25,
where r_0 = z = Enc(x) and r_{l+1} = r_l − c_l (squared norms summed over dims, averaged over items).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from recsys_core.layers import mlp
from recsys_core.layers.quantize import ResidualQuantizer, SemanticIdTokenizer, reconstruction_loss
from recsys_core.registry import register_model


@register_model("rqvae", tasks="semantic_id")
class RQVAE(SemanticIdTokenizer):
    def __init__(self, modality_dims: dict[str, int], hidden: Sequence[int] = (256, 128, 64), latent_dim: int = 32,
                 levels: int = 3, codebook_size: int = 256, beta: float = 0.25, restart_every: int = 20,
                 dropout: float = 0.0):
        super().__init__(modality_dims)
        self.encoder = mlp(self.input_dim, list(hidden), latent_dim, dropout=dropout)
        self.decoder = mlp(latent_dim, list(hidden)[::-1], self.input_dim, dropout=dropout)
        self.quantizer = ResidualQuantizer(levels, codebook_size, latent_dim, "l2", beta, restart_every=restart_every)

    @property
    def codebook_sizes(self) -> list[int]:
        return self.quantizer.sizes

    def loss(self, batch: dict[str, torch.Tensor]):
        x = self.features(batch)
        q = self.quantizer(self.encoder(x))
        recon = reconstruction_loss(self.decoder(q.quantized), x)
        return recon + q.loss, {"recon": float(recon.detach()), "rq": float(q.loss.detach())}

    @torch.no_grad()
    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.quantizer.encode(self.encoder(self.features(batch)))

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.decoder(self.quantizer.codewords(self.encode(batch)))
