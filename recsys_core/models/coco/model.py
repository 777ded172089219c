"""CoCo (arXiv 2510.14257): an LLM's contextual knowledge, chosen per user, fused into a ranker.

The paper's equations are not public; every form below is ours [proposal] (METHODS.md §5):

- **Knowledge.** The LLM's cached states (`knowledge.py`): per user, one vector per context segment
  (profile, each recent rating); per movie, one vector. A fixed PCA whitening (fit on the cache at
  build time) maps the 576-d states to `proj_dim`; the ranker learns everything after it.
- **Collaboration enhancement** (`mode: coco`). A codebook of `prompt_codebook_size` learnable soft
  prompts (`prompt_tokens` vectors each). A user's representation u (the backbone's user-field and
  mean history embeddings, through a linear map) is quantised to its nearest prompt, VQ-VAE style:
  k_u = argmin_k ‖u − p_k‖, the prompt passes u's gradient straight through, and
  L_VQ = ‖sg(u) − p_k‖² + β‖u − sg(p_k)‖². The chosen prompt is the query of a cross-attention over
  the user's knowledge segments (keys/values); its pooled output is the user's knowledge vector K_u.
  The movie's state through an MLP is K_i. Both enter the backbone (DIN, DeepFM) as two extra fields.
  The prompt reads cached states; it is not fed through the LLM, which keeps training LLM-free.
  u enters the prompt choice without its gradient (`query_grad: false`) [proposal]: the VQ and InfoNCE
  terms then train the prompt path only, never the ranker's ID embeddings.
- **Contradiction resolution.** InfoNCE between K_u and K_i over the batch's clicked pairs
  (`infonce_weight`); and, in the LoRA stage (`resolution.py`), per-sample gradient masking: the LLM's
  LoRA weights learn only from samples whose loss with knowledge exceeds the loss without it
  (K_u = K_i = 0). The ranker meets "without knowledge" in training through `knowledge_dropout`, so
  that comparison is in-distribution.
- Users known only by a history (the sandbox's simulated shoppers, and any shopper a served tool
  sees): `user_context: history` reads the knowledge of their last `history_segments` items instead
  of a per-user text [proposal]; `auto` picks profile when the knowledge has user texts.
- `mode: fixed` is the KAR-style baseline: one fixed template for everyone (the same cached texts),
  mean of the user's segment states through an MLP, no prompt, no attention. `mode: none` is the
  backbone alone. `prompt_codebook_size: 1` is "without VQ prompts": one learned prompt for all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.layers import info_nce, mlp
from recsys_core.registry import build_model, register_model

MODES = ("coco", "fixed", "none")


def whitening(states: np.ndarray, dim: int, max_rows: int = 50000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], projection [D, dim]) of a PCA whitening fit on rows of `states` [N, D] (all-zero rows skipped)."""
    rows = states[np.abs(states).sum(1) > 0]
    if len(rows) > max_rows:
        rows = rows[np.random.default_rng(seed).choice(len(rows), max_rows, replace=False)]
    mean = rows.mean(0)
    _, s, vt = np.linalg.svd(rows - mean, full_matrices=False)
    dim = min(dim, vt.shape[0])
    scale = s[:dim] / np.sqrt(max(len(rows) - 1, 1))
    return mean.astype(np.float32), (vt[:dim].T / np.maximum(scale, 1e-6)).astype(np.float32)


