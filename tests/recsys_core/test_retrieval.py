"""Embedding-based retrieval: the item indexes, the two-tower base and its negative samplers, ESANS and CSMF.
Each paper mechanism has a test that fails when the mechanism is switched off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys_core import ExperimentConfig
from recsys_core.data.movielens import load_movielens, movielens_sequences
from recsys_core.index import ItemIndex, overlap_at_k, ranks_in_results
from recsys_core.models.csmf import CSMF, FreedEntries
from recsys_core.models.esans import ESANS, semantic_clusters
from recsys_core.models.two_tower import TwoTower
from recsys_core.registry import get_task
from recsys_core.trainer import Trainer
from tests.recsys_core.test_recsys_ranking_zoo2 import train_steps

N_ITEMS, MAX_LEN = 40, 10
SYNTH = {"users": 60, "movies": 30, "ratings_per_user": 14}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def batch(n: int = 16, seed: int = 0, stars: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, N_ITEMS + 1, (n, MAX_LEN + 1), generator=g)
    ids[: n // 4, :3] = 0  # some left padding
    out = {"input_ids": ids[:, :-1], "targets": ids[:, 1:] * (ids[:, :-1] > 0)}
    if stars:
        out["target_stars"] = torch.randint(1, 6, (n, MAX_LEN), generator=g).float()
    return out


def two_tower(**kw) -> TwoTower:
    return TwoTower(N_ITEMS, MAX_LEN, hidden=16, layers=1, heads=2, dropout=0.0, n_negatives=8, **kw)


# ---------------------------------------------------------------- indexes and the task


def test_exact_index_returns_the_true_top_k_and_hnsw_finds_nearly_all_of_it():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(2001, 32)).astype(np.float32)
    items[0] = 0.0
    queries = rng.normal(size=(200, 32)).astype(np.float32)
    _, exact = ItemIndex.build(items, "exact").search(queries, 10)
    truth = np.argsort(-(queries @ items[1:].T), 1)[:, :10] + 1  # item index = row + 1; padding never returned
    assert np.array_equal(exact, truth)
    _, approx = ItemIndex.build(items, "hnsw", ef_search=64).search(queries, 10)
    assert overlap_at_k(approx, exact, 10) >= 0.9
    assert ranks_in_results(exact, truth[:, 3]).tolist() == [3] * 200
    assert ranks_in_results(exact, np.zeros(200, dtype=np.int64)).tolist() == [10] * 200  # a miss
    with pytest.raises(ValueError, match="index kind"):
        ItemIndex.build(items, "ivf")


def test_retrieval_task_trains_two_tower_and_reports_exact_hnsw_and_conversion_metrics(tmp_path):
    cfg = ExperimentConfig.from_yaml("recsys_core/models/two_tower/smoke.yaml", [
        "data.kind=movielens", "data.path=null", f"data.synthetic={SYNTH}", f"out_dir={tmp_path}",
        "model_params.use_text=false"])
    result = Trainer(cfg, tmp_path).fit()
    test = result["test"]
    for key in ("ndcg@10", "hnsw_ndcg@10", "hnsw_overlap@10", "conv_ndcg@10"):
        assert key in test
    assert test["hnsw_overlap@10"] >= 0.9  # 30 movies: the graph search is all but exact
    saved = np.load(tmp_path / "test_ranks.npz")
    task = get_task("retrieval")(cfg)
    assert len(saved["rank"]) == task.data.n_users and len(saved["conv_rank"]) == len(task.conversion_users("test"))
    # the exact ranks are the task's own ranks of the trained model; users at rank < 10 give recall@10
    assert np.isclose((saved["rank"] < 10).mean(), test["recall@10"])
    # a conversion is a held-out rating >= 4
    stars = [r[-1] for r in task.data.ratings]
    assert all(stars[u] >= 4 for u in task.conversion_users("test"))


# ---------------------------------------------------------------- negative samplers


def test_in_batch_negatives_are_the_batch_positives_with_the_logq_correction():
    popularity = np.arange(N_ITEMS + 1, dtype=float) ** 2
    model = two_tower(negatives="in_batch", item_popularity=popularity).eval()
    b = batch()
    queries, positives = model.query_targets(b)
    torch.manual_seed(1)
    negatives, log_q = model.sample_negatives(queries, positives)
    assert set(negatives.flatten().tolist()) <= set(positives.tolist())
    torch.manual_seed(1)
    logits, valid = model.sampled_logits(queries, positives)
    raw = torch.einsum("pd,pnd->pn", queries, model.encode_items(negatives)) / model.temperature
    # logQ: every column (positive included) is lowered by log q of its item, so popular items are not over-penalised
    assert torch.allclose(logits[:, 1:], raw - log_q, atol=1e-5)
    pos = (queries * model.encode_items(positives)).sum(-1) / model.temperature - model.log_q[positives]
    assert torch.allclose(logits[:, 0], pos, atol=1e-5)
    assert torch.equal(valid[:, 1:], negatives != positives[:, None])  # accidental hits are not negatives


def test_hard_negatives_come_from_the_items_the_model_scores_highest():
    model = two_tower(negatives="hard", hard_pool=5, hard_skip=3, hard_share=0.5).eval()
    queries, positives = model.query_targets(batch())
    negatives, _ = model.sample_negatives(queries, positives)
    scores = queries @ model.item_vectors().T
    scores[:, 0] = -torch.inf
    scores.scatter_(1, positives[:, None], -torch.inf)
    top = scores.topk(model.hard_skip + 5, dim=1).indices[:, model.hard_skip:]
    hard = negatives[:, :4]
    assert all(set(h.tolist()) <= set(t.tolist()) for h, t in zip(hard, top, strict=True))
    assert not (hard == positives[:, None]).any()


# ---------------------------------------------------------------- ESANS


def clustered_esans(**kw) -> ESANS:
    """ESANS over 40 items in 4 coarse clusters of 10, each split into 2 fine clusters of 5."""
    coarse = np.concatenate([[-1], np.repeat(np.arange(4), 10)])
    fine = np.concatenate([[-1], np.repeat(np.arange(8), 5)])
    return ESANS(N_ITEMS, MAX_LEN, item_coarse=coarse, item_fine=fine, hidden=16, layers=1, heads=2, dropout=0.0,
                 n_negatives=40, **kw)


def test_msac_draws_its_share_of_negatives_from_the_positives_coarse_cluster():
    model = clustered_esans(cluster_share=0.5)
    queries, positives = model.query_targets(batch(64))
    negatives, _ = model.sample_negatives(queries, positives)
    same = (model.item_coarse[negatives] == model.item_coarse[positives][:, None]).float().mean().item()
    assert 0.55 < same < 0.7  # half from the cluster + a quarter of the uniform half (1 of 4 clusters)
    off = clustered_esans(msac=False)
    negatives, _ = off.sample_negatives(queries, positives)
    assert (off.item_coarse[negatives] == off.item_coarse[positives][:, None]).float().mean().item() < 0.35


def test_msac_masks_negatives_of_the_positives_fine_cluster_as_likely_false_negatives():
    model = clustered_esans()
    positives = torch.tensor([1, 12])
    negatives = torch.tensor([[2, 7, 1], [11, 16, 30]])  # item 2 shares item 1's fine cluster, 11 shares 12's
    assert model.negative_mask(positives, negatives).tolist() == [[False, True, False], [False, True, True]]
    assert clustered_esans(false_negative_mask=False).negative_mask(positives, negatives).tolist() == [
        [True, True, False], [True, True, True]]


def test_edis_adds_virtual_negatives_inside_the_span_of_the_querys_negatives():
    model = clustered_esans(n_virtual=6).train()
    queries, positives = model.query_targets(batch())
    assert model.sampled_logits(queries, positives)[0].shape[1] == 1 + 40 + 6
    assert clustered_esans(n_virtual=0).train().sampled_logits(queries, positives)[0].shape[1] == 41
    assert model.eval().sampled_logits(queries, positives)[0].shape[1] == 41  # training only
    axes = torch.eye(4)
    negatives = axes[0].expand(8, 6, 4).clone()  # every query's negatives: e1, e2, e1, e2, ...
    negatives[:, 1::2] = axes[1]
    anchor = axes[:1].expand(8, 4)  # score the virtual negatives by e1 itself: they are v·e1 = cos(v, e1)
    valid = torch.ones(8, 6, dtype=torch.bool)
    valid[0, 1] = False  # a masked negative passes its mask to the virtual negatives made from it
    scores, virtual_valid = model.train().extra_negatives(anchor, axes[3].expand(8, 4), negatives, valid)
    assert scores.shape == (8, 6) and (scores >= -1e-6).all() and (scores <= 1 + 1e-6).all()
    assert (scores < 1 - 1e-3).float().mean() > 0.3  # mixes of e1 and e2, not copies of e1
    assert not virtual_valid[0, 1]
    partner_masked = torch.ones(8, 6, dtype=torch.bool)
    partner_masked[:, 2:] = False  # ... and so does a masked partner (16 virtual negatives, 2 in 3 with one)
    assert not clustered_esans(n_virtual=2).train().extra_negatives(anchor, anchor, negatives, partner_masked)[1].all()
    # every virtual negative lies on the arc between the two negatives: no share of the positive (e4)
    virtual_e4, _ = model.extra_negatives(axes[3].expand(8, 4), axes[3].expand(8, 4), negatives, valid)
    assert torch.allclose(virtual_e4, torch.zeros_like(virtual_e4), atol=1e-6)


def test_edis_positive_mix_puts_virtual_negatives_between_each_negative_and_the_positive():
    model = clustered_esans(n_virtual=6, edis_mix="positive", virtual_max_mix=0.4).train()
    queries, positives = model.query_targets(batch())
    logits, valid = model.sampled_logits(queries, positives)
    assert logits.shape[1] == 1 + 40 + 6 and valid.shape == logits.shape
    pos_vec = model.encode_items(positives)
    torch.manual_seed(3)
    negatives, _ = model.sample_negatives(queries, positives)
    neg_vec = model.encode_items(negatives)
    torch.manual_seed(4)
    virtual_scores, _ = model.extra_negatives(pos_vec, pos_vec, neg_vec, torch.ones_like(negatives, dtype=torch.bool))
    real_scores = (pos_vec[:, None] * neg_vec[:, :6]).sum(-1)
    distinct = negatives[:, :6] != positives[:, None]  # an accidental hit is masked, and so is its virtual copy
    # scored by the positive itself: a virtual negative is closer to the positive than the negative it came from
    assert (virtual_scores >= real_scores - 1e-5).all()
    assert (virtual_scores > real_scores + 1e-4)[distinct].float().mean() > 0.9
    assert (virtual_scores < 1 - 1e-3)[distinct].all()  # never the positive itself (mix < 0.5)


def test_semantic_clusters_keep_similar_items_together_at_both_levels():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8)) * 10
    features = np.concatenate([np.zeros((1, 8)), np.repeat(centres, 25, 0) + rng.normal(size=(100, 8)) * 0.1])
    coarse, fine = semantic_clusters(features.astype(np.float32), coarse=4, fine=3)
    assert coarse[0] == -1 and fine[0] == -1
    for group in range(4):
        assert len(set(coarse[1 + 25 * group: 26 + 25 * group])) == 1
    assert len(set(coarse[1:])) == 4
    for f in set(fine[1:]):  # a fine cluster never spans two coarse ones
        assert len(set(coarse[fine == f])) == 1


# ---------------------------------------------------------------- CSMF


def click_run(tmp_path) -> str:
    model = CSMF(N_ITEMS, MAX_LEN, stage="click", hidden=16, layers=1, heads=2, dropout=0.0, n_negatives=8)
    train_steps(model, batch(stars=True), 5)
    torch.save(model.state_dict(), tmp_path / "best.pt")
    return str(tmp_path)


def conversion_model(tmp_path, **kw) -> CSMF:
    return CSMF(N_ITEMS, MAX_LEN, stage="conversion", init_from=click_run(tmp_path), hidden=16, layers=1, heads=2,
                dropout=0.0, n_negatives=8, **kw)


def objective_vectors(model: CSMF, name: str) -> torch.Tensor:
    with model.objective(name):
        return TwoTower.item_vectors(model)


def test_csmf_stage_two_learns_conversion_in_the_freed_entries_and_keeps_click_frozen(tmp_path):
    model = conversion_model(tmp_path, free_ratio=0.3).eval()
    freed = [m for m in model.modules() if isinstance(m, FreedEntries)]
    assert freed and abs(sum(m.free.sum().item() for m in freed) / sum(m.free.numel() for m in freed) - 0.3) < 0.02
    click_before, conv_before = objective_vectors(model, "click"), objective_vectors(model, "conversion")
    assert torch.allclose(click_before, conv_before)  # the cascade: conversion starts from the click network
    train_steps(model.train(), batch(stars=True), 5)
    model.eval()
    assert torch.equal(objective_vectors(model, "click"), click_before)  # click entries frozen
    assert not torch.allclose(objective_vectors(model, "conversion"), conv_before, atol=1e-3)
    for m in freed:  # Δ lives on the freed entries only: one tensor's worth of parameters at serving
        assert (m.delta.detach()[m.free == 0] == 0).all()
    for module in model.modules():  # ... and the click network leaves them at 0: θ_click ⊙ M and Δ ⊙ free share one tensor
        for plist in getattr(module, "parametrizations", {}).values():
            assert (plist.original.detach()[plist[0].free.bool()] == 0).all()


def test_csmf_without_masks_lets_conversion_fine_tuning_move_the_click_vectors(tmp_path):
    model = conversion_model(tmp_path, free_ratio=1.0).eval()
    click_before = objective_vectors(model, "click")
    train_steps(model.train(), batch(stars=True), 5)
    assert not torch.allclose(objective_vectors(model.eval(), "click"), click_before, atol=1e-3)


def test_csmf_scenario_vectors_score_the_weighted_fusion_of_both_objectives(tmp_path):
    model = conversion_model(tmp_path, scenario_weights={"click": [1.0, 0.0], "conversion": [0.3, 2.0]})
    train_steps(model.train(), batch(stars=True), 3)
    model.eval()
    ids = batch()["input_ids"]
    items = model.item_vectors()
    fused = model.user_vectors(ids, scenario="conversion") @ items.T
    scores = {}
    for name in ("click", "conversion"):
        with model.objective(name):
            scores[name] = TwoTower.user_vectors(model, ids) @ TwoTower.item_vectors(model).T
    assert torch.allclose(fused, 0.3 * scores["click"] + 2.0 * scores["conversion"], atol=1e-5)
    assert torch.allclose(model.user_vectors(ids, scenario="click") @ items.T, scores["click"], atol=1e-5)


def test_conversion_objective_counts_only_targets_rated_at_least_the_threshold():
    model = two_tower(min_stars=4)
    b = batch(stars=True)
    _, positives = model.query_targets(b)
    keep = (b["targets"] > 0) & (b["target_stars"] >= 4)
    assert torch.equal(positives, b["targets"][keep])


def test_shared_bottom_adds_heads_per_objective_and_csmf_does_not(tmp_path):
    def serving_size(model):
        return sum(p.numel() for n, p in model.named_parameters() if not n.endswith(".delta"))
    base = serving_size(CSMF(N_ITEMS, MAX_LEN, stage="click", hidden=16, layers=1, heads=2))
    assert serving_size(CSMF(N_ITEMS, MAX_LEN, stage="shared_bottom", hidden=16, layers=1, heads=2)) > base
    assert serving_size(conversion_model(tmp_path)) == base
    with pytest.raises(ValueError, match="init_from"):
        CSMF(N_ITEMS, MAX_LEN, stage="conversion")


def test_movielens_sequences_keep_each_items_stars():
    ml = load_movielens(synthetic=SYNTH)
    data = movielens_sequences(ml)
    assert data.ratings is not None and [len(r) for r in data.ratings] == [len(s) for s in data.sequences]
    assert set(np.concatenate(data.ratings).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
