"""CTR ranking: the data protocols, DIN / DeepFM / GPSD, GPSD's pretraining and transfer, score()."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_core import ExperimentConfig, Trainer, get_task, load_run
from recsys_core.data.ctr import ctr_from_sequences, load_ctr
from recsys_core.data.sequences import synthetic_sequences, training_sequences
from recsys_core.metrics import gauc
from recsys_core.trainer import seed_everything

ROOT = Path(__file__).resolve().parents[2]
ALI_CCP = ROOT / "data" / "ctr_samples" / "ali-ccp"
CRITEO = ROOT / "data" / "ctr_samples" / "criteo"
SYNTH_DATA = {"kind": "sequences", "source": "synthetic", "users": 200, "items": 60, "max_len": 12}
SMALL_PARAMS = {"din": {"embed_dim": 8, "attention_hidden": [16], "mlp_hidden": [32, 16]},
                "deepfm": {"embed_dim": 8, "mlp_hidden": [32, 16]},
                "gpsd": {"hidden": 32, "layers": 1, "heads": 4}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ctr_config(model: str, data: dict | None = None, epochs: int = 4, **params) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "model": model, "task": "ctr", "data": dict(data or SYNTH_DATA),
        "model_params": {**SMALL_PARAMS.get(model, {}), **params},
        "train": {"epochs": epochs, "batch_size": 128, "lr": 0.005, "progress": False, "num_threads": 1}})


def pretrain_config(epochs: int = 3) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "model": "gpsd_generative", "task": "gpsd_pretrain",
        "data": {"kind": "synthetic", "users": 200, "items": 60, "max_len": 12},
        "model_params": {"hidden": 32, "layers": 1, "heads": 4, "n_negatives": 32},
        "train": {"epochs": epochs, "batch_size": 64, "lr": 0.005, "progress": False, "num_threads": 1}})


# ------------------------------------------------------------------ the sequences protocol

def test_sequences_protocol_trains_only_on_the_prefix_and_negatives_are_never_interacted():
    data = synthetic_sequences(n_users=150, n_items=60, seed=3)
    ctr = ctr_from_sequences(data, max_len=50)
    seqs = data.sequences
    rng = np.random.default_rng(0)
    n_pos = n_neg = 0
    for batch in ctr.train_batches(rng, 64):
        hist, cand = batch["hist_fields"][..., 0].numpy(), batch["cand_fields"][:, 0].numpy()
        for user, h, c, y in zip(batch["user"].numpy(), hist, cand, batch["label"].numpy(), strict=True):
            seq = seqs[user]
            prefix, held_out = set(seq[:-2].tolist()), set(seq[-2:].tolist()) - set(seq[:-2].tolist())
            assert set(h[h > 0].tolist()) <= prefix and not (set(h.tolist()) & held_out)
            if y == 1:
                assert c in prefix and c not in held_out
                n_pos += 1
            else:
                assert c not in set(seq.tolist())
                n_neg += 1
    expected = sum(len(s) - 3 for s in seqs)
    assert n_pos == n_neg == expected == ctr.n_samples("train") // 2
    for split, target in (("valid", -2), ("test", -1)):
        batch = next(ctr.eval_batches(split, 10_000))
        users, cand, labels = batch["user"].numpy(), batch["cand_fields"][:, 0].numpy(), batch["label"].numpy()
        assert len(users) == 2 * len(seqs)
        for user, c, y in zip(users, cand, labels, strict=True):
            assert (c == seqs[user][target]) if y == 1 else (c not in set(seqs[user].tolist()))
        # history of a held-out sample = everything before the target
        row = int(np.flatnonzero(users == 0)[0])
        hist = batch["hist_fields"][row, :, 0].numpy()
        assert hist[hist > 0].tolist() == seqs[0][:target].tolist()


def test_eval_negatives_are_fixed_and_training_negatives_change_every_epoch():
    data = synthetic_sequences(n_users=100, n_items=60, seed=1)
    a, b = ctr_from_sequences(data), ctr_from_sequences(data)
    assert np.array_equal(a.splits["test"].cand, b.splits["test"].cand)
    assert np.array_equal(a.splits["valid"].cand, b.splits["valid"].cand)
    rng = np.random.default_rng(0)
    first, second = a.epoch_samples(rng), a.epoch_samples(rng)
    negatives = first.label == 0
    assert np.array_equal(first.cand[~negatives], second.cand[~negatives])
    assert not np.array_equal(first.cand[negatives], second.cand[negatives])


def test_max_train_positions_keeps_the_last_positions_of_each_prefix():
    data = synthetic_sequences(n_users=50, n_items=60, seed=2)
    last = ctr_from_sequences(data, max_train_positions=1).splits["train"]
    assert len(last) == len(data.sequences)
    for user, t, cand in zip(last.user, last.hist_len, last.cand, strict=True):
        seq = data.sequences[user]
        assert t == len(seq) - 3 and cand == seq[-3]


# ------------------------------------------------------------------ metrics

def test_gauc_matches_a_hand_computed_example_and_the_reference_definition():
    groups = ["a", "a", "a", "b", "b", "c", "d", "d"]
    labels = [1, 0, 0, 0, 1, 1, 1, 0]
    scores = [0.9, 0.5, 0.95, 0.2, 0.8, 0.3, 0.4, 0.4]
    # a: the click beats one of two non-clicks -> 0.5; b: 1.0; c: one class only, skipped; d: tie -> 0.5
    expected = (3 * 0.5 + 2 * 1.0 + 2 * 0.5) / 7
    assert gauc(groups, labels, scores) == pytest.approx(expected)
    rng = np.random.default_rng(0)
    g, y, s = rng.integers(0, 8, 300), rng.random(300) < 0.3, np.round(rng.random(300), 2)
    from sklearn.metrics import roc_auc_score

    per_user = [(roc_auc_score(y[g == u], s[g == u]), (g == u).sum()) for u in np.unique(g)
                if 0 < y[g == u].sum() < (g == u).sum()]
    reference = sum(a * n for a, n in per_user) / sum(n for _, n in per_user)
    assert gauc(g, y, s) == pytest.approx(reference)
    assert np.isnan(gauc([1, 1], [0, 0], [0.1, 0.2]))


# ------------------------------------------------------------------ models

@pytest.mark.parametrize("model", ["din", "deepfm", "gpsd"])
def test_each_model_fits_a_fixed_batch_and_ranks_clicks_above_chance(model):
    torch.manual_seed(0)
    task = get_task("ctr")(ctr_config(model))
    fixed = next(task.train_batches(np.random.default_rng(0)))
    net = task.build_model().train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.005)
    first = float(net.loss(fixed).detach())
    for _ in range(30):
        optimizer.zero_grad()
        net.loss(fixed).backward()
        optimizer.step()
    assert float(net.loss(fixed).detach()) < 0.7 * first

    net = task.build_model()
    untrained = task.evaluate(net, "test")["auc"]
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.005)
    net.train()
    rng = np.random.default_rng(1)
    for _ in range(4):
        for batch in task.train_batches(rng):
            optimizer.zero_grad()
            net.loss(batch).backward()
            optimizer.step()
    trained = task.evaluate(net, "test")
    # an untrained FM already favours candidates whose category matches the history (dot products)
    assert trained["auc"] > max(0.85, untrained + 0.15), (untrained, trained)
    assert 0.5 < trained["gauc"] <= 1.0 and np.isfinite(trained["logloss"])


def test_score_returns_one_probability_per_candidate_and_rejects_bad_ids():
    task = get_task("ctr")(ctr_config("din"))
    model = task.build_model().eval()
    hist = np.array([[1, 2], [7, 2], [13, 2]])
    cands = np.array([[5, 6], [19, 2], [0, 3], [42, 1]])
    probs = task.score(model, hist, cands)
    assert probs.shape == (4,) and ((probs > 0) & (probs < 1)).all()
    padded = torch.zeros(1, 12, 2, dtype=torch.long)
    padded[0, -3:] = torch.as_tensor(hist)
    batch = {"hist_fields": padded.expand(4, -1, -1), "cand_fields": torch.as_tensor(cands)}
    with torch.no_grad():
        assert np.allclose(probs, torch.sigmoid(model(batch)).numpy(), atol=1e-6)
    assert task.score(model, np.zeros((0, 2), dtype=int), cands).shape == (4,)  # a user without history
    n_items = task.data.field_vocab_sizes[0] - 1
    with pytest.raises(ValueError, match=f"item id {n_items + 1} is out of range 0..{n_items}"):
        task.score(model, hist, [[n_items + 1, 1]])
    with pytest.raises(ValueError, match="category id -1 is out of range"):
        task.score(model, [[1, -1]], cands)
    with pytest.raises(ValueError, match=r"shape \[rows, 2\]"):
        task.score(model, hist, [5, 6])
    with pytest.raises(ValueError, match="empty"):
        task.score(model, hist, np.zeros((0, 2), dtype=int))


def _perturbed_gpsd(task):
    model = task.build_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # away from the near-uniform init, so differences would show
    return model


def test_gpsd_shared_history_forward_equals_the_plain_sequence_forward_with_gradients():
    torch.manual_seed(0)
    task = get_task("ctr")(ctr_config("gpsd", layers=2))
    model = _perturbed_gpsd(task).train()
    batch = next(task.train_batches(np.random.default_rng(0)))
    hist = batch["hist_fields"]
    assert len(torch.unique(hist.flatten(1), dim=0)) <= len(hist) // 2 + 1  # positives and negatives paired
    fast, plain = model(batch), model.forward_full_sequences(batch)
    assert torch.allclose(fast, plain, atol=1e-4)
    (g_fast,) = torch.autograd.grad(fast.sum(), model.encoder.blocks[0].qkv.weight)
    (g_plain,) = torch.autograd.grad(plain.sum(), model.encoder.blocks[0].qkv.weight)
    assert torch.allclose(g_fast, g_plain, atol=1e-4)


def test_gpsd_cached_scoring_equals_the_batched_forward():
    torch.manual_seed(0)
    task = get_task("ctr")(ctr_config("gpsd", layers=2))
    model = _perturbed_gpsd(task).eval()
    hist = np.array([[3, 4], [9, 4], [15, 4], [21, 4]])
    cands = np.array([[5, 6], [19, 2], [0, 3]])
    probs = task.score(model, hist, cands)
    padded = torch.zeros(3, 6, 2, dtype=torch.long)
    padded[:, -4:] = torch.as_tensor(hist)
    with torch.no_grad():
        batch = {"hist_fields": padded, "cand_fields": torch.as_tensor(cands)}
        expected = torch.sigmoid(model.forward_full_sequences(batch)).numpy()
        empty = {"hist_fields": torch.zeros(3, 1, 2, dtype=torch.long), "cand_fields": torch.as_tensor(cands)}
        expected_empty = torch.sigmoid(model.forward_full_sequences(empty)).numpy()
    assert np.allclose(probs, expected, atol=1e-5)
    assert np.allclose(task.score(model, [], cands), expected_empty, atol=1e-5)


# ------------------------------------------------------------------ ctr_sample (Ali-CCP, Criteo)

def test_ali_ccp_sample_encodes_unknown_categories_as_zero_and_standardises_dense():
    data = load_ctr({"kind": "ctr_sample", "path": str(ALI_CCP)})
    train = pd.read_csv(ALI_CCP / "ali_ccp_train_sample.csv")
    test = pd.read_csv(ALI_CCP / "ali_ccp_test_sample.csv")
    assert not data.has_history and data.dense_dim == sum(c.startswith("D") for c in train.columns)
    assert "101" in data.field_names and "click" not in data.field_names and "purchase" not in data.field_names
    col = data.field_names.index("205")
    unseen = ~test["205"].isin(set(train["205"]))
    assert unseen.any()
    test_ids = data.tables["test"]["sparse"][:, col]
    assert (test_ids[unseen.to_numpy()] == 0).all() and (test_ids[~unseen.to_numpy()] > 0).all()
    assert (data.tables["train"]["sparse"] > 0).all()
    assert np.allclose(data.tables["train"]["dense"].mean(0), 0, atol=1e-5)
    assert data.tables["train"]["label"].sum() == train["click"].sum()
    criteo = load_ctr({"kind": "ctr_sample", "path": str(CRITEO)})
    assert criteo.dense_dim == 13 and len(criteo.field_names) == 26 and not criteo.has_user
    assert sum(criteo.n_samples(s) for s in ("train", "valid", "test")) == 115


def test_din_refuses_history_free_data_and_deepfm_trains_on_ali_ccp(tmp_path):
    data = {"kind": "ctr_sample", "path": str(ALI_CCP)}
    with pytest.raises(ValueError, match="DIN needs user behaviour histories.*use deepfm"):
        get_task("ctr")(ctr_config("din", data)).build_model()
    with pytest.raises(ValueError, match="GPSD ranks a candidate after a user history"):
        get_task("ctr")(ctr_config("gpsd", data)).build_model()
    result = Trainer(ctr_config("deepfm", data, epochs=3), tmp_path / "run").fit()
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert set(result["test"]) == {"auc", "logloss", "gauc"} and np.isfinite(result["test"]["logloss"])
    _, task, model = load_run(tmp_path / "run")
    with pytest.raises(ValueError, match="has none"):
        task.score(model, [[1] * 22], [[1] * 22])


# ------------------------------------------------------------------ kind: simulated

def write_sim_folder(folder: Path) -> None:
    folder.mkdir(parents=True)
    names, sizes = ["item", "category", "shop", "brand", "price_bucket"], [7, 4, 3, 3, 5]
    cats = {1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3}
    with (folder / "items.jsonl").open("w") as fh:
        for i in range(1, 7):
            fh.write(json.dumps({"index": i, "product_id": f"p{i}", "title": f"item {i}", "category": f"c{cats[i]}",
                                 "shop_id": "s", "brand": "b", "price": 1.0 * i, "service": [],
                                 "fields": [i, cats[i], 1 + i % 2, 1 + i % 2, 1 + i % 4]}) + "\n")
    (folder / "field_vocab.json").write_text(json.dumps({"names": names, "sizes": sizes}))
    rows = [  # user, session, ts, item, clicked
        (7, 0, 1, 1, 1), (7, 0, 2, 2, 0), (7, 0, 3, 3, 1),
        (7, 1, 10, 4, 0), (7, 1, 11, 5, 1),
        (7, 2, 20, 6, 1), (7, 2, 21, 2, 0),
        (9, 5, 4, 3, 0), (9, 5, 5, 4, 1),
        (9, 6, 30, 1, 1), (9, 6, 31, 6, 0),
    ]
    frame = pd.DataFrame(rows, columns=["user", "session", "ts", "item", "clicked"])
    frame["position"] = 0
    frame["purchased"] = 0
    frame["clicked"] = frame["clicked"].astype("int8")
    frame.to_parquet(folder / "impressions.parquet")
    (folder / "sequences.jsonl").write_text("")
    (folder / "manifest.json").write_text("{}")


def test_simulated_loader_splits_by_session_time_and_hides_item_ids_of_cold_candidates(tmp_path):
    write_sim_folder(tmp_path / "sim")
    data = load_ctr({"kind": "simulated", "path": str(tmp_path / "sim"), "cold_item_rate": 0.5})
    assert data.field_names[0] == "item" and data.field_vocab_sizes == [7, 4, 3, 3, 5]

    def rows(split):
        s = data.splits[split]
        return sorted(zip(s.user.tolist(), s.cand.tolist(), s.hist_len.tolist(), s.label.tolist(), strict=True))

    # user 7: sessions 0 (train), 1 (valid), 2 (test); user 9: session 5 (valid), 6 (test)
    assert rows("train") == [(7, 1, 0, 1.0), (7, 2, 1, 0.0), (7, 3, 1, 1.0)]
    assert rows("valid") == [(7, 4, 2, 0.0), (7, 5, 2, 1.0), (9, 3, 0, 0.0), (9, 4, 0, 1.0)]
    assert rows("test") == [(7, 2, 4, 0.0), (7, 6, 3, 1.0), (9, 1, 1, 1.0), (9, 6, 2, 0.0)]
    test = next(data.eval_batches("test", 10))
    row = int(np.flatnonzero((test["user"] == 7).numpy() & (test["cand_fields"][:, 0] == 2).numpy())[0])
    assert test["hist_fields"][row, :, 0].tolist() == [1, 3, 5, 6]  # clicks strictly before ts 21
    assert test["hist_fields"][row, -1].tolist() == [6, 3, 1, 1, 3]  # item 6's fields
    assert (test["cand_fields"][:, 0] > 0).all()  # never hidden outside training
    rng = np.random.default_rng(0)
    cold = [int(b["cand_fields"][i, 0] == 0) for _ in range(300) for b in data.train_batches(rng, 8)
            for i in range(len(b["label"]))]
    assert 0.4 < np.mean(cold) < 0.6
    batch = next(data.train_batches(rng, 8))
    assert (batch["cand_fields"][:, 1:] > 0).all()  # side fields stay


def test_din_trains_on_simulated_data(tmp_path):
    write_sim_folder(tmp_path / "sim")
    cfg = ctr_config("din", {"kind": "simulated", "path": str(tmp_path / "sim")}, epochs=2)
    result = Trainer(cfg, tmp_path / "run").fit()
    assert result["steps"] == 2
    _, task, model = load_run(tmp_path / "run")
    assert task.score(model, [[1, 1, 2, 2, 2]], [[2, 1, 1, 1, 3], [0, 3, 2, 2, 1]]).shape == (2,)


# ------------------------------------------------------------------ GPSD pretraining and transfer

@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("gpsd") / "pretrain"
    result = Trainer(pretrain_config(), run).fit()
    assert result["valid"]["ndcg@10"] > 0.2  # a random ranking of 60 items gives ~0.03
    return run


def test_pretraining_never_sees_held_out_items_and_lowers_its_loss(pretrained_run):
    cfg = pretrain_config()
    task = get_task("gpsd_pretrain")(cfg)
    prefixes = {tuple(s.tolist()) for s in training_sequences(task.data)}
    for batch in task.train_batches(np.random.default_rng(0)):
        inputs, targets = batch["input_fields"][..., 0], batch["target_fields"][..., 0]
        for inp, tgt in zip(inputs, targets, strict=True):
            seq = tuple(inp[inp > 0].tolist()) + (int(tgt[-1]),)
            assert seq in prefixes
            assert inp[inp > 0][1:].tolist() == tgt[tgt > 0][:-1].tolist()
        assert torch.equal(batch["target_fields"][..., 1], torch.as_tensor(task.item_fields[:, 1])[targets])
    history = [json.loads(line) for line in (pretrained_run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def _pretrained_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "best.pt", map_location="cpu")


def test_full_transfer_copies_the_whole_backbone_and_sparse_only_the_item_table(pretrained_run):
    pre = _pretrained_state(pretrained_run)
    full = get_task("ctr")(ctr_config("gpsd", transfer={"from_run": str(pretrained_run), "mode": "full"}))
    model = full.build_model()
    state = model.state_dict()
    backbone = [k for k in state if not k.startswith("rank_head.")]
    assert backbone and all(torch.equal(state[k], pre[k]) for k in backbone)
    assert all(p.requires_grad for p in model.parameters())
    assert model.transfer_report["loaded"] == list(pre)

    sparse = get_task("ctr")(ctr_config("gpsd", transfer={"from_run": str(pretrained_run), "mode": "sparse"}))
    model = sparse.build_model()
    state = model.state_dict()
    assert model.transfer_report["loaded"] == ["features.tables.0.weight"]
    assert torch.equal(state["features.tables.0.weight"], pre["features.tables.0.weight"])
    others = [k for k in pre if k != "features.tables.0.weight" and pre[k].numel() > 1 and "norm" not in k]
    assert others and not any(torch.equal(state[k], pre[k]) for k in others)


def test_frozen_item_table_stays_identical_through_training_while_the_rest_learns(pretrained_run, tmp_path):
    pre = _pretrained_state(pretrained_run)
    transfer = {"from_run": str(pretrained_run), "mode": "sparse", "freeze_sparse": True}
    cfg = ctr_config("gpsd", epochs=2, transfer=transfer)
    result = Trainer(cfg, tmp_path / "run").fit()
    assert result["transfer"]["frozen"] == ["features.tables.0.weight"]
    assert result["parameters"]["trainable"] == result["parameters"]["total"] - pre["features.tables.0.weight"].numel()
    trained = torch.load(tmp_path / "run" / "best.pt", map_location="cpu")
    assert torch.equal(trained["features.tables.0.weight"], pre["features.tables.0.weight"])
    seed_everything(cfg.train.seed)  # the trainer's seed: the run's initial weights
    untouched = get_task("ctr")(cfg).build_model().state_dict()
    assert not torch.equal(trained["rank_head.0.weight"], untouched["rank_head.0.weight"])
    assert not torch.equal(trained["features.tables.1.weight"], untouched["features.tables.1.weight"])
    assert result["test"]["auc"] > 0.8
    # without freezing, the transferred table moves
    cfg = ctr_config("gpsd", epochs=1, transfer={**transfer, "freeze_sparse": False})
    Trainer(cfg, tmp_path / "run2").fit()
    moved = torch.load(tmp_path / "run2" / "best.pt", map_location="cpu")
    assert not torch.equal(moved["features.tables.0.weight"], pre["features.tables.0.weight"])


def test_bad_transfer_settings_give_clear_errors(pretrained_run, tmp_path):
    def build(**transfer):
        return get_task("ctr")(ctr_config("gpsd", transfer=transfer)).build_model()

    with pytest.raises(ValueError, match="mode must be one of"):
        build(mode="partial", from_run=str(pretrained_run))
    with pytest.raises(ValueError, match="needs transfer.from_run"):
        build(mode="sparse")
    with pytest.raises(FileNotFoundError, match="finished gpsd_pretrain run"):
        build(mode="full", from_run=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="freeze_sparse needs transfer.mode"):
        build(mode="none", freeze_sparse=True)
    with pytest.raises(ValueError, match="pretrained shape"):
        get_task("ctr")(ctr_config("gpsd", hidden=64, transfer={"mode": "sparse", "from_run": str(pretrained_run)})
                        ).build_model()
