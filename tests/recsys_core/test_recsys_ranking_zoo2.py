"""Ranking zoo II: each paper mechanism is pinned by a test that fails when the mechanism is switched off
(low-rank target attention, HeterRec, GSVR, DMAE, CDAnet), and the MovieLens pieces they stand on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys_core.data.ctr import ctr_from_movielens, load_ctr
from recsys_core.data.movielens import GENRE_GROUPS, genre_group_table, load_movielens, movielens_sequences
from recsys_core.models.cdanet.model import CDAnet
from recsys_core.models.dmae.model import DMAE
from recsys_core.models.gsvr.model import GSVR
from recsys_core.models.heterrec.model import HeterRec, item_token_table
from recsys_core.models.lrta.model import LowRankTargetAttention

SYNTH = {"users": 60, "movies": 40, "ratings_per_user": 20}
FIELDS = [41, 5, 5, 5]  # movie, genre1, genre2, year5 (the synthetic MovieLens sizes are smaller: ids fit)
USER_FIELDS = [61, 3, 4, 22, 60]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def ctr_batch(n: int = 32, length: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hist = torch.stack([torch.randint(1, s, (n, length), generator=g) for s in FIELDS], -1)
    hist[: n // 4, : length // 2] = 0  # some left padding
    hist[-1] = 0  # one user without history
    cand = torch.stack([torch.randint(1, s, (n,), generator=g) for s in FIELDS], -1)
    users = torch.stack([torch.randint(1, s, (n,), generator=g) for s in USER_FIELDS], -1)
    return {"hist_fields": hist, "cand_fields": cand, "user_fields": users,
            "label": torch.randint(0, 2, (n,), generator=g).float()}


def train_steps(model: torch.nn.Module, batch: dict[str, torch.Tensor], steps: int) -> None:
    """`steps` Adam steps (lr 0.01) of the model's own loss on one batch."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()


# ---------------------------------------------------------------- data


def test_user_sample_keeps_that_many_users_the_same_for_every_run():
    a = load_movielens(synthetic=SYNTH, user_sample=10)
    b = load_movielens(synthetic=SYNTH, user_sample=10)
    assert len(np.unique(a.rating_user)) == 10 and np.array_equal(a.rating_user, b.rating_user)
    assert a.n_users == 60  # ids and vocab sizes stay those of the full table
    with pytest.raises(ValueError, match="user_sample"):
        load_movielens(synthetic=SYNTH, user_sample=-3)


def test_genre_groups_cover_every_movielens_genre_once():
    names = ['Action', 'Adventure', 'Animation', "Children's", 'Comedy', 'Crime', 'Documentary', 'Drama', 'Fantasy',
             'Film-Noir', 'Horror', 'Musical', 'Mystery', 'Romance', 'Sci-Fi', 'Thriller', 'War', 'Western']
    members = [g for group in GENRE_GROUPS.values() for g in group]
    assert sorted(members) == sorted(names)
    table = genre_group_table(names)
    assert list(GENRE_GROUPS)[table[names.index("Animation") + 1]] == "family"
    assert list(GENRE_GROUPS)[table[names.index("Horror") + 1]] == "horror"


def test_candidate_groups_filter_train_and_eval_separately():
    ml = load_movielens(synthetic=SYNTH)
    full = ctr_from_movielens(ml, max_len=8)
    action = list(GENRE_GROUPS).index("action")
    target = ctr_from_movielens(ml, max_len=8, candidate_groups=["action"])
    assert all((target.item_group[s.cand] == action).all() for s in target.splits.values())
    assert len(target.splits["train"]) < len(full.splits["train"])
    mixed = ctr_from_movielens(ml, max_len=8, eval_candidate_groups=["action"])
    assert len(mixed.splits["train"]) == len(full.splits["train"])
    assert (mixed.item_group[mixed.splits["test"].cand] == action).all()
    # histories keep every click: the same sample has the same history with or without the filter
    keep = full.item_group[full.splits["test"].cand] == action
    assert np.array_equal(full.splits["test"].hist_len[keep], mixed.splits["test"].hist_len)
    with pytest.raises(ValueError, match="unknown groups"):
        load_ctr({"kind": "movielens", "synthetic": SYNTH, "candidate_groups": ["westerns"]})


def test_movielens_sequences_are_time_ordered_with_genre_and_year_attributes():
    ml = load_movielens(synthetic=SYNTH)
    data = movielens_sequences(ml)
    assert data.n_users == 60 and sum(len(s) for s in data.sequences) == len(ml.rating)
    first_user = ml.rating_item[ml.rating_user == 0]  # ratings are stored in time order
    assert np.array_equal(data.sequences[0], first_user)
    genres = len(ml.genre_names)
    for item in (1, 7):
        attrs = data.item_attributes[item]
        assert [ml.genre_names[a - 1] for a in attrs[:-1]] == ml.genres[item] and attrs[-1] > genres
    assert data.item_text[1].startswith(ml.titles[1])


