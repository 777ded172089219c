"""CoCo's contradiction resolution: LoRA on the knowledge LLM, updated only where its knowledge hurts.

A stage after the ranker has converged on frozen knowledge (the LLM cannot be in every step of a
CPU training run: one LoRA step over 16 users' contexts costs seconds). Each step [proposal]:

1. draws `users_per_step` users (weighted by their training samples) and up to `samples_per_user`
   of each one's training samples;
2. runs the users' cached trunk token states through the top LLM block with LoRA (PEFT, rank
   `rank` on q/k/v/o), pools per segment and whitens: differentiable user knowledge;
3. **gradient masking**: with the knowledge and without it (K_u = K_i = 0), under no_grad, each
   sample's loss; a sample whose loss is higher *with* the knowledge contradicts it (m = 1). The
   LLM receives gradients only through those samples (elsewhere its states enter detached); the
   ranker learns from all. `gradient_masking=False` is the ablation: the LLM learns from every sample;
4. the usual CoCo loss (BCE + VQ + InfoNCE), AdamW on LoRA (`lr`) and ranker (`ranker_lr`).

Every `eval_every` steps the knowledge of the users in valid is recomputed with the current LoRA
weights and valid AUC is measured; the best state (ranker and LoRA) is kept (early stopping,
`patience` checks); at the end the test users' knowledge is recomputed with it and test is scored.
Users in neither split keep their stage-1 knowledge in the returned model.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from recsys_core.models.coco.knowledge import KnowledgeCache, KnowledgeLLM, segment_means


class KnowledgeResolver:
    def __init__(self, task, settings: dict[str, Any], device: torch.device | str = "cpu"):
        self.task = task
        self.s = {"steps": 100, "users_per_step": 16, "samples_per_user": 32, "rank": 8, "lr": 5e-4,
                  "ranker_lr": 1e-4, "eval_every": 50, "patience": 1, **settings}
        self.device = torch.device(device)
        task.knowledge()  # built if missing
        self.cache = KnowledgeCache.load(task.knowledge_dir, with_trunk=True)
        data = task.data
        train = data.splits["train"]
        self.train_by_user = np.split(np.argsort(train.user, kind="stable"),
                                      np.cumsum(np.bincount(train.user, minlength=self.task.movielens.n_users))[:-1])
        counts = np.array([len(x) for x in self.train_by_user], dtype=np.float64)
        self.user_weights = counts / counts.sum()
        self.valid_users = np.unique(data.splits["valid"].user)
        self.test_users = np.unique(data.splits["test"].user)

    def llm(self) -> KnowledgeLLM:
        s = self.task.knowledge_settings
        return KnowledgeLLM(str(s["model"]), int(s["n_layers"]), str(self.device))

    def user_states(self, llm: KnowledgeLLM, users: np.ndarray, model) -> tuple[torch.Tensor, torch.Tensor]:
        """Whitened knowledge [n, S, P] (differentiable through LoRA) and segment mask [n, S] of `users`."""
        c = self.cache
        lengths = c.user_offsets[users + 1] - c.user_offsets[users]
        width = max(1, int(lengths.max()))
        n_seg = c.user_states.shape[1]
        states = torch.zeros(len(users), width, c.user_trunk.shape[1], device=self.device)
        seg = torch.full((len(users), width), -1, dtype=torch.long, device=self.device)
        for r, u in enumerate(users):
            a, b = int(c.user_offsets[u]), int(c.user_offsets[u + 1])
            states[r, :b - a] = torch.from_numpy(np.asarray(c.user_trunk[a:b], dtype=np.float32)).to(self.device)
            seg[r, :b - a] = torch.from_numpy(c.user_token_segments[a:b].astype(np.int64)).to(self.device)
        top = llm.run_top(states, (seg >= 0).long())
        pooled = segment_means(top, seg, n_seg)
        mask = torch.from_numpy(c.user_mask[users]).to(self.device)
        return model.project(pooled) * mask.unsqueeze(-1), mask

    @torch.no_grad()
    def refresh(self, llm: KnowledgeLLM, model, users: np.ndarray, chunk: int = 64) -> None:
        """Rewrite the model's cached user knowledge of `users` with the current LoRA weights."""
        for start in range(0, len(users), chunk):
            part = users[start:start + chunk]
            keys, _ = self.user_states(llm, part, model)
            model.user_keys[torch.from_numpy(part).to(model.user_keys.device)] = keys.to(model.user_keys.device)

    def masked_keys(self, model, batch, keys: torch.Tensor, mask: torch.Tensor, gradient_masking: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample keys whose LLM gradient is kept only where knowledge hurts, the mask m [B])."""
        with torch.no_grad():
            with_k, _ = model.logits_and_aux(batch, keys, mask)
            without, _ = model.logits_and_aux(batch, keys, mask, drop=torch.ones_like(batch["label"], dtype=torch.bool))
            hurts = (F.binary_cross_entropy_with_logits(with_k, batch["label"], reduction="none")
                     > F.binary_cross_entropy_with_logits(without, batch["label"], reduction="none"))
        if not gradient_masking:
            return keys, hurts
        return torch.where(hurts[:, None, None], keys, keys.detach()), hurts

    def run(self, model, gradient_masking: bool = True, seed: int = 0) -> dict[str, Any]:
        from peft import LoraConfig, inject_adapter_in_model

        s = self.s
        rng = np.random.default_rng([seed, 7])
        torch.manual_seed(seed)
        llm = self.llm()
        inject_adapter_in_model(LoraConfig(r=int(s["rank"]), lora_alpha=2 * int(s["rank"]), lora_dropout=0.0,
                                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]), llm.top)
        lora = [p for n, p in llm.top.named_parameters() if "lora_" in n]
        for p in lora:
            p.requires_grad_(True)
        llm.to(self.device)
        model.to(self.device)
        optimizer = torch.optim.AdamW([{"params": lora, "lr": float(s["lr"])},
                                       {"params": [p for p in model.parameters() if p.requires_grad],
                                        "lr": float(s["ranker_lr"])}])
        data, train = self.task.data, self.task.data.splits["train"]

        def evaluate() -> float:
            model.eval()
            self.refresh(llm, model, self.valid_users)
            return self.task.evaluate(model, "valid")["auc"]

        t0 = time.perf_counter()
        model.eval()
        # step 0: LoRA starts at zero (B = 0), so the cached knowledge is the current one
        best = {"auc": self.task.evaluate(model, "valid")["auc"], "step": 0, "model": copy.deepcopy(model.state_dict()),
                "lora": {n: p.detach().clone() for n, p in llm.top.named_parameters() if "lora_" in n}}
        history, hurt_shares, bad = [{"step": 0, "valid_auc": best["auc"]}], [], 0
        for step in range(1, int(s["steps"]) + 1):
            model.train()
            llm.top.train()
            users = np.unique(rng.choice(len(self.user_weights), int(s["users_per_step"]), p=self.user_weights))
            index = np.concatenate([rng.permutation(self.train_by_user[u])[:int(s["samples_per_user"])] for u in users])
            batch = {k: v.to(self.device) for k, v in data.make_batch(train, index).items()}
            keys_u, mask_u = self.user_states(llm, users, model)
            row = torch.from_numpy(np.searchsorted(users, train.user[index])).to(self.device)
            keys, hurts = self.masked_keys(model, batch, keys_u[row], mask_u[row], gradient_masking)
            hurt_shares.append(float(hurts.float().mean()))
            loss = model.loss(batch, user_keys=keys, user_mask=mask_u[row])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*lora, *model.parameters()], 1.0)
            optimizer.step()
            if step % int(s["eval_every"]) == 0 or step == int(s["steps"]):
                score = evaluate()
                history.append({"step": step, "valid_auc": score, "loss": float(loss.detach())})
                if score > best["auc"]:
                    best.update(auc=score, step=step, model=copy.deepcopy(model.state_dict()),
                                lora={n: p.detach().clone() for n, p in llm.top.named_parameters() if "lora_" in n})
                    bad = 0
                else:
                    bad += 1
                    if bad >= int(s["patience"]):
                        break
        model.load_state_dict(best["model"])
        with torch.no_grad():
            for n, p in llm.top.named_parameters():
                if n in best["lora"]:
                    p.copy_(best["lora"][n])
        model.eval()
        self.refresh(llm, model, self.test_users)
        test = self.task.evaluate(model, "test")
        return {"gradient_masking": gradient_masking, "best_step": best["step"], "valid": {"auc": best["auc"]},
                "test": test, "history": history, "steps_run": step, "seconds": round(time.perf_counter() - t0, 1),
                "hurt_share": round(float(np.mean(hurt_shares)), 4) if hurt_shares else None}
