"""MovieLens' CTR protocol and CoCo: the LLM-knowledge cache and each of CoCo's mechanisms (VQ prompt
choice, gradient masking in the LoRA stage, InfoNCE), pinned by tests that fail when it is switched off.

Data: `synthetic_movielens` (made-up tables in MovieLens' format); the LLM is the bundled SmolLM2 cut
to 2 layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_core import ExperimentConfig, Trainer
from recsys_core.data.ctr import ctr_floors, ctr_from_movielens, load_ctr
from recsys_core.data.movielens import load_movielens
from recsys_core.models.coco import CoCo, KnowledgeCache, build_knowledge_cache
from recsys_core.models.coco.resolution import KnowledgeResolver
from recsys_core.registry import build_model

SMOKE = Path(__file__).resolve().parents[2] / "recsys_core" / "models" / "coco" / "smoke.yaml"
SYNTH = {"users": 30, "movies": 20, "ratings_per_user": 10}


@pytest.fixture(scope="module")
def movielens():
    ml = load_movielens(synthetic=SYNTH)
    return ml, ctr_from_movielens(ml, max_len=8)


@pytest.fixture(scope="module")
def trained_task(tmp_path_factory):
    """The smoke run trained (2 epochs, then one LoRA step per variant): its task (with the knowledge
    cache), model (before the LoRA stage), metrics and folder."""
    root = tmp_path_factory.mktemp("coco")
    cfg = ExperimentConfig.from_yaml(SMOKE, ["train.progress=false", f"task_params.knowledge.root={root / 'kn'}",
                                             "task_params.resolution.steps=1"])
    trainer = Trainer(cfg, root / "run")
    metrics = trainer.fit()
    model = trainer.task.build_model()
    model.load_state_dict(torch.load(trainer.run_dir / "best.pt"))
    return trainer.task, model, metrics, trainer.run_dir


def batch_of(task, split: str = "train", n: int = 64):
    samples = task.data.splits[split]
    return task.data.make_batch(samples, np.arange(min(n, len(samples))))


# ---- data --------------------------------------------------------------------------------------------
def test_movielens_ctr_protocol_labels_history_and_time_split(movielens):
    ml, data = movielens
    assert set(np.unique(ml.labels)) <= {0.0, 1.0}
    np.testing.assert_array_equal(ml.labels, (ml.rating >= 4).astype(np.float32))
    # time-ordered split: nothing in train is later than anything in valid, nor valid than test
    ts = {s: ml.rating_ts[ml.split_of == i] for i, s in enumerate(("train", "valid", "test"))}
    assert ts["train"].max() <= ts["valid"].min() <= ts["valid"].max() <= ts["test"].min()
    # a history holds the user's clicks strictly before the sample, in time order
    test = data.splits["test"]
    for i in range(0, len(test), 7):
        u, cand = test.user[i], test.cand[i]
        hist = data.flat_items[test.hist_start[i]:test.hist_start[i] + test.hist_len[i]]
        r = np.flatnonzero((ml.rating_user == u) & (ml.rating_item == cand) & (ml.split_of == 2))[0]
        earlier = (ml.rating_user == u) & (ml.rating_ts < ml.rating_ts[r]) & (ml.labels > 0)
        assert sorted(hist.tolist()) == sorted(ml.rating_item[earlier].tolist())
    batch = data.make_batch(test, np.arange(4))
    assert batch["user_fields"].shape == (4, 5)
    np.testing.assert_array_equal(batch["user_fields"][:, 0].numpy(), test.user[:4] + 1)  # user id field


def test_movielens_reads_from_a_folder_and_explains_a_missing_one(tmp_path):
    from recsys_core.data.movielens import synthetic_movielens

    tables = synthetic_movielens(users=6, movies=5, ratings_per_user=4)
    for name, frame in tables.items():
        frame = frame.copy()
        frame.columns = [f"{c}:token" for c in frame.columns]
        frame.to_csv(tmp_path / f"ml-1m.{name}", sep="\t", index=False)
    data = load_ctr({"kind": "movielens", "path": str(tmp_path), "max_len": 5})
    assert data.n_samples("train") + data.n_samples("valid") + data.n_samples("test") == 24
    with pytest.raises(FileNotFoundError, match="RecBole-format"):
        load_ctr({"kind": "movielens", "path": str(tmp_path / "nowhere")})


def test_heuristic_floors_rank_liked_genres_above_chance(movielens):
    ml, data = movielens
    from recsys_core.metrics import auc

    floors = ctr_floors(data, "test", match_fields=(1, 2))
    labels = data.splits["test"].label
    assert set(floors) == {"popularity", "attribute_match"}
    # the synthetic users like exactly their favourite genre: matching genres must beat chance
    assert auc(labels, floors["attribute_match"]) > 0.6


# ---- the knowledge cache -----------------------------------------------------------------------------
def test_knowledge_cache_is_built_once_and_reproduces_the_top_block(tmp_path):
    items = ["", "Movie: The Night River (1981). Genres: Drama.", "Movie: Star Road (1990). Genres: Action."]
    users = [["User profile: female.", " Star Road (1990) rated 5/5;"], ["User profile: male. No ratings yet."]]
    cache = build_knowledge_cache(items, users, tmp_path / "kn", n_layers=2, progress=False)
    assert cache.item_states.shape == (3, 576) and not cache.item_states[0].any()
    assert cache.user_states.shape == (2, 2, 576)
    np.testing.assert_array_equal(cache.user_mask, [[True, True], [True, False]])
    assert np.abs(cache.user_states[0, 0] - cache.user_states[0, 1]).max() > 1e-3  # segments differ
    again = build_knowledge_cache(items, users, tmp_path / "kn", n_layers=2, progress=False)  # no LLM pass
    np.testing.assert_array_equal(again.user_states, cache.user_states)
    loaded = KnowledgeCache.load(tmp_path / "kn", with_trunk=True)
    assert loaded.user_offsets[-1] == len(loaded.user_trunk) == len(loaded.user_token_segments)


# ---- CoCo --------------------------------------------------------------------------------------------
def test_coco_trains_end_to_end_and_saves_test_predictions(trained_task):
    task, model, metrics, run_dir = trained_task
    assert 0.0 <= metrics["test"]["auc"] <= 1.0 and np.isfinite(metrics["test"]["logloss"])
    preds = np.load(run_dir / "test_pred.npy")
    assert len(preds) == task.data.n_samples("test") == len(np.load(run_dir / "test_users.npy"))
    assert len(metrics["prompt_usage"]) == 4


def test_users_pick_different_prompts_and_the_prompt_changes_their_knowledge(trained_task):
    """Switching the codebook off (one prompt for all) fails this test."""
    task, model, _, _ = trained_task
    model.eval()
    batch = batch_of(task, "train", 200)
    query = model.user_query(model.user_representation(batch))
    _, codes, _ = model.choose_prompt(query)
    assert len(torch.unique(codes)) >= 2, "every user chose the same prompt"
    keys, mask = model.user_keys[batch["user"]], model.user_mask[batch["user"]]
    own = model.read_knowledge(model.prompts[codes], keys, mask)
    other = model.read_knowledge(model.prompts[(codes + 1) % len(model.prompts)], keys, mask)
    assert (own - other).abs().max() > 1e-4  # which prompt a user reads with changes its knowledge


def test_vq_prompt_gets_the_users_gradient_and_a_commitment_loss():
    model = CoCo([5, 3], max_len=4, user_field_vocab_sizes=[4], backbone="deepfm",
                 backbone_params={"deepfm": {"embed_dim": 4, "mlp_hidden": [8]}}, prompt_codebook_size=3,
                 prompt_tokens=1, attention_dim=4, proj_dim=4,
                 knowledge={"item_states": np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32),
                            "user_states": np.random.default_rng(1).normal(size=(4, 2, 8)).astype(np.float32),
                            "user_mask": np.ones((4, 2), dtype=bool)})
    query = torch.randn(6, 4, requires_grad=True)
    prompt, code, vq = model.choose_prompt(query)
    torch.testing.assert_close(prompt.detach(), model.prompts[code].detach())  # forward value = the prompt
    (prompt.sum() + vq.sum()).backward()
    assert query.grad is not None and query.grad.abs().sum() > 0  # straight-through + commitment
    assert model.prompts.grad is not None and model.prompts.grad.abs().sum() > 0  # codebook loss


def test_infonce_aligns_user_and_item_knowledge(trained_task):
    """Switching the InfoNCE term off fails this test."""
    task, model, _, _ = trained_task
    model.eval()  # no knowledge dropout: the two losses see the same prediction
    batch = batch_of(task, "train", 200)
    with torch.no_grad():
        plain = CoCo.loss.__get__(model)
        weight = model.infonce_weight
        with_term = plain(batch)
        model.infonce_weight = 0.0
        without = plain(batch)
        model.infonce_weight = weight
        k_user, k_item, _ = model.knowledge_vectors(batch)
        align = model.alignment_loss(k_user, k_item, batch)
    assert weight > 0 and float(align) > 0
    torch.testing.assert_close(with_term - without, weight * align)


def test_gradient_masking_sends_llm_gradients_only_through_samples_where_knowledge_hurts(trained_task):
    """Switching the masking off fails this test: the LoRA weights then learn from every sample."""
    task, model, _, _ = trained_task
    from peft import LoraConfig, inject_adapter_in_model

    resolver = KnowledgeResolver(task, {"rank": 2})
    llm = resolver.llm()
    inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]), llm.top)
    with torch.no_grad():  # LoRA B starts at 0; give it weight so its A receives gradient
        for name, p in llm.top.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)
    lora = [p for n, p in llm.top.named_parameters() if "lora_" in n]
    for p in lora:
        p.requires_grad_(True)
    model.eval()
    samples = task.data.splits["train"]
    batch = task.data.make_batch(samples, np.arange(len(samples)))
    users = np.unique(samples.user)
    row = torch.from_numpy(np.searchsorted(users, samples.user))

    def lora_grad(index: torch.Tensor, masking: bool) -> float:
        part = {k: v[index] for k, v in batch.items()}
        keys_u, mask_u = resolver.user_states(llm, users, model)
        keys, hurts = resolver.masked_keys(model, part, keys_u[row[index]], mask_u[row[index]], masking)
        for p in lora:
            p.grad = None
        model.loss(part, user_keys=keys, user_mask=mask_u[row[index]]).backward()
        return hurts, sum(float(p.grad.abs().sum()) for p in lora if p.grad is not None)

    everything = torch.arange(len(samples))
    hurts, _ = lora_grad(everything, True)
    assert 0 < int(hurts.sum()) < len(hurts), "need samples where knowledge helps and where it hurts"
    helped = everything[~hurts]
    _, grad_masked = lora_grad(helped, True)
    _, grad_unmasked = lora_grad(helped, False)
    assert grad_masked == 0.0, "the LLM learned from samples its knowledge helps"
    assert grad_unmasked > 0.0
    _, grad_hurt = lora_grad(everything[hurts], True)
    assert grad_hurt > 0.0


def test_lora_stage_runs_both_variants_from_the_same_start(trained_task):
    _, _, metrics, run_dir = trained_task
    res = metrics["resolution"]
    assert set(res) == {"masked", "unmasked"}
    assert res["masked"]["history"][0] == res["unmasked"]["history"][0]  # same starting point
    assert res["masked"]["gradient_masking"] and not res["unmasked"]["gradient_masking"]
    assert 0.0 <= res["masked"]["hurt_share"] <= 1.0
    assert len(np.load(run_dir / "test_pred_masked.npy")) == len(np.load(run_dir / "test_pred.npy"))


def test_backbones_take_user_fields_and_knowledge_fields():
    batch = {"hist_fields": torch.tensor([[[1, 2], [2, 1]], [[0, 0], [3, 1]]]), "cand_fields": torch.tensor([[2, 1], [1, 2]]),
             "user_fields": torch.tensor([[1, 2], [2, 1]]), "label": torch.tensor([1.0, 0.0])}
    for name, params in (("din", {"attention_hidden": [8], "mlp_hidden": [8]}), ("deepfm", {"mlp_hidden": [8]})):
        model = build_model(name, {"embed_dim": 4, **params}, field_vocab_sizes=[4, 3], max_len=2,
                            user_field_vocab_sizes=[3, 3], n_extra_fields=2).eval()
        extra = torch.randn(2, 2, 4)
        a, b = model(batch, extra), model(batch, extra * 2)
        assert a.shape == (2,) and (a - b).abs().max() > 0  # knowledge reaches the prediction
        other_user = dict(batch, user_fields=torch.tensor([[2, 1], [1, 2]]))
        assert (model(other_user, extra) - a).abs().max() > 0  # so do the user fields
        with pytest.raises(ValueError, match="extra"):
            model(batch)


def test_a_training_sample_never_reads_its_own_rating_or_later_ones(trained_task):
    """The user text lists training-period ratings; a sample sees only the segments older than itself."""
    task, model, _, _ = trained_task
    ml = task.movielens
    train = task.data.splits["train"]
    times = ml.segment_times(int(task.knowledge_settings["recent"]))
    seen_rows = {u: rows for u, rows in enumerate(ml.context_ratings(int(task.knowledge_settings["recent"])))}
    checked = 0
    for i in range(len(train)):
        u, ts = train.user[i], train.ts[i]
        own = np.flatnonzero((ml.rating_user == u) & (ml.rating_item == train.cand[i]) & (ml.rating_ts == ts))
        if not set(own) & set(seen_rows[u]):
            continue  # this sample's rating is not in the user's text
        visible = (times[u] < ts) & model.user_mask[u].numpy()
        listed = [r for r in seen_rows[u] if ml.rating_ts[r] >= ts]
        assert visible[0] and visible.sum() == 1 + len(seen_rows[u]) - len(listed)
        checked += 1
    assert checked > 0
    # and the model applies it: a batch's knowledge mask hides exactly those segments
    batch = task.data.make_batch(train, np.arange(len(train)))
    k_all, _, _ = model.eval().knowledge_vectors({k: v for k, v in batch.items() if k != "ts"})
    k_past, _, _ = model.knowledge_vectors(batch)
    assert (k_all - k_past).abs().max() > 1e-5