# ---------------------------------------------------------------- low-rank target attention


def test_lrta_prestored_absorbed_serving_equals_the_training_forward():
    model = LowRankTargetAttention(FIELDS, max_len=300, rank=4, user_field_vocab_sizes=USER_FIELDS).eval()
    with torch.no_grad():  # weights large enough that the attention is far from uniform
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    batch = ctr_batch(n=3, length=300)
    cands = ctr_batch(n=9, seed=1)["cand_fields"]
    stored = model.prestore(batch["hist_fields"])
    assert stored["keys"].shape == (3, 4, model.item_dim)  # r slots per user, whatever the history length
    for u in range(3):
        served = model.score_prestored(stored, u, cands, batch["user_fields"][u:u + 1])
        trained = model({"hist_fields": batch["hist_fields"][u:u + 1].expand(9, -1, -1), "cand_fields": cands,
                         "user_fields": batch["user_fields"][u:u + 1].expand(9, -1)})
        torch.testing.assert_close(served, trained, atol=1e-5, rtol=1e-5)


def test_lrta_rank_zero_is_full_attention_and_has_no_serving_shortcut():
    model = LowRankTargetAttention(FIELDS, max_len=12, rank=0, user_field_vocab_sizes=USER_FIELDS)
    assert not hasattr(model, "slots")
    with pytest.raises(ValueError, match="rank 0"):
        model.prestore(ctr_batch()["hist_fields"])


@torch.no_grad()
def _attention_gap(model: LowRankTargetAttention, batch) -> float:
    hist, cand, mask = model._embed(batch)
    has = mask.any(-1, keepdim=True).expand(-1, model.rank)
    low = model.attend(cand, model.compress(hist, mask), has)
    return float((low - model.attend(cand, hist, mask)).pow(2).sum(-1).mean())


def test_nonlinearity_preserving_loss_pulls_the_low_rank_attention_to_the_full_one():
    batch = ctr_batch(n=64, length=40)
    gaps = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = LowRankTargetAttention(FIELDS, max_len=40, rank=2, approx_weight=weight,
                                       user_field_vocab_sizes=USER_FIELDS)
        train_steps(model, batch, 60)
        gaps[weight] = _attention_gap(model, batch)
    assert gaps[1.0] < 0.5 * gaps[0.0], gaps


# ---------------------------------------------------------------- HeterRec


def heterrec(**kw) -> HeterRec:
    attrs = [[]] + [[1 + i % 3, 4 + i % 2] for i in range(1, 21)]
    params = {"hidden": 16, "layers": 1, "heads": 2, "dropout": 0.0, **kw}
    return HeterRec(20, 10, item_token_table(attrs, 2), n_attributes=6, **params).eval()


def test_item_token_table_flattens_id_and_attributes():
    table = item_token_table([[], [3, 3, 5, 7], [2]], max_attributes=2)
    assert table.tolist() == [[0, 0, 0], [1, 3, 5], [2, 2, 0]]


def test_htfl_items_are_their_attribute_tokens_too():
    """Same id, other attributes -> another item vector (HTFL); id-only tokens ignore the attributes."""
    for heterogeneous in (True, False):
        model = heterrec(heterogeneous=heterogeneous)
        before = model.encode_items(torch.tensor([5]))
        model.item_tokens[5, 1:] = torch.tensor([1, 4])[: model.item_tokens.shape[1] - 1]  # was [3, 5]
        changed = not torch.allclose(before, model.encode_items(torch.tensor([5])))
        assert changed == heterogeneous


def test_token_level_attention_makes_item_vectors_more_than_a_sum_of_tokens():
    """Without token-level attention an item is the mean of its token embeddings: swapping attribute a for b
    moves every item by the same vector. Token attention makes the move depend on the item's other tokens."""
    for token_attention in (True, False):
        model = heterrec(token_attention=token_attention)
        vec = {}
        for item in (3, 4):
            for attr in (1, 2):
                model.item_tokens[item, 1:] = torch.tensor([attr, 6])
                vec[item, attr] = model.encode_items(torch.tensor([item]))
        moves_differ = not torch.allclose(vec[3, 1] - vec[3, 2], vec[4, 1] - vec[4, 2], atol=1e-6)
        assert moves_differ == token_attention


