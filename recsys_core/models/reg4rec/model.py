"""REG4Rec (arXiv 2508.15308): reasoning-enhanced generative recommendation over MPQ's unordered tokens.

An item is a *set* of tokens, one per MPQ expert codebook (plus TIGER's collision column as one more
codebook, so every item's set is unique). The model generates the next item one token per step and
chooses at each step *which* codebook to emit next; the order it takes is the item's reasoning path.

- **Encoder.** Each history item is embedded as the sum of its token embeddings (a set function: the
  token order never matters), and a causal transformer over the items gives the user state u_t.
- **Decoder.** A step reads (u_t, the set S of tokens emitted so far): g = FFN(u_t + Σ_{x∈S} e_dec(x) +
  e_step(|S|)), and codebook r's logits are W_r g · E_rᵀ + b_r (E = the token embeddings, tied). It is a
  set function of S [proposal: the paper's decoder is not public; the unofficial port uses a
  cross-attention decoder with one MLP head per codebook], so two paths that reach the same partial
  set agree on what comes next and beams can be merged by set.
- **SFT** [proposal]: for each target item a random order of its free tokens is drawn; at every step
  the model is trained to predict *every* token still missing (mean cross-entropy), so it can continue
  from any partial set and its per-codebook confidences are comparable. The collision token always
  comes last (it only means something once the others are known).
- **CRSS** (confidence-based reasoning-step selection) [proposal: the rule is not public]: each beam
  emits next from the codebook whose most likely *allowed* code has the highest probability; the
  ablation (`crss=False`) emits in the fixed expert order, as TIGER does.
- **Constrained beam search**: a beam's candidate items are those whose token set contains its
  partial set; codes that no candidate has are masked; beams reaching the same partial set by
  different orders are merged (the best path is kept), and each finished beam is one real item.
- **CORP** (consistency-oriented self-reflection pruning) [proposal: the criterion is not public]:
  after each step a beam re-reads its path: every token it emitted is re-predicted from the *other*
  tokens of the partial set; if one falls outside the top `corp_rank` codes of its codebook
  (among the codes still consistent with the rest), the path contradicts itself and is pruned before
  it takes beam slots from others (never the last beam of a user).
- **PARS** (preference alignment for reasoning, GRPO-style): `grpo_loss` samples G paths per
  history with CRSS, rewards each path with R_hit(t) = w_tok · |S ∩ S_t| / |S_t| + w_item · [item = t]
  [proposal], normalises the rewards within the group, and takes PPO's clipped objective over the
  path's per-step log-probabilities (with `pars_updates` passes over one sample, the ratio moves and
  the clip acts), plus `sft_weight` × the SFT loss as the anchor that a KL term would otherwise be
  [proposal].
- **MSRA** (multi-step reward augmentation): R = R_hit(t) + γ Σ_{s=1}^{S} δ^s R_hit(t + s), the
  user's next S interactions after the target inside the training prefix (the task never passes
  validation or test items).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recsys_core.layers import CausalTransformer, RMSNorm, init_weights
from recsys_core.registry import register_model


@dataclass
class ReasoningPaths:
    """Beam-search output: items [B, W] (0 = none, best first), scores [B, W] (sum of step
    log-probabilities), and each beam's path: the codebook and code emitted at every step [B, W, C]
    with the step log-probabilities [B, W, C]."""

    items: torch.Tensor
    scores: torch.Tensor
    codebooks: torch.Tensor
    codes: torch.Tensor
    step_log_probs: torch.Tensor
    pruned: int = 0  # beams CORP removed


def _hash_table(n_codebooks: int, size: int, seed: int = 1234) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-2 ** 62, 2 ** 62, (n_codebooks, size + 1), generator=g, dtype=torch.long)


@register_model("reg4rec", tasks="reasoning_retrieval")
class REG4Rec(nn.Module):
    def __init__(self, item_codes: np.ndarray | torch.Tensor, free_codebooks: int, max_items: int = 20,
                 hidden: int = 128, layers: int = 2, heads: int = 4, dropout: float = 0.1,
                 crss: bool = True, corp: bool = True, corp_rank: int = 20,
                 token_reward: float = 1.0, item_reward: float = 1.0, msra_gamma: float = 0.5,
                 msra_delta: float = 0.7, group_size: int = 8, clip_eps: float = 0.2, sft_weight: float = 0.5,
                 sample_temperature: float = 1.0):
        super().__init__()
        codes = torch.as_tensor(np.asarray(item_codes), dtype=torch.long)
        if codes.ndim != 2 or len(codes) < 2:
            raise ValueError(f"item_codes must be [n_items + 1, C], got shape {tuple(codes.shape)}")
        self.n_items, self.n_codebooks = len(codes) - 1, codes.shape[1]
        if not 2 <= free_codebooks <= self.n_codebooks:
            raise ValueError(f"free_codebooks must be in 2..{self.n_codebooks} (order-free tokens need at least "
                             f"two codebooks), got {free_codebooks}")
        self.free_codebooks = int(free_codebooks)
        self.sizes = [int(s) for s in codes[1:].max(0).values + 1]
        self.offsets = [int(x) for x in np.r_[0, np.cumsum(self.sizes)[:-1]]]
        self.max_size = max(self.sizes)
        self.max_items = max_items
        self.register_buffer("item_codes", codes, persistent=False)
        # allowed[r, c]: some item has code c in codebook r (the first step's constraint)
        allowed = torch.zeros(self.n_codebooks, self.max_size, dtype=torch.bool)
        for r in range(self.n_codebooks):
            allowed[r, codes[1:, r].unique()] = True
        self.register_buffer("code_exists", allowed, persistent=False)
        self.register_buffer("set_hash", _hash_table(self.n_codebooks, self.max_size), persistent=False)
        self._build_constraints(codes)
        self.crss, self.corp, self.corp_rank = crss, corp, corp_rank
        self.token_reward, self.item_reward = token_reward, item_reward
        self.msra_gamma, self.msra_delta = msra_gamma, msra_delta
        self.group_size, self.clip_eps, self.sft_weight = group_size, clip_eps, sft_weight
        self.sample_temperature = sample_temperature

        self.token_emb = nn.Embedding(sum(self.sizes), hidden)
        self.encoder = CausalTransformer(hidden, layers, heads, max_items, dropout)
        self.emb_dropout = nn.Dropout(dropout)
        self.dec_token_emb = nn.Embedding(sum(self.sizes), hidden)
        self.step_emb = nn.Embedding(self.n_codebooks + 1, hidden)
        self.dec_norm = RMSNorm(hidden)
        self.dec_ffn = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.dec_out_norm = RMSNorm(hidden)
        self.heads = nn.Linear(hidden, self.n_codebooks * hidden)
        self.out_bias = nn.Parameter(torch.zeros(sum(self.sizes)))
        init_weights(self)
        self._old_log_probs: dict[int, torch.Tensor] = {}

    # ---- encoder ----------------------------------------------------------------------------------
    def item_embedding(self, items: torch.Tensor) -> torch.Tensor:
        """Σ of an item's token embeddings (0 → zeros) [..., d]."""
        flat = self.item_codes[items] + torch.as_tensor(self.offsets, device=items.device)
        return self.token_emb(flat).sum(-2) * (items > 0).unsqueeze(-1)

    def user_states(self, history: torch.Tensor) -> torch.Tensor:
        """Left-padded item histories [B, T] → the state after each position [B, T, d]."""
        x = self.emb_dropout(self.item_embedding(history))
        return self.encoder(x, padding_mask=history > 0)

    # ---- decoder ----------------------------------------------------------------------------------
    def decode_step(self, user: torch.Tensor, assigned: torch.Tensor) -> torch.Tensor:
        """Logits [N, C, max_size] of every codebook's codes given the user state [N, d] and the partial
        set `assigned` [N, C] (code, or -1 where not emitted yet). Codes beyond a codebook's size are -inf."""
        emitted = assigned >= 0
        tokens = assigned.clamp_min(0) + torch.as_tensor(self.offsets, device=assigned.device)
        partial = (self.dec_token_emb(tokens) * emitted.unsqueeze(-1)).sum(1)
        x = user + partial + self.step_emb(emitted.sum(1))
        g = self.dec_out_norm(x + self.dec_ffn(self.dec_norm(x)))
        queries = self.heads(g).view(len(g), self.n_codebooks, -1)
        out = torch.full((len(g), self.n_codebooks, self.max_size), -torch.inf, device=g.device, dtype=g.dtype)
        for r, (offset, size) in enumerate(zip(self.offsets, self.sizes, strict=True)):
            out[:, r, :size] = queries[:, r] @ self.token_emb.weight[offset:offset + size].T \
                + self.out_bias[offset:offset + size]
        return out

    def _open_codebooks(self, assigned: torch.Tensor) -> torch.Tensor:
        """[N, C] codebooks a step may emit: unassigned free ones; the fixed tail only after all free ones,
        in its column order."""
        open_ = assigned < 0
        free_done = (~open_[:, :self.free_codebooks]).all(1, keepdim=True)
        if self.free_codebooks < self.n_codebooks:
            tail = open_[:, self.free_codebooks:]
            first_tail = torch.zeros_like(tail)
            first_idx = tail.int().argmax(1)
            first_tail[torch.arange(len(tail), device=tail.device), first_idx] = tail.any(1)
            open_ = torch.cat([open_[:, :self.free_codebooks], first_tail & free_done], 1)
        return open_

    # ---- training: SFT ----------------------------------------------------------------------------
    def sft_loss(self, users: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """Mean cross-entropy of every token still missing at one step of a random order, per target.

        Each target draws a random order of its free tokens and a random step s (0..C-1); the partial
        set is the first s tokens of that order and every open codebook's target code is a label. Over
        epochs this covers every step of every order; one decoder pass per target instead of C keeps an
        epoch C times cheaper [proposal]."""
        n, device = len(targets), users.device
        codes = self.item_codes[targets]  # [N, C]
        order = torch.rand(n, self.free_codebooks, device=device, generator=generator).argsort(1)
        step = torch.randint(0, self.n_codebooks, (n,), device=device, generator=generator)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(self.free_codebooks, device=device)
                                                .expand(n, -1).contiguous())
        tail_rank = torch.arange(self.free_codebooks, self.n_codebooks, device=device).expand(n, -1)
        rank = torch.cat([rank, tail_rank], 1)  # position of each codebook in this target's order
        assigned = torch.where(rank < step.unsqueeze(1), codes, -1)
        missing = self._open_codebooks(assigned)
        log_probs = self.decode_step(users, assigned).log_softmax(-1)
        picked = log_probs.gather(2, codes.unsqueeze(-1)).squeeze(-1)  # [N, C]
        return -(picked * missing).sum() / missing.sum().clamp_min(1)

    def training_positions(self, history: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.user_states(history)
        keep = targets > 0
        return states[keep], targets[keep]

    def loss(self, batch: dict[str, torch.Tensor]):
        if "pars_targets" in batch:
            return self.grpo_loss(batch)
        users, targets = self.training_positions(batch["history"], batch["targets"])
        loss = self.sft_loss(users, targets)
        return loss, {"sft": float(loss.detach())}

    # ---- candidates and beams ---------------------------------------------------------------------
    def _build_constraints(self, codes: torch.Tensor) -> None:
        """Tables that answer "which codes can follow this partial set" without scanning the catalogue:
        - `pair_allowed[r1, c1, r, c]`: some item has code c1 in free codebook r1 and c in codebook r
          (a one-token partial set);
        - pair posting lists in CSR form (`pair_keys`, `pair_starts`, `pair_items`): the items holding
          each (r1, c1, r2, c2) of two free codebooks r1 < r2; with two or more tokens emitted, the
          candidates are the pair list of the first two emitted codebooks, filtered by the rest (a pair
          is rare, so the lists are short)."""
        items = codes[1:]
        n, k, f = len(items), self.max_size, self.free_codebooks
        pair_allowed = torch.zeros(f, k, self.n_codebooks, k, dtype=torch.bool)
        keys, owners = [], []
        for r1 in range(f):
            for r in range(self.n_codebooks):
                pair_allowed[r1, items[:, r1], r, items[:, r]] = True
            for r2 in range(r1 + 1, f):
                pair = r1 * f + r2
                keys.append((pair * k + items[:, r1]) * k + items[:, r2])
                owners.append(torch.arange(1, n + 1))
        self.register_buffer("pair_allowed", pair_allowed, persistent=False)
        if keys:
            all_keys, all_items = torch.cat(keys), torch.cat(owners)
            order = torch.argsort(all_keys, stable=True)
            unique, counts = torch.unique_consecutive(all_keys[order], return_counts=True)
            starts = torch.cumsum(counts, 0) - counts
            self.pair_width = int(counts.max())
        else:
            unique = starts = counts = all_items = order = torch.zeros(0, dtype=torch.long)
            self.pair_width = 1
        self.register_buffer("pair_keys", unique, persistent=False)
        self.register_buffer("pair_starts", starts, persistent=False)
        self.register_buffer("pair_counts", counts, persistent=False)
        self.register_buffer("pair_items", all_items[order], persistent=False)

    def _pair_lookup(self, assigned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(start, count) of each partial set's pair posting list (the first two emitted free codebooks)."""
        emitted = assigned[:, :self.free_codebooks] >= 0
        f, k = self.free_codebooks, self.max_size
        ranks = emitted.cumsum(1)
        first = ((ranks == 1) & emitted).int().argmax(1)
        second = ((ranks == 2) & emitted).int().argmax(1)
        rows = torch.arange(len(assigned), device=assigned.device)
        key = ((first * f + second) * k + assigned[rows, first]) * k + assigned[rows, second]
        where = torch.searchsorted(self.pair_keys, key).clamp_(max=len(self.pair_keys) - 1)
        found = self.pair_keys[where] == key
        return self.pair_starts[where], torch.where(found, self.pair_counts[where], 0)

    def items_containing(self, assigned: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """Items whose token set contains each partial set [N, C] (at least two free tokens emitted) as
        padded rows [N, P] (0 = none); `width` caps P (rows whose pair list is longer need the default)."""
        start, count = self._pair_lookup(assigned)
        width = self.pair_width if width is None else width
        slot = torch.arange(width, device=assigned.device)
        take = slot < count.unsqueeze(1)
        index = (start.unsqueeze(1) + slot).clamp_(max=len(self.pair_items) - 1)
        cands = torch.where(take, self.pair_items[index], 0)
        match = ((self.item_codes[cands] == assigned.unsqueeze(1)) | (assigned.unsqueeze(1) < 0)).all(-1)
        return torch.where(match & (cands > 0), cands, 0)

    def _by_list_length(self, assigned: torch.Tensor):
        """Row groups by pair-list length (short lists share a narrow width: most beams are in rare pairs)."""
        _, count = self._pair_lookup(assigned)
        low = 0
        for width in (8, 32, 128, self.pair_width):
            rows = ((count > low) & (count <= width)).nonzero().flatten() if low else (count <= width).nonzero().flatten()
            if len(rows):
                yield rows, min(width, self.pair_width)
            low = width
            if width >= self.pair_width:
                break

    def item_of(self, assigned: torch.Tensor) -> torch.Tensor:
        """The item of each complete token set [N, C] (0 if none)."""
        out = torch.zeros(len(assigned), dtype=torch.long, device=assigned.device)
        for rows, width in self._by_list_length(assigned):
            out[rows] = self.items_containing(assigned[rows], width).amax(1)
        return out

    def _allowed(self, assigned: torch.Tensor) -> torch.Tensor:
        """[N, C, max_size] codes that some item containing the partial set has, per codebook."""
        n = len(assigned)
        count = (assigned[:, :self.free_codebooks] >= 0).sum(1)
        out = self.code_exists.unsqueeze(0).expand(n, -1, -1).clone()
        one = (count == 1).nonzero().flatten()
        if len(one):
            r1 = (assigned[one, :self.free_codebooks] >= 0).int().argmax(1)
            out[one] = self.pair_allowed[r1, assigned[one, r1]]
        many = (count >= 2).nonzero().flatten()
        if len(many):
            for part, width in self._by_list_length(assigned[many]):
                rows = many[part]
                candidates = self.items_containing(assigned[rows], width)
                cand_codes = self.item_codes[candidates]  # [M, P, C]
                mask = torch.zeros(len(rows), self.n_codebooks, self.max_size + 1, dtype=torch.bool,
                                   device=assigned.device)
                idx = torch.where(candidates.unsqueeze(-1) > 0, cand_codes, self.max_size).transpose(1, 2)
                mask.scatter_(2, idx, True)
                out[rows] = mask[..., :self.max_size]
        return out

    def _set_keys(self, assigned: torch.Tensor) -> torch.Tensor:
        return self.set_hash.gather(1, (assigned + 1).T).T.sum(1)

    def _choose_codebook(self, log_probs: torch.Tensor, allowed: torch.Tensor, open_: torch.Tensor) -> torch.Tensor:
        """CRSS: the open codebook whose best allowed code is most probable; fixed order without CRSS."""
        if not self.crss:
            return open_.int().argmax(1)
        conf = log_probs.masked_fill(~allowed, -torch.inf).amax(-1).masked_fill(~open_, -torch.inf)
        return conf.argmax(1)

    def _corp_consistent(self, users: torch.Tensor, assigned: torch.Tensor,
                         newest: torch.Tensor | None = None) -> torch.Tensor:
        """Self-reflection: each earlier free token, re-predicted from the rest of the partial set, must rank
        within `corp_rank` among the codes its codebook can take given the rest (`newest` [N], the
        codebook just emitted, is skipped: it was chosen from that very context)."""
        ok = torch.ones(len(assigned), dtype=torch.bool, device=assigned.device)
        emitted_free = assigned[:, :self.free_codebooks] >= 0
        several = emitted_free.sum(1) >= 2
        for r in range(self.free_codebooks):
            check = emitted_free[:, r] & several
            if newest is not None:
                check &= newest != r
            rows = check.nonzero().flatten()
            if not len(rows):
                continue
            rest = assigned[rows].clone()
            rest[:, r] = -1
            logits = self.decode_step(users[rows], rest)[:, r]
            logits = logits.masked_fill(~self._allowed(rest)[:, r], -torch.inf)
            chosen = logits.gather(1, assigned[rows, r].view(-1, 1))
            ok[rows] &= (logits > chosen).sum(1) < self.corp_rank
        return ok

    @torch.no_grad()
    def beam_search(self, history: torch.Tensor, beam_size: int, crss: bool | None = None,
                    corp: bool | None = None) -> ReasoningPaths:
        """Top `beam_size` items per left-padded history [B, T] with their reasoning paths; `crss` /
        `corp` override the model's switches for this call (the ablations)."""
        crss_saved, corp_saved = self.crss, self.corp
        self.crss = self.crss if crss is None else crss
        self.corp = self.corp if corp is None else corp
        try:
            return self._beam_search(history, beam_size)
        finally:
            self.crss, self.corp = crss_saved, corp_saved

    def _beam_search(self, history: torch.Tensor, beam_size: int) -> ReasoningPaths:
        device = self.item_codes.device
        history = history.to(device)
        b, c = history.shape[0], self.n_codebooks
        users = self.user_states(history)[:, -1]  # [B, d]
        width = 1
        assigned = torch.full((b, c), -1, dtype=torch.long, device=device)
        scores = torch.zeros(b, 1, device=device)
        path_cb = torch.zeros(b, 0, dtype=torch.long, device=device)  # [B·W, steps so far]
        path_code = torch.zeros(b, 0, dtype=torch.long, device=device)
        path_lp = torch.zeros(b, 0, device=device)
        pruned_total = 0
        batch_rows = torch.arange(b, device=device).view(-1, 1)
        for step in range(c):
            flat_users = users.repeat_interleave(width, 0)
            log_probs = self.decode_step(flat_users, assigned).log_softmax(-1)  # [BW, C, K]
            allowed = self._allowed(assigned)
            chosen = self._choose_codebook(log_probs, allowed, self._open_codebooks(assigned))  # [BW]
            rows = torch.arange(len(chosen), device=device)
            step_lp = log_probs[rows, chosen].masked_fill(~allowed[rows, chosen], -torch.inf)  # [BW, K]
            k = self.max_size
            cand = (scores.view(-1, 1) + step_lp).view(b, width * k)
            top_scores, flat = cand.topk(min(beam_size * 2, width * k), dim=1)
            parent_rows = (batch_rows * width + flat // k).flatten()
            code = (flat % k).flatten()
            new_cb = chosen[parent_rows]
            new_assigned = assigned[parent_rows].clone()
            new_assigned[torch.arange(len(parent_rows), device=device), new_cb] = code
            alive = torch.isfinite(top_scores)
            # beams that reached the same partial set by different orders: keep the best path only
            keys = self._set_keys(new_assigned).view(b, -1)
            same = (keys.unsqueeze(2) == keys.unsqueeze(1)) & alive.unsqueeze(1) & alive.unsqueeze(2)
            duplicate = (same & torch.tril(torch.ones_like(same[0]), diagonal=-1)).any(2)
            top_scores = top_scores.masked_fill(duplicate, -torch.inf)
            if self.corp and 1 <= step < c - 1:
                ok = self._corp_consistent(flat_users[parent_rows], new_assigned, new_cb).view(b, -1)
                alive = torch.isfinite(top_scores)
                drop = alive & ~ok & (ok & alive).any(1, keepdim=True)
                pruned_total += int(drop.sum())
                top_scores = top_scores.masked_fill(drop, -torch.inf)
            scores, order = top_scores.topk(min(beam_size, top_scores.shape[1]), dim=1)
            pick = (batch_rows * top_scores.shape[1] + order).flatten()
            src = parent_rows[pick]
            assigned, new_cb, code = new_assigned[pick], new_cb[pick], code[pick]
            path_cb = torch.cat([path_cb[src], new_cb.view(-1, 1)], 1)
            path_code = torch.cat([path_code[src], code.view(-1, 1)], 1)
            path_lp = torch.cat([path_lp[src], step_lp[src, code].view(-1, 1)], 1)
            width = order.shape[1]
        items = self.item_of(assigned).view(b, width).masked_fill(torch.isinf(scores), 0)
        return ReasoningPaths(items, scores, path_cb.view(b, width, -1), path_code.view(b, width, -1),
                              path_lp.view(b, width, -1), pruned_total)

    # ---- PARS + MSRA ------------------------------------------------------------------------------
    def token_hits(self, generated: torch.Tensor, target_items: torch.Tensor) -> torch.Tensor:
        """R_hit: w_tok · share of the target's tokens generated + w_item · [same item]; generated [N, C]
        codes, target_items [N] (0 → 0 reward)."""
        target = self.item_codes[target_items]
        share = (generated == target).float().mean(1)
        same = (generated == target).all(1).float()
        return (self.token_reward * share + self.item_reward * same) * (target_items > 0)

    def rewards(self, generated: torch.Tensor, targets: torch.Tensor, futures: torch.Tensor | None) -> torch.Tensor:
        """MSRA: R_hit(t) + γ Σ_s δ^s R_hit(t+s) over the future items [N, S] (0 = none)."""
        reward = self.token_hits(generated, targets)
        if futures is not None and self.msra_gamma:
            for s in range(futures.shape[1]):
                reward = reward + self.msra_gamma * self.msra_delta ** (s + 1) * self.token_hits(generated,
                                                                                               futures[:, s])
        return reward

    def sample_paths(self, users: torch.Tensor, temperature: float = 1.0
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample one constrained path per user state [N, d] with CRSS picking the codebook; returns the
        codes [N, C], the codebook emitted at each step [N, C] and the code at each step [N, C]."""
        n, c, device = len(users), self.n_codebooks, users.device
        assigned = torch.full((n, c), -1, dtype=torch.long, device=device)
        rows = torch.arange(n, device=device)
        step_cb, step_code = [], []
        for _ in range(c):
            log_probs = self.decode_step(users, assigned).log_softmax(-1)
            allowed = self._allowed(assigned)
            chosen = self._choose_codebook(log_probs, allowed, self._open_codebooks(assigned))
            logits = (log_probs[rows, chosen] / temperature).masked_fill(~allowed[rows, chosen], -torch.inf)
            code = torch.multinomial(logits.softmax(-1), 1).squeeze(1)
            assigned = assigned.clone()
            assigned[rows, chosen] = code
            step_cb.append(chosen)
            step_code.append(code)
        return assigned, torch.stack(step_cb, 1), torch.stack(step_code, 1)

    def path_log_probs(self, users: torch.Tensor, step_cb: torch.Tensor, step_code: torch.Tensor) -> torch.Tensor:
        """Per-step log-probabilities [N, C] of given paths under the current policy (the constrained,
        renormalised distribution the sampler draws from)."""
        n, c = step_cb.shape
        rows = torch.arange(n, device=users.device)
        assigned = torch.full((n, self.n_codebooks), -1, dtype=torch.long, device=users.device)
        out = []
        for step in range(c):
            logits = self.decode_step(users, assigned)[rows, step_cb[:, step]] / self.sample_temperature
            with torch.no_grad():
                allowed = self._allowed(assigned)[rows, step_cb[:, step]]
            lp = logits.masked_fill(~allowed, -torch.inf).log_softmax(-1)
            out.append(lp.gather(1, step_code[:, step:step + 1]).squeeze(1))
            assigned = assigned.clone()
            assigned[rows, step_cb[:, step]] = step_code[:, step]
        return torch.stack(out, 1)

    def grpo_loss(self, batch: dict[str, torch.Tensor]):
        """PARS: G sampled paths per (history, target); group-normalised advantages; clipped ratio."""
        history, targets = batch["pars_history"], batch["pars_targets"]
        futures = batch.get("pars_futures")
        users = self.user_states(history)[:, -1]
        g = self.group_size
        group_users = users.repeat_interleave(g, 0)
        key = int(batch["pars_batch_id"])
        if int(batch.get("pars_pass", 0)) == 0 or key not in self._old_log_probs:
            with torch.no_grad():
                codes, step_cb, step_code = self.sample_paths(group_users.detach(), self.sample_temperature)
                old = self.path_log_probs(group_users.detach(), step_cb, step_code)
                reward = self.rewards(codes, targets.repeat_interleave(g),
                                      futures.repeat_interleave(g, 0) if futures is not None else None)
                grouped = reward.view(-1, g)
                advantage = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4))
            self._old_log_probs = {key: (step_cb, step_code, old, advantage.flatten(), reward)}
        step_cb, step_code, old, advantage, reward = self._old_log_probs[key]
        new = self.path_log_probs(group_users, step_cb, step_code)
        ratio = torch.exp(new - old)
        adv = advantage.unsqueeze(1)
        surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - self.clip_eps, 1 + self.clip_eps) * adv)
        pg = -surrogate.mean()
        total = pg
        parts = {"pg": float(pg.detach()), "reward": float(reward.mean())}
        if self.sft_weight:
            sft = self.sft_loss(users, targets)
            total = total + self.sft_weight * sft
            parts["sft"] = float(sft.detach())
        return total, parts
