"""ADA-SID / MMQ-v2 (arXiv 2510.25622): parallel content and behaviour semantic IDs with
richness-adaptive behaviour–content alignment and a dynamic behavioural router.

The paper's equations were not readable; this is our reproduction form [proposal]:
- content branch h_c = Enc_c([content modalities]) (text / attributes), behaviour branch
  h_b = Enc_b(x_behaviour); each has its own residual quantizer (content codes, behavioural codes);
- richness ρ_i = log(1+n_i)/max_j log(1+n_j) (from training-prefix counts, given per item by the task),
  alignment weight w_i = σ(a(ρ_i − b)): popular items align behaviour with content, long-tail items
  (few, noisy interactions) are shielded;
- router g_i = σ(MLP(h_b)) ∈ [0,1]^{L_b} scales each behavioural codeword: b_i = Σ_l g_{i,l} c^b_{i,l};
- the decoder reconstructs every modality from [content quantized ; routed behaviour quantized].

loss = ‖x − Dec([z_q^c ; b])‖² + L_VQ(content) + L_VQ(behaviour)
       + align_weight · mean_i w_i · InfoNCE(h_b_i, h_c_i) + router_weight · mean_i ‖g_i‖_1.
Codes = content codes followed by behavioural codes (parallel SIDs).

Downstream, the router's weights leave the tokenizer: `code_weights` gives every item's weight per code
column (1 for content codes, g for behavioural ones); the semantic_id task saves them as `router.npy` and
the generative retriever scales each behavioural token's embedding by them (TIGER, `router_scales`).

Ablations: `richness_adaptive=False` aligns every item with weight 1 (w ≡ 1); `use_router=False` drops the
router (g ≡ 1, no sparsity term, no router.npy).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from recsys_core.layers import mlp
from recsys_core.layers.quantize import ResidualQuantizer, SemanticIdTokenizer, info_nce, reconstruction_loss
from recsys_core.registry import register_model


@register_model("ada_sid", tasks="semantic_id")
class AdaSID(SemanticIdTokenizer):
    def __init__(self, modality_dims: dict[str, int], behaviour_modality: str = "behaviour",
                 hidden: Sequence[int] = (128,), decoder_hidden: Sequence[int] = (128,), latent_dim: int = 32,
                 content_levels: int = 2, behaviour_levels: int = 2, codebook_size: int = 256,
                 beta: float = 0.25, align_weight: float = 0.5, router_weight: float = 0.01,
                 richness_slope: float = 10.0, richness_mid: float = 0.5, nce_temperature: float = 0.1,
                 restart_every: int = 20, richness_adaptive: bool = True, use_router: bool = True):
        super().__init__(modality_dims)
        if behaviour_modality not in self.modality_dims:
            raise ValueError(f"ADA-SID needs the behaviour modality {behaviour_modality!r}; "
                             f"got modalities {self.modalities}")
        self.behaviour_modality = behaviour_modality
        self.content_modalities = [m for m in self.modalities if m != behaviour_modality]
        if not self.content_modalities:
            raise ValueError("ADA-SID needs at least one content modality (text or attributes) besides behaviour")
        content_dim = sum(self.modality_dims[m] for m in self.content_modalities)
        self.content_encoder = mlp(content_dim, list(hidden), latent_dim)
        self.behaviour_encoder = mlp(self.modality_dims[behaviour_modality], list(hidden), latent_dim)
        self.content_quantizer = ResidualQuantizer(content_levels, codebook_size, latent_dim, "l2", beta,
                                                   restart_every=restart_every)
        self.behaviour_quantizer = ResidualQuantizer(behaviour_levels, codebook_size, latent_dim, "l2", beta,
                                                     restart_every=restart_every)
        self.router = mlp(latent_dim, [latent_dim], behaviour_levels)
        self.decoder = mlp(2 * latent_dim, list(decoder_hidden), self.input_dim)
        self.align_weight, self.router_weight = align_weight, router_weight
        self.richness_slope, self.richness_mid = richness_slope, richness_mid
        self.nce_temperature = nce_temperature
        self.richness_adaptive, self.use_router = bool(richness_adaptive), bool(use_router)

    @property
    def codebook_sizes(self) -> list[int]:
        return self.content_quantizer.sizes + self.behaviour_quantizer.sizes

    def richness_weight(self, richness: torch.Tensor) -> torch.Tensor:
        """w = σ(a(ρ − b)): how strongly an item's behaviour is aligned with its content (1 without
        richness adaptation)."""
        if not self.richness_adaptive:
            return torch.ones_like(richness, dtype=torch.float)
        return torch.sigmoid(self.richness_slope * (richness.float() - self.richness_mid))

    def _branches(self, batch: dict[str, torch.Tensor]):
        h_c = self.content_encoder(self.features(batch, self.content_modalities))
        h_b = self.behaviour_encoder(self.features(batch, [self.behaviour_modality]))
        return h_c, h_b

    def _gates(self, h_b: torch.Tensor) -> torch.Tensor:
        if not self.use_router:
            return h_b.new_ones(h_b.shape[0], len(self.behaviour_quantizer.codebooks))
        return torch.sigmoid(self.router(h_b))

    def router_weights(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """g [B, L_b]: the importance of each behavioural code of each item."""
        return self._gates(self._branches(batch)[1])

    @torch.no_grad()
    def code_weights(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """[B, L_c + L_b] weight of every code column (content 1, behaviour g); None without a router."""
        if not self.use_router:
            return None
        gates = self.router_weights(batch)
        return torch.cat([gates.new_ones(len(gates), len(self.content_quantizer.codebooks)), gates], 1)

    def loss(self, batch: dict[str, torch.Tensor]):
        if "richness" not in batch:
            raise ValueError("ADA-SID batches need a per-item 'richness' (the semantic_id task provides it)")
        x = self.features(batch)
        h_c, h_b = self._branches(batch)
        qc, qb = self.content_quantizer(h_c), self.behaviour_quantizer(h_b)
        gates = self._gates(h_b)
        routed = (gates.unsqueeze(-1) * qb.levels).sum(1)
        recon = reconstruction_loss(self.decoder(torch.cat([qc.quantized, routed], -1)), x)
        same = batch["item"][:, None] == batch["item"][None, :] if "item" in batch else None
        align = (self.richness_weight(batch["richness"]) * info_nce(h_b, h_c, self.nce_temperature, same)).mean()
        sparsity = gates.sum(-1).mean()
        total = recon + qc.loss + qb.loss + self.align_weight * align
        if self.use_router:
            total = total + self.router_weight * sparsity
        return total, {"recon": float(recon.detach()), "vq": float((qc.loss + qb.loss).detach()),
                       "align": float(align.detach()), "router_l1": float(sparsity.detach())}

    @torch.no_grad()
    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h_c, h_b = self._branches(batch)
        return torch.cat([self.content_quantizer.encode(h_c), self.behaviour_quantizer.encode(h_b)], 1)

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h_c, h_b = self._branches(batch)
        content_codes = self.content_quantizer.encode(h_c)
        behaviour_codes = self.behaviour_quantizer.encode(h_b)
        levels = torch.stack([cb.weight[behaviour_codes[:, i]]
                              for i, cb in enumerate(self.behaviour_quantizer.codebooks)], 1)
        routed = (self._gates(h_b).unsqueeze(-1) * levels).sum(1)
        return self.decoder(torch.cat([self.content_quantizer.codewords(content_codes), routed], -1))