@register_model("coco", tasks="knowledge_ctr")
class CoCo(nn.Module):
    def __init__(self, field_vocab_sizes: Sequence[int], max_len: int, knowledge: dict[str, np.ndarray] | None = None,
                 user_field_vocab_sizes: Sequence[int] = (), dense_dim: int = 0, backbone: str = "din",
                 backbone_params: dict[str, Any] | None = None, mode: str = "coco", prompt_codebook_size: int = 8,
                 prompt_tokens: int = 2, proj_dim: int = 64, attention_dim: int = 32, commitment: float = 0.25,
                 vq_weight: float = 1.0, infonce_weight: float = 0.1, infonce_temperature: float = 0.1,
                 knowledge_dropout: float = 0.1, user_context: str = "auto", history_segments: int = 8,
                 query_grad: bool = False):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"coco mode must be one of {MODES}, got {mode!r}")
        if prompt_codebook_size < 1 or prompt_tokens < 1:
            raise ValueError("prompt_codebook_size and prompt_tokens must be >= 1")
        self.mode = mode
        if backbone not in ("din", "deepfm"):
            raise ValueError(f"coco backbone must be din or deepfm, got {backbone!r}")
        # backbone_params: {din: {...}, deepfm: {...}}, so one config serves both backbones
        params = dict((backbone_params or {}).get(backbone, {}))
        self.backbone = build_model(backbone, params, field_vocab_sizes=list(field_vocab_sizes), max_len=max_len,
                                    dense_dim=dense_dim, user_field_vocab_sizes=list(user_field_vocab_sizes),
                                    n_extra_fields=0 if mode == "none" else 2)
        k = self.backbone.embed_dim
        self.vq_weight, self.commitment = vq_weight, commitment
        self.infonce_weight, self.infonce_temperature = infonce_weight, infonce_temperature
        self.knowledge_dropout = knowledge_dropout
        self.query_grad = query_grad
        self.prompt_codebook_size, self.prompt_tokens = prompt_codebook_size, prompt_tokens
        if mode == "none":
            return  # the backbone alone: no knowledge
        if knowledge is None:
            raise ValueError(f"coco mode {mode!r} needs the LLM knowledge (the knowledge_ctr task passes it)")
        # the LLM states, whitened once; persistent, so a run's checkpoint carries the knowledge it used
        # (the LoRA stage rewrites user_keys)
        mean, proj = whitening(np.concatenate([knowledge["item_states"],
                                               knowledge["user_states"][knowledge["user_mask"]]]), proj_dim)
        self.register_buffer("state_mean", torch.from_numpy(mean))
        self.register_buffer("state_projection", torch.from_numpy(proj))
        self.register_buffer("item_keys", self.project(torch.from_numpy(np.asarray(knowledge["item_states"]))))
        has_users = len(knowledge["user_states"]) > 0
        if user_context == "auto":
            user_context = "profile" if has_users else "history"
        if user_context not in ("profile", "history") or (user_context == "profile" and not has_users):
            raise ValueError(f"user_context must be profile (per-user texts; this knowledge has "
                             f"{len(knowledge['user_states'])}) or history, got {user_context!r}")
        self.user_context, self.history_segments = user_context, history_segments
        if user_context == "profile":
            self.register_buffer("user_keys", self.project(torch.from_numpy(np.asarray(knowledge["user_states"]))))
            self.register_buffer("user_mask", torch.from_numpy(np.asarray(knowledge["user_mask"])))
            # when each segment was written (a rating's time; -1 = the profile): a sample reads only older ones
            times = knowledge.get("user_segment_ts")
            self.register_buffer("user_segment_ts", None if times is None else
                                 torch.from_numpy(np.asarray(times, dtype=np.int64)[:, :self.user_mask.shape[1]]))
        self.item_keys[0] = 0.0
        p = self.state_projection.shape[1]
        self.item_adapter = mlp(p, [64], k)
        if mode == "fixed":
            self.user_adapter = mlp(p, [64], k)
        elif mode == "coco":
            self.user_query = nn.Linear(self._user_repr_dim(), prompt_tokens * attention_dim)
            self.prompts = nn.Parameter(torch.randn(prompt_codebook_size, prompt_tokens * attention_dim) * 0.1)
            self.key = nn.Linear(p, attention_dim)
            self.value = nn.Linear(p, attention_dim)
            self.attention_out = nn.Linear(attention_dim, k)
            self.register_buffer("prompt_usage", torch.zeros(prompt_codebook_size))
            self.register_buffer("prompts_ready", torch.zeros((), dtype=torch.bool))
            self._last_queries: torch.Tensor | None = None

    # -- knowledge -------------------------------------------------------------------------------
    def project(self, states: torch.Tensor) -> torch.Tensor:
        """LLM states [..., D] -> whitened [..., proj_dim] (zero rows stay zero: no knowledge)."""
        out = (states.float() - self.state_mean) @ self.state_projection
        return out * (states.abs().sum(-1, keepdim=True) > 0)

    def _user_repr_dim(self) -> int:
        bb = self.backbone
        return bb.embed_dim * (len(bb.user_features) + len(bb.features))

    def user_representation(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """u [B, R]: the backbone's user-field embeddings and the mean embedding of the history items."""
        bb = self.backbone
        hist = batch["hist_fields"]
        real = (hist > 0).any(-1).float()
        items = bb.features.flat(hist)
        mean_item = (items * real.unsqueeze(-1)).sum(1) / real.sum(1, keepdim=True).clamp(min=1.0)
        return torch.cat([bb.embed_user(batch).flatten(1), mean_item], -1)

    def choose_prompt(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(prompt [B, T·A] with u's straight-through gradient, chosen code [B], VQ loss [B])."""
        if self.prompt_codebook_size == 1:
            prompt = self.prompts[0].expand_as(query)
            return prompt, torch.zeros(len(query), dtype=torch.long, device=query.device), query.new_zeros(len(query))
        if self.training and not bool(self.prompts_ready):
            self._seed_prompts(query.detach(), torch.arange(self.prompt_codebook_size, device=query.device))
            self.prompts_ready.fill_(True)
        if self.training:
            self._last_queries = query.detach()
        distances = torch.cdist(query.detach(), self.prompts)
        code = distances.argmin(1)
        chosen = self.prompts[code]
        vq_loss = (F.mse_loss(chosen, query.detach(), reduction="none").mean(1)
                   + self.commitment * F.mse_loss(query, chosen.detach(), reduction="none").mean(1))
        return query + (chosen - query).detach(), code, vq_loss

    @torch.no_grad()
    def _seed_prompts(self, queries: torch.Tensor, codes: torch.Tensor) -> None:
        """Set prompts `codes` to random users' queries (plus a little noise): the codebook starts where
        users are, and a prompt no user picks any more is moved back among them."""
        rows = torch.randint(0, len(queries), (len(codes),), device=queries.device)
        self.prompts[codes] = queries[rows] + 0.01 * torch.randn_like(queries[rows])

    def after_step(self) -> None:
        """Dead-prompt restart (the Trainer calls this after every optimiser step): a prompt chosen by
        under 1/(10·K) of recent users is re-seeded from the last batch's users [proposal]."""
        if self.mode != "coco" or self.prompt_codebook_size == 1 or self._last_queries is None:
            return
        self._steps = getattr(self, "_steps", 0) + 1
        if self._steps % 50:  # the usage average (decay 0.99) needs ~50 steps to reflect a change
            return
        share = self.prompt_usage / self.prompt_usage.sum().clamp(min=1e-9)
        dead = torch.nonzero(share < 0.1 / self.prompt_codebook_size).flatten()
        if len(dead):
            self._seed_prompts(self._last_queries, dead)
            self.prompt_usage[dead] = self.prompt_usage.sum() / self.prompt_codebook_size

    def knowledge_vectors(self, batch: dict[str, torch.Tensor], user_keys: torch.Tensor | None = None,
                          user_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(K_u [B, k], K_i [B, k], aux losses). `user_keys` [B, S, P] replaces the cached user
        knowledge (the LoRA stage passes freshly computed, differentiable states)."""
        if user_keys is not None:
            keys, mask = user_keys, user_mask
        elif self.user_context == "profile":
            keys, mask = self.user_keys[batch["user"]], self.user_mask[batch["user"]]
        else:  # the knowledge of the last history items (a served shopper is known by a history only)
            hist = batch["hist_fields"][:, -self.history_segments:, 0]
            keys, mask = self.item_keys[hist], hist > 0
        if self.user_context == "profile" and self.user_segment_ts is not None and "ts" in batch:
            # a user's text lists ratings from the whole training period: a training sample must not read
            # its own rating (its label) or later ones. The LLM read the segments causally, so an older
            # segment's state knows nothing of the newer ones.
            mask = mask & (self.user_segment_ts[batch["user"]] < batch["ts"][:, None])
        # the candidate's knowledge follows its real item index (`cand_item`: kept when training hides the
        # item-id field, so the knowledge of cold items is learned); served batches have the field only
        k_item = self.item_adapter(self.item_keys[batch.get("cand_item", batch["cand_fields"][:, 0])])
        aux: dict[str, torch.Tensor] = {}
        if self.mode == "fixed":
            pooled = (keys * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            return self.user_adapter(pooled), k_item, aux
        user = self.user_representation(batch)
        # by default the prompt choice reads a stop-gradient copy of the ranker's embeddings, so the VQ and
        # InfoNCE terms cannot reshape them (with their gradient, CoCo on the simulator's 20k items fell to
        # valid AUC 0.54 against DIN's 0.74); the query's own projection still learns from every loss
        query = self.user_query(user if self.query_grad else user.detach())
        prompt, code, aux["vq"] = self.choose_prompt(query)
        if self.training:
            with torch.no_grad():
                self.prompt_usage.mul_(0.99).add_(0.01 * torch.bincount(code, minlength=self.prompt_codebook_size))
        return self.read_knowledge(prompt, keys, mask), k_item, aux

    def read_knowledge(self, prompt: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """K_u [B, k]: cross-attention with the prompt's tokens as queries over the user's knowledge
        segments `keys` [B, S, P] (`mask` [B, S]); a user without any segment gets zeros."""
        q = prompt.view(len(prompt), self.prompt_tokens, -1)  # [B, T, A]
        scores = q @ self.key(keys).transpose(1, 2) / q.shape[-1] ** 0.5  # [B, T, S]
        has_any = mask.any(1)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores.masked_fill(~has_any[:, None, None], 0.0), -1) * has_any[:, None, None]
        return self.attention_out((weights @ self.value(keys)).mean(1))

    # -- prediction ------------------------------------------------------------------------------
    def logits_and_aux(self, batch: dict[str, torch.Tensor], user_keys: torch.Tensor | None = None,
                       user_mask: torch.Tensor | None = None, drop: torch.Tensor | None = None,
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.mode == "none":
            return self.backbone(batch), {}
        k_user, k_item, aux = self.knowledge_vectors(batch, user_keys, user_mask)
        aux["k_user"], aux["k_item"] = k_user, k_item
        extra = torch.stack([k_user, k_item], 1)
        if drop is not None:
            extra = extra * (~drop).float()[:, None, None]
        return self.backbone(batch, extra), aux

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.logits_and_aux(batch)[0]

    def loss(self, batch: dict[str, torch.Tensor], user_keys: torch.Tensor | None = None,
             user_mask: torch.Tensor | None = None) -> torch.Tensor:
        drop = None
        if self.training and self.knowledge_dropout > 0 and self.mode != "none":
            drop = torch.rand(len(batch["label"]), device=batch["label"].device) < self.knowledge_dropout
        logits, aux = self.logits_and_aux(batch, user_keys, user_mask, drop)
        loss = F.binary_cross_entropy_with_logits(logits, batch["label"])
        if "vq" in aux:
            loss = loss + self.vq_weight * aux["vq"].mean()
        if self.infonce_weight > 0 and "k_user" in aux:
            loss = loss + self.infonce_weight * self.alignment_loss(aux["k_user"], aux["k_item"], batch)
        return loss

    def alignment_loss(self, k_user: torch.Tensor, k_item: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """InfoNCE between the user and item knowledge of the batch's clicked pairs (in-batch negatives;
        a repeated user or movie is not its own negative)."""
        pos = batch["label"] > 0
        if int(pos.sum()) < 2:
            return k_user.sum() * 0.0
        users, items = batch["user"][pos], batch["cand_item"][pos]
        same = (users[:, None] == users[None, :]) | (items[:, None] == items[None, :])
        return info_nce(k_user[pos], k_item[pos], self.infonce_temperature, same).mean()