def test_lmp_trains_the_state_on_the_items_two_and_three_steps_ahead():
    """With predict_steps > 1 the state at position t is also trained towards the items at t+2, t+3: switching
    LMP off (predict_steps=1) leaves the loss blind to a target that is no state's next item."""
    targets = torch.tensor([[0, 0, 2, 3, 4]])
    # the last position holds no real input: its target (4) is nobody's next item, only the item two steps
    # after input 1 and three steps after... (positions 3 and 2)
    masked_inputs = torch.tensor([[0, 0, 1, 2, 0]])
    assert heterrec(predict_steps=3).step_weights().tolist() == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    for steps, sees in ((3, True), (1, False)):
        model = heterrec(predict_steps=steps)
        a = model.loss({"input_ids": masked_inputs, "targets": targets})
        changed = targets.clone()
        changed[0, -1] = 11
        b = model.loss({"input_ids": masked_inputs, "targets": changed})
        assert (not torch.allclose(a, b)) == sees


# ---------------------------------------------------------------- GSVR


def gsvr(**kw) -> GSVR:
    item_group = np.arange(FIELDS[0]) % 5
    return GSVR(FIELDS, 12, item_group, 5, user_field_vocab_sizes=USER_FIELDS, embed_dim=8, latent_dim=4,
                prototypes=4, mlp_hidden=(16, 8), **kw)


def test_gsvr_samples_scenario_posteriors_while_training_and_uses_means_at_inference():
    model, batch = gsvr(), ctr_batch()
    model.train()
    assert not torch.allclose(model(batch), model(batch))
    model.eval()
    assert torch.allclose(model(batch), model(batch))
    base = gsvr(variational=False).train()
    assert torch.allclose(base(batch), base(batch))  # the multi-scenario base is deterministic


def test_gsvr_posteriors_are_scenario_specific():
    """A user's posterior in one scenario moves only the samples of that scenario."""
    model, batch = gsvr().eval(), ctr_batch(n=2)
    moved = {k: v.clone() for k, v in batch.items()}
    moved["cand_fields"][:, 0] = (batch["cand_fields"][:, 0] % 40) + 1  # the next movie id: the next scenario
    scen_a = model.scenario_of(batch)
    assert (scen_a != model.scenario_of(moved)).all()
    before_a, before_b = model(batch), model(moved)
    with torch.no_grad():
        model.user_posterior.mu.weight[scen_a * model.user_posterior.rows + batch["user_fields"][:, 0]] += 5.0
    assert not torch.allclose(model(batch), before_a)
    assert torch.allclose(model(moved), before_b)


def test_global_prior_is_knowledge_aware_and_standard_prior_is_not():
    """KL's pull on a posterior mean points at the prior mean: the global prior's depends on the user's
    global (profile) embedding, the standard prior's is 0 for everyone."""
    for prior in ("global", "standard"):
        model = gsvr(prior=prior, kl_weight=1.0).eval()
        with torch.no_grad():
            model.user_posterior.mu.weight.zero_()
        batch = ctr_batch(n=8)
        model.zero_grad()
        model(batch)
        model.last_kl.sum().backward()
        scenario = model.scenario_of(batch)
        rows = scenario * model.user_posterior.rows + batch["user_fields"][:, 0]
        pull = model.user_posterior.mu.weight.grad[rows]  # = mu - prior mean = -prior mean
        if prior == "global":
            assert pull.abs().sum() > 0 and not torch.allclose(pull[0], pull[1])
            assert model.user_features.tables[1].weight.grad is not None  # the prior reads the profile
        else:
            assert pull.abs().sum() == 0


# ---------------------------------------------------------------- DMAE


def dmae(**kw) -> DMAE:
    text = torch.randn(FIELDS[0], 24).numpy()
    return DMAE(FIELDS, 12, user_field_vocab_sizes=USER_FIELDS, item_text_vectors=text, embed_dim=8,
                latent_dim=4, mlp_hidden=(16,), **kw)


def test_dmae_text_modality_enters_the_prediction():
    batch = ctr_batch()
    for modalities, reads_text in ((("behaviour", "attributes", "text"), True), (("behaviour", "attributes"), False)):
        model = dmae(modalities=modalities).eval()
        if not reads_text:
            assert not hasattr(model, "text_vectors")
            continue
        before = model(batch)
        with torch.no_grad():
            model.text_vectors[batch["cand_fields"][:, 0]] += 1.0
        assert not torch.allclose(before, model(batch))


