"""PRO as a `transformers.Trainer`, in TRL's shape: a config dataclass plus a trainer class.

Each example is one prompt with n >= 2 candidate completions and a reward per candidate. The
policy scores a candidate by its length-normalised log-probability
`pi(y|x) = (1/|y|) sum_t log p(y_t | x, y_<t)`. For the candidates sorted by reward, each
position k contributes the listwise Bradley-Terry term
`-log exp(pi_k / T_kk) / (exp(pi_k / T_kk) + sum_{i: r_i < r_k} exp(pi_i / T_ki))`, with
`T_ki = 1 / (r_k - r_i)` and `T_kk = min_i T_ki` (PRO's reward-gap temperatures). Candidates
tied with k are left out of k's term, so a partial order is trained as exactly that. The total
adds `sft_weight` times the NLL of the best candidate.

Dataset columns: `prompt` (chat messages or text), `completions` (list of str), `rewards`
(list of float, same length).
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

from shoplab_core.models import ensure_pad_token, load_causal_lm
from training.pro_config import PROConfig


def pro_listwise_loss(policy_scores: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor,
                      tie_tolerance: float = 1e-4, reward_scale: float = 1.0) -> torch.Tensor:
    """Mean over prompts of PRO's summed listwise terms. Shapes (B, n); `mask` marks real candidates.

    `reward_scale` multiplies every reward gap, i.e. divides PRO's temperatures `T = 1/(r_k - r_i)`. PRO takes
    rewards from a reward model; offline-feedback rewards here differ by ~0.1, which makes every softmax
    nearly uniform: the loss sits at sum(log n_k) and its gradient is a tenth of the NLL's. [proposal]"""
    per_prompt = []
    for s_all, r_all, m in zip(policy_scores, rewards, mask, strict=True):
        s, r = s_all[m], r_all[m]
        order = torch.argsort(r, descending=True)
        s, r = s[order], r[order]
        terms = []
        for k in range(len(r) - 1):
            worse = r < r[k] - tie_tolerance
            if not bool(worse.any()):
                continue
            gaps = (r[k] - r[worse]).to(s.dtype) * reward_scale
            logits = torch.cat([s[k:k + 1] * gaps.max(), s[worse] * gaps])
            terms.append(-(logits[0] - torch.logsumexp(logits, dim=0)))
        if terms:
            per_prompt.append(torch.stack(terms).sum())
    if not per_prompt:
        return policy_scores.sum() * 0.0
    return torch.stack(per_prompt).mean()


class PROCollator:
    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seqs, labels, owners = [], [], []
        n_max = max(len(f["completion_ids"]) for f in features)
        rewards = torch.zeros(len(features), n_max)
        mask = torch.zeros(len(features), n_max, dtype=torch.bool)
        for b, f in enumerate(features):
            for j, (comp, r) in enumerate(zip(f["completion_ids"], f["rewards"], strict=True)):
                seqs.append(list(f["prompt_ids"]) + list(comp))
                labels.append([-100] * len(f["prompt_ids"]) + list(comp))
                owners.append(b * n_max + j)
                rewards[b, j] = float(r)
                mask[b, j] = True
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        label_ids = torch.full((len(seqs), width), -100, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (s, lab) in enumerate(zip(seqs, labels, strict=True)):
            input_ids[i, : len(s)] = torch.tensor(s)
            label_ids[i, : len(lab)] = torch.tensor(lab)
            attention[i, : len(s)] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "labels": label_ids,
                "slot": torch.tensor(owners), "rewards": rewards, "candidate_mask": mask}


class PROTrainer(Trainer):
    _tag_names = ["pro", "shoplab"]

    def __init__(self, model: str | PreTrainedModel, args: PROConfig, train_dataset: Dataset,
                 processing_class: PreTrainedTokenizerBase, peft_config: Any | None = None, **kwargs: Any):
        if isinstance(model, str):
            # The Trainer places the model; float32 weights as every stage trains them.
            model, _ = load_causal_lm(model, device=None, dtype="float32")
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        self.pro_args = args
        ensure_pad_token(processing_class)
        train_dataset = self.tokenize(train_dataset, processing_class, args.max_length)
        super().__init__(model=model, args=args, train_dataset=train_dataset, processing_class=processing_class,
                         data_collator=PROCollator(processing_class.pad_token_id), **kwargs)

    @staticmethod
    def tokenize(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Dataset:
        end = tokenizer.eos_token or ""

        def encode(example: dict[str, Any]) -> dict[str, Any]:
            prompt = example["prompt"]
            if isinstance(prompt, list):
                prompt = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            if len(example["completions"]) != len(example["rewards"]) or len(example["completions"]) < 2:
                raise ValueError("every PRO example needs >= 2 completions and one reward per completion")
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            completion_ids = [tokenizer(c + end, add_special_tokens=False)["input_ids"] for c in example["completions"]]
            room = max_length - max(len(c) for c in completion_ids)
            if room < 1:
                raise ValueError(f"a completion alone is longer than max_length={max_length}")
            return {"prompt_ids": prompt_ids[-room:], "completion_ids": completion_ids,
                    "rewards": [float(r) for r in example["rewards"]]}

        return dataset.map(encode, remove_columns=dataset.column_names)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        logits, targets = logits[:, :-1, :], labels[:, 1:]
        valid = targets != -100
        token_logp = torch.gather(logits.log_softmax(-1), 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        seq_score = (token_logp * valid).sum(-1) / valid.sum(-1).clamp(min=1)
        rewards, cmask = inputs["rewards"], inputs["candidate_mask"]
        scores = torch.zeros(rewards.shape, dtype=seq_score.dtype, device=seq_score.device)
        scores = scores.view(-1).index_put((inputs["slot"],), seq_score).view(rewards.shape)
        rank_loss = pro_listwise_loss(scores, rewards, cmask, self.pro_args.tie_tolerance,
                                      self.pro_args.reward_scale)
        best = torch.where(cmask, rewards, torch.full_like(rewards, float("-inf"))).argmax(-1)
        nll = -scores.gather(1, best.unsqueeze(1)).mean()
        loss = rank_loss + self.pro_args.sft_weight * nll
        if self.model.training:
            self._pro_log = {"pro_rank_loss": float(rank_loss.detach()), "pro_nll_best": float(nll.detach())}
        return (loss, {"scores": scores}) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        logs.update(getattr(self, "_pro_log", {}))
        super().log(logs, *args, **kwargs)
