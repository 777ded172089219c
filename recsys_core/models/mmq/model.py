"""MMQ (arXiv 2508.15281): a shared–specific mixture of experts, residual quantization with
cosine-similarity assignment, multimodal reconstruction, then behaviour-aware fine-tuning.

Stage 1 (content only: text and attributes, no behaviour), per item with modalities x_m and x = [x_1; …; x_M]:
- shared experts z_{s,i} = E_{s,i}(x), modality-specific experts z_{m,j} = E_{m,j}(x_m);
- gated fusion z = Σ_e g_e z_e with g = softmax(W x) over all experts [proposal: the gate form is unknown];
- residual quantization of z, each level taking the codeword of highest cosine similarity;
- loss = ‖x − Dec(z_q)‖² + aux_weight · Σ_m ‖x_m − Dec_m(mean_j z_{m,j})‖²
         + orth_weight · Σ_{i,j,m} |cos(z_{s,i}, z_{m,j})| + Σ_l (codebook + β · commitment).
  The per-modality auxiliary reconstruction reads the modality's specific experts (unquantized) so
  they must carry that modality's information [proposal]; L_orth is our reproduction form [proposal]: Σ|cos| between expert outputs.

Stage 2 (behaviour-aware fine-tuning): the tokenizer is trained jointly with the downstream generative
retriever (a TIGER decoder, `retriever`), whose next-token loss reaches the codes through soft indexing.
Each level's code distribution p_l = softmax(cos(r_l, c)/τ) enters as a straight-through one-hot
(forward = the hard code, gradient through p_l); batches are windows of the users' training sequences,
the retriever reads each item's code distributions (Σ_k p_lk E_lk, its own token embeddings) plus a projection
of the item's soft codewords ẑ_l = Σ_k p_lk c_lk (the tokenizer's codebook vectors, as in the paper's sketch)
and scores each next item's codes (next-SID cross-entropy), so gradients move the history items' codewords,
assignments and encoders towards what predicts the next item.
The targets are the items' hard codes [proposal]: letting the loss move the targets' distributions too
(`target_gradient=True`) rewards giving every item the same codes, and on MovieLens-1M it collapsed the
codebook (48 distinct tuples for 3,883 movies, 99.9% collisions); `balance_weight` [proposal] then keeps each
level's mean code distribution over the batch's items even. The multimodal stage-1 terms stay in the loss:
loss = stage-1 terms (over the window's items) + behaviour_weight · L_next-token.
`retriever_warmup_steps` [proposal]: the retriever starts from scratch, so for its first steps it learns the
stage-1 codes with the tokenizer's distributions detached (no gradient from an untrained decoder).
The retriever exists only to shape the codes; the TIGER evaluated downstream is trained afresh on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.layers import mlp
from recsys_core.layers.quantize import (
    ResidualQuantizer,
    SemanticIdTokenizer,
    cross_orthogonality,
    reconstruction_loss,
)
from recsys_core.registry import register_model


@register_model("mmq", tasks="semantic_id")
class MMQ(SemanticIdTokenizer):
    def __init__(self, modality_dims: dict[str, int], shared_experts: int = 2, specific_experts: int = 1,
                 expert_hidden: Sequence[int] = (128,), decoder_hidden: Sequence[int] = (128,),
                 latent_dim: int = 32, levels: int = 3, codebook_size: int = 256, beta: float = 0.25,
                 orth_weight: float = 0.1, aux_weight: float = 0.5, soft_tau: float = 0.1,
                 behaviour_weight: float = 1.0, restart_every: int = 20, retriever: dict[str, Any] | None = None,
                 retriever_warmup_steps: int = 0, target_gradient: bool = False, balance_weight: float = 0.0):
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
        self.soft_tau, self.behaviour_weight = soft_tau, behaviour_weight
        self.retriever = None
        if retriever is not None:
            from recsys_core.models.tiger.model import TIGER

            self.retriever = TIGER(level_sizes=self.quantizer.sizes, **dict(retriever))
            self.codeword_proj = nn.Linear(latent_dim, self.retriever.token_emb.embedding_dim, bias=False)
        self.retriever_warmup_steps = int(retriever_warmup_steps)
        self.target_gradient, self.balance_weight = bool(target_gradient), float(balance_weight)
        self.behaviour_steps = 0

    @property
    def supports_behaviour_finetune(self) -> bool:
        return self.retriever is not None

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
        if "window" not in batch:
            total, logs, _ = self._stage_one_terms(batch)
            return total, logs
        if self.retriever is None:
            raise ValueError("behaviour-aware batches need MMQ's retriever (model_params.retriever)")
        # Stage 2: the window's distinct items go through one soft-indexed pass, then the retriever reads
        # every window as code distributions.
        total, logs, q = self._stage_one_terms(batch, soft_tau=self.soft_tau)
        probs = q.probs  # [U, L, K]
        straight_through = F.one_hot(q.codes, probs.shape[-1]).to(probs) + probs - probs.detach()
        warming_up = self.behaviour_steps < self.retriever_warmup_steps
        self.behaviour_steps += 1
        soft_codewords = q.levels.detach() if warming_up else q.levels
        if warming_up:
            straight_through = straight_through.detach()
        window = batch["window"]
        real = window >= 0
        codewords = self.codeword_proj(soft_codewords)  # [U, L, H]: each level's soft-indexed codeword
        keep = real[..., None, None]
        per_item = straight_through[window.clamp_min(0)] * keep  # [B, T, L, K]
        vectors = codewords[window.clamp_min(0)] * keep  # [B, T, L, H]
        levels = range(per_item.shape[2])
        behaviour = self.retriever.code_prob_loss([per_item[:, :, lv] for lv in levels], real,
                                                  target_gradient=self.target_gradient,
                                                  input_vectors=[vectors[:, :, lv] for lv in levels])
        logs["behaviour"] = float(behaviour.detach())
        total = total + self.behaviour_weight * behaviour
        if self.balance_weight:
            # log K − H(mean code distribution) per level, over the batch's distinct items: 0 when usage is even
            mean = probs.mean(0)
            balance = (torch.log(torch.tensor(float(probs.shape[-1]))) + (mean * torch.log(mean + 1e-10)).sum(-1)).sum()
            logs["balance"] = float(balance.detach())
            total = total + self.balance_weight * balance
        return total, logs

    @torch.no_grad()
    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.quantizer.encode(self.experts(batch)[1])

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.decoder(self.quantizer.codewords(self.encode(batch)))