def test_distribution_guidance_brings_the_modalities_attention_together():
    batch = ctr_batch(n=64, length=16)
    disagreement = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = dmae(guide_weight=weight)
        train_steps(model, batch, 40)
        model.eval()
        model(batch)
        with torch.no_grad():
            disagreement[weight] = float(model.guidance_loss(model.aux["distributions"], model.aux["mask"]))
    assert disagreement[1.0] < 0.5 * disagreement[0.0], disagreement


def test_dmae_auto_encoder_rebuilds_every_modality_interest():
    batch = ctr_batch(n=64, length=16)
    errors = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = dmae(recon_weight=weight)
        train_steps(model, batch, 40)
        model.eval()
        model(batch)
        joint = model.aux["joint"].detach()
        errors[weight] = float((model.aux["recon"].detach() - joint).pow(2).sum() / joint.pow(2).sum())
    assert errors[1.0] < 0.5 * errors[0.0], errors


# ---------------------------------------------------------------- CDAnet


def cdanet(stage: str, **kw) -> CDAnet:
    item_domain = np.arange(FIELDS[0]) % 3 == 0  # every third movie is in the target domain
    return CDAnet(FIELDS, 12, item_domain, user_field_vocab_sizes=USER_FIELDS, stage=stage, embed_dim=8,
                  latent_dim=8, mlp_hidden=(16,), **kw)


def test_cross_supervision_trains_the_translator_through_the_own_domain_label():
    batch = ctr_batch()
    for cross, trains in ((True, True), (False, False)):
        model = cdanet("translation", cross_supervision=cross, align_weight=0.0)
        model.loss(batch).backward()
        grad = model.to_target[0].weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == trains


def _translation_run(tmp_path, model: CDAnet):
    import yaml

    run = tmp_path / "translation"
    run.mkdir()
    torch.save(model.state_dict(), run / "best.pt")
    params = {"stage": "translation", "embed_dim": 8, "latent_dim": 8}
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "cdanet", "model_params": params}))
    return str(run)


def test_augmentation_reads_the_source_domain_only_through_the_frozen_translation(tmp_path):
    run = _translation_run(tmp_path, cdanet("translation"))
    batch = ctr_batch(n=16)
    batch["cand_fields"][:, 0] = 3  # a target-domain candidate
    source_only = {k: v.clone() for k, v in batch.items()}
    hist_items = source_only["hist_fields"][..., 0]
    in_source = (hist_items % 3 != 0) & (hist_items > 0)
    source_only["hist_fields"][..., 0] = torch.where(in_source, (hist_items % 39) + 1, hist_items)
    source_only["hist_fields"][..., 0] = torch.where(
        in_source & (source_only["hist_fields"][..., 0] % 3 == 0), 2, source_only["hist_fields"][..., 0])
    for init_from, sees_source in ((run, True), (None, False)):
        model = cdanet("augmentation", init_from=init_from).eval()
        changed = not torch.allclose(model(batch), model(source_only))
        assert changed == sees_source
    model = cdanet("augmentation", init_from=run).train()
    frozen = [p.clone() for p in model.translation.parameters()]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.loss(batch).backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.translation.parameters(), strict=True))


def test_augmentation_refuses_a_run_that_is_not_a_translation_stage(tmp_path):
    import yaml

    run = tmp_path / "other"
    run.mkdir()
    torch.save({}, run / "best.pt")
    (run / "config.yaml").write_text(yaml.safe_dump({"model_params": {"stage": "augmentation"}}))
    with pytest.raises(ValueError, match="translation-stage"):
        cdanet("augmentation", init_from=str(run))
    with pytest.raises(FileNotFoundError):
        cdanet("augmentation", init_from=str(tmp_path / "missing"))


def test_cdanet_stage_two_trains_on_a_finished_stage_one_run_and_reloads(tmp_path):
    from recsys_core import ExperimentConfig, Trainer, load_run
    from recsys_core.registry import MODELS_DIR

    smoke = MODELS_DIR / "cdanet" / "smoke.yaml"
    Trainer(ExperimentConfig.from_yaml(smoke, ["train.epochs=1"]), tmp_path / "stage1").fit()
    stage2 = ExperimentConfig.from_yaml(smoke, ["train.epochs=1", "model_params.stage=augmentation",
                                                f"model_params.init_from={tmp_path / 'stage1'}",
                                                "data.candidate_groups=[action, comedy]"])
    result = Trainer(stage2, tmp_path / "stage2").fit()
    assert np.isfinite(result["test"]["auc"]) and result["init"]["init_from"] == str(tmp_path / "stage1")
    _, task, model = load_run(tmp_path / "stage2")
    assert model.translation is not None and not any(p.requires_grad for p in model.translation.parameters())
    assert all(task.data.item_group[task.data.splits["train"].cand] <= 1)  # target samples only (action, comedy)
