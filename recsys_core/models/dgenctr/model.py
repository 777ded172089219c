"""DGenCTR: discrete-diffusion generative pre-training of CTR samples, then CTR-targeted supervised
fine-tuning (arXiv 2508.14500). The paper's equations are not public; choices are marked [proposal].

- **Sample** [proposal]: the `SampleFieldEncoder` view (layers/field_transformer.py): the sample fields
  (user fields, candidate item fields) are the discrete variables generated; the history is context.
- **Pre-training (`objective: diffusion`, task `ctr_pretrain`)** [proposal: an absorbing-state (masked)
  discrete diffusion in the MDLM form]: per sample a time t ~ U(t_min, 1); each sample field is absorbed
  into its [MASK] vector with probability t (at least one per sample); the bidirectional encoder predicts
  the absorbed fields' ids (tied tables); the loss is the cross-entropy weighted by 1/t (the ELBO of the
  masked diffusion process, up to a constant). Labels are not used: the model learns the joint
  distribution of the samples' features, including the label-scarce feature combinations.
- **Fine-tuning (`objective: ctr`)**: the same encoder, every field visible, an MLP on [CLS] trained with
  BCE; `init_from` loads the pre-trained run's encoder (every `encoder.*` weight); without it the same
  architecture trains from scratch (the ablation of the pre-training).
- **Validation of the pre-training**: the diffusion loss on the validation samples with fixed t values and
  a fixed mask draw, so epochs compare on the same corruption.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.layers import mlp
from recsys_core.layers.field_transformer import SampleFieldEncoder
from recsys_core.registry import register_model

OBJECTIVES = ("diffusion", "ctr")


@register_model("dgenctr", tasks=("ctr", "ctr_pretrain"))
class DGenCTR(nn.Module):
    def __init__(self, field_vocab_sizes: Sequence[int], max_len: int, dense_dim: int = 0,
                 user_field_vocab_sizes: Sequence[int] = (), embed_dim: int = 16, d_model: int = 64,
                 layers: int = 2, heads: int = 4, dropout: float = 0.0, mlp_hidden: Sequence[int] = (128,),
                 objective: str = "ctr", t_min: float = 0.05, init_from: str | None = None):
        super().__init__()
        if max_len <= 0:
            raise ValueError("DGenCTR reads user histories; this data has none (data.kind ctr_sample)")
        if dense_dim:
            raise ValueError("DGenCTR models categorical fields only; this data has dense features")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
        if not 0.0 < t_min < 1.0:
            raise ValueError(f"t_min must be in (0, 1), got {t_min}")
        self.encoder = SampleFieldEncoder(field_vocab_sizes, user_field_vocab_sizes, embed_dim, d_model, layers,
                                          heads, dropout)
        self.mask_vectors = nn.Parameter(torch.randn(self.encoder.n_sample_fields, embed_dim) * 0.05)
        self.head = mlp(d_model, mlp_hidden, 1, activation=nn.GELU, dropout=dropout)
        self.objective, self.t_min = objective, t_min
        self.init_report = self._load_pretrained(init_from) if init_from else {"init_from": None}

    def _load_pretrained(self, run: str) -> dict:
        weights = Path(run) if str(run).endswith(".pt") else Path(run) / "best.pt"
        if not weights.exists():
            raise FileNotFoundError(f"{weights} not found: init_from must be a finished dgenctr pre-training run")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        own = self.state_dict()
        names = [k for k in state if (k.startswith("encoder.") or k == "mask_vectors") and k in own]
        if not any(k.startswith("encoder.") for k in names):
            raise ValueError(f"{weights} holds no DGenCTR encoder: is it a dgenctr pre-training run?")
        for k in names:
            if state[k].shape != own[k].shape:
                raise ValueError(f"cannot load {k}: shape {tuple(state[k].shape)} != {tuple(own[k].shape)} "
                                 "(use the pre-training run's data and model sizes)")
        self.load_state_dict({k: state[k] for k in names}, strict=False)
        return {"init_from": str(run), "loaded": len(names)}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Click logits [B] (every field visible)."""
        enc = self.encoder
        return self.head(enc.encode(enc.field_vectors(enc.sample_ids(batch)), batch)[:, 0]).squeeze(-1)

    def pretrain_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        enc = self.encoder
        ids = enc.sample_ids(batch)
        vectors = enc.field_vectors(ids)
        device = ids.device
        t = self.t_min + (1 - self.t_min) * torch.rand(len(ids), generator=generator, device=device)
        masked = torch.rand(ids.shape, generator=generator, device=device) < t[:, None]
        none = ~masked.any(1)  # every sample absorbs at least one field
        if none.any():
            pick = torch.randint(0, ids.shape[1], (int(none.sum()),), generator=generator, device=device)
            masked[none.nonzero().squeeze(1), pick] = True
        vectors = torch.where(masked.unsqueeze(-1), self.mask_vectors.expand_as(vectors), vectors)
        return enc.generative_loss(enc.encode(vectors, batch), ids, masked, weights=1.0 / t)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.objective == "diffusion":
            return self.pretrain_loss(batch)
        return F.binary_cross_entropy_with_logits(self(batch), batch["label"])
