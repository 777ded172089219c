"""PRO: the listwise loss against hand-computed values, and the trainer on a tiny model."""

from __future__ import annotations

import json
import math

import pytest
import torch
from datasets import Dataset

from tests.tiny_lm import build_tiny_chat_model
from training.pro_trainer import PROCollator, PROTrainer, pro_listwise_loss


def _loss(scores, rewards, mask=None):
    s = torch.tensor([scores], dtype=torch.float64)
    r = torch.tensor([rewards], dtype=torch.float64)
    m = torch.ones_like(s, dtype=torch.bool) if mask is None else torch.tensor([mask])
    return float(pro_listwise_loss(s, r, m))


def test_pro_loss_matches_a_hand_computed_three_candidate_example():
    # Candidates sorted by reward r = (3, 2, 1) with policy scores pi = (-1, -2, -3).
    # k = 1: gaps to the worse two are (1, 2); T_11 = min T = 1/2, so the logits are
    #        (-1*2, -2*1, -3*2) = (-2, -2, -6) and the term is -(-2 - log(e^-2 + e^-2 + e^-6)) = log(2 + e^-4).
    # k = 2: one worse candidate, gap 1: logits (-2, -3), term log(1 + e^-1).
    expected = math.log(2 + math.exp(-4)) + math.log(1 + math.exp(-1))
    assert _loss([-1, -2, -3], [3, 2, 1]) == pytest.approx(expected, abs=1e-12)
    # The candidates' order in the input does not matter, only their rewards.
    assert _loss([-3, -1, -2], [1, 3, 2]) == pytest.approx(expected, abs=1e-12)


def test_pro_loss_treats_ties_as_a_partial_order_and_ignores_padding():
    # r = (3, 3, 1): both best candidates face only the worst one (gap 2), never each other.
    expected = math.log(1 + math.exp(-4)) + math.log(1 + math.exp(-2))
    assert _loss([-1, -2, -3], [3, 3, 1]) == pytest.approx(expected, abs=1e-12)
    assert _loss([-1, -2, -3, 0.0], [3, 3, 1, 99.0], [True, True, True, False]) == pytest.approx(expected, abs=1e-12)
    assert _loss([-1, -2], [1, 1]) == 0.0  # all tied: no preference to learn


def test_pro_loss_prefers_raising_the_best_candidate():
    s = torch.tensor([[-2.0, -2.0, -2.0]], requires_grad=True)
    pro_listwise_loss(s, torch.tensor([[3.0, 2.0, 1.0]]), torch.ones(1, 3, dtype=torch.bool)).backward()
    assert s.grad[0, 0] < 0 < s.grad[0, 2]


def test_reward_scale_sharpens_the_ranking_of_rewards_on_a_small_scale():
    """Feedback rewards differ by ~0.1: at scale 1 the listwise softmax is nearly uniform and barely moves the
    policy; `reward_scale` divides the temperatures, i.e. the loss of rewards c·r."""
    s = torch.tensor([[-1.0, -1.5, -2.5]], dtype=torch.float64)
    r = torch.tensor([[0.9, 0.8, 0.7]], dtype=torch.float64)
    m = torch.ones(1, 3, dtype=torch.bool)
    assert float(pro_listwise_loss(s, r, m, reward_scale=10.0)) == pytest.approx(
        float(pro_listwise_loss(s, r * 10.0, m)), abs=1e-12)
    grads = []
    for scale in (1.0, 10.0):
        scores = torch.full((1, 3), -2.0, requires_grad=True)
        pro_listwise_loss(scores, r.float(), m, reward_scale=scale).backward()
        grads.append(float(-scores.grad[0, 0]))  # how hard the best candidate is pushed up
    assert grads[1] > 5 * grads[0] > 0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    corpus = ["Rewrite as a product search query: i need a cover for my phone", "phone case", "red scarf",
              "You turn product search queries.", "wool scarf red", "cheap shoes"] * 20
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny"), corpus)


def _rows():
    prompt = [{"role": "system", "content": "You turn product search queries."},
              {"role": "user", "content": "Rewrite as a product search query: i need a cover for my phone"}]
    return [{"prompt": prompt, "completions": ["phone case", "red scarf", "cheap shoes"], "rewards": [1.0, 0.4, 0.0]},
            {"prompt": prompt, "completions": ["wool scarf red", "phone case"], "rewards": [0.2, 0.9]}]


def test_pro_trainer_lowers_the_loss_on_a_fixed_batch_and_saves_a_loadable_adapter(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from rewrite import RewriteModel
    from training.stage_config import AlignStageConfig, LoraSettings
    from training.stages import run_pro_stage

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    data = Dataset.from_list(_rows())
    tokenized = PROTrainer.tokenize(data, tokenizer, max_length=64)
    batch = PROCollator(tokenizer.pad_token_id)([tokenized[i] for i in range(len(tokenized))])
    assert batch["input_ids"].shape[0] == 5 and batch["candidate_mask"].sum() == 5

    cfg = AlignStageConfig(max_steps=12, learning_rate=5e-3, batch_size=2, max_length=64, sft_weight=0.1)
    out = run_pro_stage(str(tiny_model), data, tmp_path / "pro", cfg, LoraSettings(r=4, alpha=8))
    info = json.loads((out / "stage.json").read_text())
    assert info["metrics"]["steps"] == 12 and (out / "adapter" / "adapter_config.json").exists()

    def batch_loss(model) -> float:
        trainer = PROTrainer.__new__(PROTrainer)
        trainer.pro_args = type("A", (), {"tie_tolerance": 1e-4, "sft_weight": 0.1,
                                             "reward_scale": cfg.pro_reward_scale})()  # the loss the stage trained
        trainer.model = model
        model.eval()
        with torch.no_grad():
            return float(PROTrainer.compute_loss(trainer, model, batch))

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    before = batch_loss(AutoModelForCausalLM.from_pretrained(tiny_model))
    after = batch_loss(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out / "adapter"))
    assert after < before

    rewriter = RewriteModel.load(out, max_new_tokens=6)
    assert rewriter.source["adapter"] and len(rewriter.candidates(["i need a cover for my phone"], n=2)[0]) <= 2


def test_pro_trainer_rejects_examples_it_cannot_rank(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    bad = Dataset.from_list([{"prompt": "q", "completions": ["only one"], "rewards": [1.0]}])
    with pytest.raises(ValueError, match=">= 2 completions"):
        PROTrainer.tokenize(bad, tokenizer, max_length=64)
