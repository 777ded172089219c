"""Ranking zoo I: the shared FeatureEmbedding, and each mechanism of STORE, SGCTR, DGenCTR and MATT.

Each mechanism test fails when its mechanism is switched off (checked by hand: see the closing note of
the issue): STORE's semantic tokens, rotation and token filter; SGCTR's masked generative training and
inference-time refinement; DGenCTR's pre-training and its transfer; MATT's sketches and inference paths.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys_core.config import ExperimentConfig
from recsys_core.data.ctr import ctr_floors, load_ctr
from recsys_core.layers import FeatureEmbedding
from recsys_core.metrics import auc
from recsys_core.models.matt.model import CountMinSketches
from recsys_core.models.store import behaviour_codes
from recsys_core.registry import MODELS_DIR, get_task
from recsys_core.trainer import Trainer, load_run

ML_SYNTHETIC = {"kind": "movielens", "max_len": 8, "synthetic": {"users": 60, "movies": 40, "ratings_per_user": 20}}
SEQ_SYNTHETIC = {"kind": "sequences", "source": "synthetic", "users": 200, "items": 60, "max_len": 12}


def _cfg(model: str, data: dict | None = None, *overrides: str, config: str = "smoke.yaml") -> ExperimentConfig:
    sets = ["train.progress=false", *overrides]
    if data is not None:
        sets.append(f"data={data}")
    return ExperimentConfig.from_yaml(MODELS_DIR / model / config, sets)


def _task_and_model(cfg: ExperimentConfig):
    task = get_task(cfg.task)(cfg)
    torch.manual_seed(0)
    return task, task.build_model()


def _batch(task, split: str = "test", n: int = 64) -> dict:
    return next(iter(task.data.eval_batches(split, n)))


# ---- FeatureEmbedding ------------------------------------------------------------------------------
def test_feature_embedding_pads_with_zeros_checks_fields_and_handles_empty_groups():
    emb = FeatureEmbedding([5, 3], 4, first_order=True)
    ids = torch.tensor([[0, 0], [4, 2]])
    vectors = emb(ids)
    assert vectors.shape == (2, 2, 4) and torch.all(vectors[0] == 0)
    assert emb.flat(ids).shape == (2, 8) and torch.allclose(emb.summed(ids), vectors.sum(1))
    assert emb.linear(ids).shape == (2, 2)
    with pytest.raises(ValueError, match="expected 2 fields"):
        emb(torch.zeros(2, 3, dtype=torch.long))
    empty = FeatureEmbedding([], 4)
    assert empty.of_batch({"cand_fields": ids}).shape == (2, 0, 4)
    with pytest.raises(ValueError, match="lacks `user_fields`"):
        FeatureEmbedding([3], 4).of_batch({"cand_fields": ids})
    with pytest.raises(ValueError, match="vocab_size"):
        FeatureEmbedding([0], 4)


@pytest.mark.parametrize("model", ["din", "deepfm", "gpsd", "store", "sgctr", "dgenctr"])
def test_every_ctr_model_looks_its_fields_up_through_the_shared_feature_embedding(model):
    cfg = _cfg(model, ML_SYNTHETIC if model not in ("gpsd",) else None, "model_params.objective=ctr"
               if model == "dgenctr" else "train.epochs=1", *(["task=ctr"] if model == "dgenctr" else []))
    task, net = _task_and_model(cfg)
    owned = {id(m) for fe in net.modules() if isinstance(fe, FeatureEmbedding) for m in fe.modules()}
    assert owned, f"{model} has no FeatureEmbedding"
    field_vocab = set(task.data.field_vocab_sizes) | set(getattr(task.data, "user_field_vocab_sizes", []))
    for name, m in net.named_modules():
        if isinstance(m, torch.nn.Embedding) and m.num_embeddings in field_vocab and m.embedding_dim > 1:
            assert id(m) in owned, f"{model}.{name} is a field table outside the shared FeatureEmbedding"


def test_runs_saved_before_the_shared_feature_embedding_still_load():
    from recsys_core.models.deepfm.model import DeepFM
    from recsys_core.models.gpsd.model import GPSDRanker

    deepfm = DeepFM([10, 4], max_len=5, embed_dim=4, user_field_vocab_sizes=[3])
    old = {k.replace("user_features.tables", "user_embeddings").replace("user_features.first_order", "user_first_order")
           .replace("features.tables", "embeddings").replace("features.first_order", "first_order"): v
           for k, v in deepfm.state_dict().items()}
    assert "embeddings.0.weight" in old and "user_first_order.0.weight" in old
    fresh = DeepFM([10, 4], max_len=5, embed_dim=4, user_field_vocab_sizes=[3])
    fresh.load_state_dict(old)
    assert torch.equal(fresh.features.tables[1].weight, deepfm.features.tables[1].weight)
    gpsd = GPSDRanker([10, 4], max_len=5, hidden=8, layers=1, heads=2)
    old = {k.replace("features.tables.0", "item_embeddings").replace("features.tables.1", "field_embeddings.0"): v
           for k, v in gpsd.state_dict().items()}
    fresh = GPSDRanker([10, 4], max_len=5, hidden=8, layers=1, heads=2)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.item_embeddings.weight, gpsd.item_embeddings.weight)


# ---- floors ----------------------------------------------------------------------------------------
def test_ctr_floors_rank_popular_and_matching_candidates_above_chance():
    data = load_ctr(SEQ_SYNTHETIC)
    labels = data.splits["test"].label
    floors = ctr_floors(data, "test")
    assert set(floors) == {"popularity", "attribute_match"}
    assert len(floors["popularity"]) == len(labels)
    # synthetic users walk within their favourite categories: the category match must beat chance
    assert auc(labels, floors["attribute_match"]) > 0.6


# ---- STORE -----------------------------------------------------------------------------------------
def test_behaviour_codes_give_twins_one_code_and_unseen_ids_code_zero():
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for item in range(1, 41):
        group = (item - 1) // 10  # four behaviour groups of ten items, each clicked by its own users
        users = rng.choice(np.arange(group * 25, group * 25 + 25), 8, replace=False)
        rows += [item] * 8
        cols += list(users)
    rows += [41] * 8  # item 41 behaves exactly like item 40
    cols += cols[-8:]
    codes = behaviour_codes(np.array(rows), np.array(cols), 43, svd_dim=8, levels=2, codebook_size=4)
    assert codes.shape == (43, 2)
    assert (codes[0] == 0).all() and (codes[42] == 0).all(), "ids never seen get the unknown code"
    assert (codes[41] == codes[40]).all()
    first = codes[1:41, 0].reshape(4, 10)
    assert all(len(set(row)) == 1 for row in first) and len({row[0] for row in first}) == 4


def test_store_semantic_tokens_share_capacity_between_ids_that_behave_alike():
    task, net = _task_and_model(_cfg("store", None, "train.epochs=1"))
    codes = getattr(net, f"codes_field{net.n_user}")  # the movie id: the first item field, after the user fields
    ids = codes.new_tensor(range(len(codes)))
    twins = [(a, b) for a in ids[1:] for b in ids[1:] if a < b and torch.equal(codes[a], codes[b])]
    assert twins, "the synthetic catalogue should have items with identical behaviour codes"
    a, b = twins[0]
    batch = _batch(task)
    twin_a, twin_b = dict(batch), dict(batch)
    twin_a["cand_fields"] = batch["cand_fields"].clone()
    twin_b["cand_fields"] = batch["cand_fields"].clone()
    twin_a["cand_fields"][:, 0], twin_b["cand_fields"][:, 0] = a, b
    twin_b["cand_fields"][:, 1] = twin_a["cand_fields"][:, 1] = 1
    net.eval()
    with torch.no_grad():
        assert torch.allclose(net(twin_a), net(twin_b), atol=1e-6)


def test_store_rotation_is_orthogonal_keeps_norms_and_changes_the_static_basis():
    task, net = _task_and_model(_cfg("store", None, "train.epochs=1"))
    assert net.rotation is not None and net.static, "the static fields must be rotated"
    q = net.rotation.weight
    assert torch.allclose(q @ q.T, torch.eye(len(q)), atol=1e-5)
    assert not torch.allclose(q, torch.eye(len(q)), atol=1e-2)
    batch = _batch(task)
    ids = torch.cat([batch["user_fields"], batch["cand_fields"]], 1)
    raw = torch.cat([net._field_tokens(i, ids[:, i]) for i in net.static], 1)
    with torch.no_grad():
        tokens = net.sample_tokens(batch)
    rotated = torch.cat([tokens[:, _token_index(net, i)] for i in net.static], 1)
    assert torch.allclose(rotated.flatten(1).norm(dim=1), raw.flatten(1).norm(dim=1), atol=1e-4)
    assert not torch.allclose(rotated, raw, atol=1e-3)


def _token_index(net, field: int) -> slice:
    start = sum(net.code_levels if (net.semantic_tokens and i in net.tokenized) else 1 for i in range(field))
    width = net.code_levels if (net.semantic_tokens and field in net.tokenized) else 1
    return slice(start, start + width)


def test_the_filter_reads_the_attention_the_first_layer_really_pays():
    from recsys_core.layers.field_transformer import TokenEncoderLayer

    torch.manual_seed(0)
    layer = TokenEncoderLayer(32, 4).eval()
    x, pad = torch.randn(3, 7, 32), torch.zeros(3, 7, dtype=torch.bool)
    pad[0, 5:] = True
    h = layer.attn_norm(x)
    _, weights = layer.attn(h, h, h, key_padding_mask=pad, need_weights=True, average_attn_weights=True)
    _, cls = layer(x, pad, cls_weights=True)
    assert torch.allclose(cls, weights[:, 0], atol=1e-6) and torch.all(cls[0, 5:] == 0)


def test_store_filters_low_contribution_tokens_after_the_first_layer():
    task, net = _task_and_model(_cfg("store", None, "train.epochs=1"))
    seen = []
    net.layers[1].register_forward_hook(lambda m, inputs, out: seen.append((inputs[0].shape[1], inputs[1])))
    batch = _batch(task)
    n_tokens = 1 + net.n_sample_tokens + batch["hist_fields"].shape[1]
    net.eval()
    with torch.no_grad():
        net(batch)
    kept, pad = seen[0]
    assert kept == 1 + math.ceil(net.keep_ratio * (n_tokens - 1)) < n_tokens
    real = net.n_sample_tokens + (batch["hist_fields"] > 0).any(-1).sum(1)
    # a padded behaviour is kept only when there are fewer real tokens than places
    assert torch.all(pad.sum(1) == (kept - 1 - real).clamp(min=0))


# ---- SGCTR -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sgctr_run(tmp_path_factory):
    cfg = _cfg("sgctr", SEQ_SYNTHETIC, "train.epochs=6", "train.lr=0.01", "model_params.mask_rate=0.3",
               "model_params.generative_weight=1.0")
    run = tmp_path_factory.mktemp("sgctr")
    result = Trainer(cfg, run).fit()
    return (*load_run(run)[1:], result)


def test_sgctr_generative_training_learns_which_category_fits_the_item(sgctr_run):
    task, net, _ = sgctr_run
    enc = net.encoder
    batch = _batch(task, n=256)
    ids = enc.sample_ids(batch)
    vectors = enc.field_vectors(ids)
    masked = torch.zeros_like(ids, dtype=torch.bool)
    masked[:, 1] = True  # hide the category, keep the item id
    vectors = torch.where(masked.unsqueeze(-1), net.mask_vectors.expand_as(vectors), vectors)
    with torch.no_grad():
        predicted = enc.field_logits(enc.encode(vectors, batch)[:, 2], 1).argmax(-1)
    n_categories = task.data.field_vocab_sizes[1] - 1
    accuracy = float((predicted == ids[:, 1]).float().mean())
    # trained without the generative loss (generative_weight=0) the same head scores ~0.1 here
    assert accuracy > 2.5 / n_categories, f"masked category accuracy {accuracy:.2f} is near chance"


def test_sgctr_refinement_redefines_a_corrupted_feature_towards_the_true_one(sgctr_run):
    task, net, result = sgctr_run
    enc = net.encoder
    batch = _batch(task, n=256)
    ids = enc.sample_ids(batch)
    n_cat = task.data.field_vocab_sizes[1]
    noisy = ids.clone()
    noisy[:, 1] = (ids[:, 1] % (n_cat - 1)) + 1  # a wrong category
    with torch.no_grad():
        _, clean_plausibility = net.refine(enc.field_vectors(ids), ids, batch, 1)
        refined, noisy_plausibility = net.refine(enc.field_vectors(noisy), noisy, batch, 1)
    assert noisy_plausibility[:, 1].mean() < clean_plausibility[:, 1].mean()
    true = enc.table(1).weight[ids[:, 1]]
    before = (enc.table(1).weight[noisy[:, 1]] - true).norm(dim=-1).mean()
    after = (refined[:, 1] - true).norm(dim=-1).mean()
    assert after < 0.9 * before, "the refinement must move a noisy feature towards the plausible one"
    # the ablation is evaluated with the same weights and saved next to the run
    assert result["variants"]["no_refine"]["kwargs"] == {"refine_steps": 0}


# ---- DGenCTR ---------------------------------------------------------------------------------------
def test_dgenctr_pretraining_learns_the_fields_and_finetuning_starts_from_it(tmp_path):
    pre_cfg = _cfg("dgenctr", SEQ_SYNTHETIC, "train.epochs=8", "train.lr=0.01")
    pre = Trainer(pre_cfg, tmp_path / "pre").fit()
    _, untrained = _task_and_model(pre_cfg)
    task, pretrained = load_run(tmp_path / "pre")[1:]
    untrained_loss = task.evaluate(untrained, "valid")["pretrain_loss"]
    assert pre["valid"]["pretrain_loss"] < 0.8 * untrained_loss
    ft_cfg = _cfg("dgenctr", SEQ_SYNTHETIC, "task=ctr", "model_params.objective=ctr",
                  f"model_params.init_from={tmp_path / 'pre'}", "train.epochs=1")
    _, finetune = _task_and_model(ft_cfg)
    state = pretrained.state_dict()
    for name, value in finetune.state_dict().items():
        if name.startswith("encoder."):
            assert torch.equal(value, state[name]), name
    assert finetune.init_report["loaded"] >= len([k for k in state if k.startswith("encoder.")])
    with pytest.raises(FileNotFoundError, match="pre-training run"):
        _task_and_model(_cfg("dgenctr", SEQ_SYNTHETIC, "task=ctr", "model_params.objective=ctr",
                             f"model_params.init_from={tmp_path / 'nowhere'}"))


def test_dgenctr_absorbs_more_fields_at_later_diffusion_times():
    task, net = _task_and_model(_cfg("dgenctr", ML_SYNTHETIC))
    batch = _batch(task, n=512)
    seen = {}
    original = net.encoder.generative_loss

    def spy(states, ids, masked, weights=None):
        seen["masked"], seen["weights"] = masked, weights
        return original(states, ids, masked, weights)

    net.encoder.generative_loss = spy
    net.pretrain_loss(batch, torch.Generator().manual_seed(0))
    t = 1.0 / seen["weights"]
    share = seen["masked"].float().mean(1)
    early, late = share[t < 0.3].mean(), share[t > 0.7].mean()
    assert seen["masked"].any(1).all() and late > early + 0.3


# ---- MATT ------------------------------------------------------------------------------------------
def test_count_min_sketch_never_undercounts_and_is_exact_when_wide():
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(1, 6, size=(2000, 3)))
    sketches = CountMinSketches(3, (1, 2, 3), depth=4, width=1 << 12)
    sketches.add(ids)
    for order in (1, 2, 3):
        for c, combo in enumerate(sketches.combos[order]):
            keys = [tuple(row) for row in ids[:, list(combo)].tolist()]
            truth = torch.tensor([keys.count(k) for k in keys[:50]])
            assert torch.equal(sketches.estimate(ids[:50], order, c).long(), truth)
    narrow = CountMinSketches(3, (2,), depth=2, width=8)
    narrow.add(ids)
    keys = [tuple(row) for row in ids[:, [0, 1]].tolist()]
    truth = torch.tensor([keys.count(k) for k in keys[:50]])
    assert torch.all(narrow.estimate(ids[:50], 2, 0).long() >= truth)


@pytest.fixture(scope="module")
def matt_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("matt")
    Trainer(_cfg("deepfm", ML_SYNTHETIC, "train.epochs=2"), root / "base").fit()
    cfg = _cfg("matt", ML_SYNTHETIC, f"model_params.base_run={root / 'base'}", "model_params.n_paths=6")
    result = Trainer(cfg, root / "matt").fit()
    return (*load_run(root / "matt")[1:], result)


def test_matt_confidence_is_low_for_rare_feature_combinations(matt_run):
    task, net, _ = matt_run
    batch = _batch(task)
    ids = torch.cat([batch["user_fields"], batch["cand_fields"]], 1)
    conf = net.confidence(ids)
    assert conf.shape == ids.shape and torch.all((conf >= 0) & (conf <= 1))
    unseen = ids.clone()
    unseen[:, -4] = task.data.field_vocab_sizes[0] + 7  # a movie id no training sample has
    assert torch.all(net.confidence(unseen)[:, -4] < conf[:, -4].min())


def test_matt_paths_drop_low_confidence_features_and_keep_confident_ones(matt_run):
    task, net, result = matt_run
    batch = _batch(task)
    calls = []
    original = net.base.forward

    def spy(b, *args, **kwargs):
        calls.append(torch.cat([b["user_fields"], b["cand_fields"]], 1))
        return original(b, *args, **kwargs)

    net.base.forward = spy
    try:
        with torch.no_grad():
            out = net(batch)
            base = net(batch, n_paths=1)
    finally:
        net.base.forward = original
    assert len(calls) == net.n_paths + 1  # n paths, then the base alone
    ids, conf = calls[0], net.confidence(calls[0])
    dropped = torch.stack([(path == 0) & (ids > 0) for path in calls[1:net.n_paths]]).float().mean(0)
    assert torch.all(dropped[conf > 0.999] == 0), "a confident feature must never be dropped"
    # a feature is dropped in about 1 − confidence of the paths
    assert (dropped - (1 - conf)).abs().mean() < 0.15
    assert torch.corrcoef(torch.stack([dropped.flatten(), conf.flatten()]))[0, 1] < -0.3
    assert not torch.allclose(out, base), "the paths must change the prediction"
    assert {"base", "paths2", "orders1-1", "orders1-2"} <= set(result["variants"])
    assert result["variants"]["base"]["test"]["auc"] == pytest.approx(
        _auc_of_base(task, net), abs=1e-9)


def _auc_of_base(task, net) -> float:
    return task.evaluate(net.base, "test")["auc"]


def test_matt_rejects_a_base_run_trained_on_other_data(matt_run, tmp_path):
    task, net, _ = matt_run
    other = dict(ML_SYNTHETIC, synthetic={"users": 30, "movies": 25, "ratings_per_user": 10})
    cfg = _cfg("matt", other, f"model_params.base_run={net.base_run}")
    with pytest.raises(ValueError, match="other data"):
        _task_and_model(cfg)


def test_ctr_runs_save_test_predictions_in_one_order_for_paired_comparisons(matt_run):
    task, net, _ = matt_run
    root = pytest.importorskip("pathlib").Path(net.base_run).parent
    base = np.load(root / "base" / "test_predictions.npz")
    wrapped = np.load(root / "matt" / "test_predictions_base.npz")
    assert np.array_equal(base["label"], wrapped["label"]) and np.array_equal(base["user"], wrapped["user"])
    assert np.allclose(base["prob"], wrapped["prob"], atol=1e-6)


def test_zoo_models_reject_bad_settings_with_readable_errors():
    from recsys_core.models.dgenctr import DGenCTR
    from recsys_core.models.matt import MATT
    from recsys_core.models.sgctr import SGCTR
    from recsys_core.models.store import STORE

    with pytest.raises(ValueError, match="semantic codes"):
        STORE([5000, 4], max_len=5)  # built outside the ctr task: no codes computed from the data
    with pytest.raises(ValueError, match="keep_ratio"):
        STORE([10, 4], max_len=5, keep_ratio=0.0)
    with pytest.raises(ValueError, match="histories"):
        SGCTR([10, 4], max_len=0)
    with pytest.raises(ValueError, match="mask_rate"):
        SGCTR([10, 4], max_len=5, mask_rate=1.5)
    with pytest.raises(ValueError, match="objective"):
        DGenCTR([10, 4], max_len=5, objective="gan")
    with pytest.raises(ValueError, match="base_run"):
        MATT([10, 4], max_len=5)
    cfg = _cfg("matt", ML_SYNTHETIC)
    cfg.model_params.pop("base_run")
    with pytest.raises(ValueError, match="base_run"):
        _task_and_model(cfg)
    pretrain_cfg = _cfg("deepfm", ML_SYNTHETIC, "task=ctr_pretrain")
    task, model = _task_and_model(pretrain_cfg)
    with pytest.raises(ValueError, match="pretrain_loss"):
        task.evaluate(model, "valid")
