"""Each semantic-ID paper mechanism pinned by behaviour that disappears when the mechanism is switched off:
MMQ's orthogonality, auxiliary reconstruction and behaviour-aware stage, ADA-SID's alignment, richness
weighting and router (in the tokenizer and downstream in TIGER), MPQ's orthogonality, and the retrieval
metrics by popularity group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_core.config import ExperimentConfig
from recsys_core.layers.quantize import cross_orthogonality, mutual_orthogonality
from recsys_core.registry import build_model, get_model, get_task
from recsys_core.tasks.generative import SemanticIdTrie, constrained_beam_search, popularity_tertiles
from recsys_core.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def items_features(n: int, dims: dict[str, int], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # Correlated modalities (a shared factor plus noise), as text and attributes of one item are.
    shared = torch.randn(n, 8, generator=gen)
    out = {}
    for name, d in dims.items():
        mix = torch.randn(8, d, generator=gen)
        x = shared @ mix + 0.5 * torch.randn(n, d, generator=gen)
        out[name] = torch.nn.functional.normalize(x, dim=-1)
    return out


def fit(model, batch: dict[str, torch.Tensor], steps: int = 150, lr: float = 0.01, seed: int = 0):
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss, _ = model.loss(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


MMQ_SMALL = {"shared_experts": 2, "specific_experts": 1, "expert_hidden": [32], "decoder_hidden": [32],
             "latent_dim": 16, "levels": 2, "codebook_size": 8}
CONTENT = {"text": 12, "attributes": 10}


def trained_mmq(**params):
    torch.manual_seed(0)
    model = build_model("mmq", {**MMQ_SMALL, **params}, modality_dims=CONTENT)
    batch = {**items_features(256, CONTENT), "item": torch.arange(1, 257)}
    return fit(model, batch), batch


# ---- MMQ ------------------------------------------------------------------------------------------
def test_mmq_orthogonality_term_separates_shared_from_specific_experts():
    def orthogonality(weight: float) -> float:
        model, batch = trained_mmq(orth_weight=weight)
        with torch.no_grad():
            _, _, shared, specific = model.experts(batch)
            return float(cross_orthogonality(shared, torch.cat(list(specific.values()), 1)))

    with_term, without = orthogonality(1.0), orthogonality(0.0)
    assert with_term < 0.5 * without, (with_term, without)


def test_mmq_auxiliary_reconstruction_makes_specific_experts_carry_their_modality():
    """With the auxiliary term each modality is recoverable from its own specific experts alone."""
    def aux_error(weight: float) -> float:
        model, batch = trained_mmq(aux_weight=weight)
        with torch.no_grad():
            _, _, _, specific = model.experts(batch)
            return sum(float((model.aux_decoders[m](specific[m].mean(1)) - batch[m]).pow(2).sum(-1).mean())
                       for m in CONTENT)

    with_term, without = aux_error(1.0), aux_error(0.0)
    assert with_term < 0.5 * without, (with_term, without)


def behaviour_task(warmup_steps: int = 4, finetune_epochs: int = 8):
    """MMQ on synthetic walks within 6 item groups, with content features that know nothing of the groups.
    Stage 2's first `warmup_steps` train the retriever alone."""
    cfg = ExperimentConfig.from_yaml(get_model("mmq").smoke_config, [
        "task_params.modalities=[attributes]", f"task_params.behaviour_finetune_epochs={finetune_epochs}",
        "train.epochs=" + str(22 + finetune_epochs), "train.eval_every=100", "model_params.levels=2",
        "model_params.codebook_size=6", f"model_params.retriever_warmup_steps={warmup_steps}"])
    task = get_task("semantic_id")(cfg)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((task.data.n_items + 1, 16)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    noise[0] = 0
    task.features = {"attributes": noise}
    return cfg, task


def stage_two_codes(tmp_path, warmup_steps: int, name: str) -> np.ndarray:
    cfg, task = behaviour_task(warmup_steps)
    trainer = Trainer(cfg, run_dir=tmp_path / name)
    trainer.task = task  # both stages run exactly as from the CLI, on the behaviour-blind features
    trainer.fit()
    return np.load(tmp_path / name / "codes.npy")[1:, :-1]


def test_mmq_behaviour_aware_stage_changes_the_codes_through_the_retriever_loss(tmp_path):
    """The same seeds and the same jointly trained retriever, with and without its next-SID loss reaching the
    tokenizer (soft indexing): the runs are otherwise deterministic, so any difference is that gradient's."""
    joint = stage_two_codes(tmp_path, 4, "joint")
    frozen, again = stage_two_codes(tmp_path, 10**6, "frozen"), stage_two_codes(tmp_path, 10**6, "again")
    np.testing.assert_array_equal(frozen, again)
    moved = (joint != frozen).any(1).mean()
    assert moved > 0.1, moved


def test_mmq_behaviour_batches_are_windows_of_training_sequences():
    _, task = behaviour_task()
    task.epochs_started = task.cfg.train.epochs - 1
    batch = next(task.train_batches(np.random.default_rng(0)))
    window, items = batch["window"].numpy(), batch["item"].numpy()
    training = [tuple(s[:-2]) for s in task.data.sequences]
    for row in window:
        seq = items[row[row >= 0]]
        assert any(" ".join(map(str, seq)) in " ".join(map(str, t)) for t in training)
    torch.manual_seed(0)
    model = task.build_model().train()
    model.loss(task.item_batch(task.items))  # stage 1 initialises the codebooks
    model.behaviour_steps = model.retriever_warmup_steps
    loss, logs = model.loss(batch)
    model.zero_grad()
    loss.backward()
    assert "behaviour" in logs
    # soft indexing: the retriever's loss reaches the tokenizer's encoder and codebooks
    assert model.shared[0][0].weight.grad.abs().sum() > 0
    assert model.quantizer.codebooks[0].weight.grad.abs().sum() > 0


# ---- ADA-SID --------------------------------------------------------------------------------------
ADA_SMALL = {"hidden": [32], "decoder_hidden": [32], "latent_dim": 16, "content_levels": 2, "behaviour_levels": 2,
             "codebook_size": 8}
ADA_DIMS = {"attributes": 10, "behaviour": 12}


def ada_batch(n: int = 256) -> dict[str, torch.Tensor]:
    return {**items_features(n, ADA_DIMS), "item": torch.arange(1, n + 1), "richness": torch.ones(n)}


def test_ada_sid_alignment_pulls_behaviour_towards_content():
    def alignment(weight: float) -> float:
        torch.manual_seed(0)
        model = build_model("ada_sid", {**ADA_SMALL, "align_weight": weight}, modality_dims=ADA_DIMS)
        batch = ada_batch()
        fit(model, batch)
        with torch.no_grad():
            h_c, h_b = model._branches(batch)
            return float(torch.nn.functional.cosine_similarity(h_b, h_c).mean())

    assert alignment(1.0) > alignment(0.0) + 0.3


def test_ada_sid_shields_long_tail_items_from_alignment():
    torch.manual_seed(0)
    model = build_model("ada_sid", {**ADA_SMALL, "align_weight": 1.0, "router_weight": 0.0},
                        modality_dims=ADA_DIMS).eval()
    batch = ada_batch(64)
    tail, head = dict(batch, richness=torch.zeros(64)), dict(batch, richness=torch.ones(64))
    loss_tail, loss_head = model.loss(tail)[0], model.loss(head)[0]
    # the same items: only the alignment weight differs, σ(−5) ≈ 0.007 against σ(5) ≈ 0.993
    assert loss_head - loss_tail > 0.5 * model.loss(head)[1]["align"]
    flat = build_model("ada_sid", {**ADA_SMALL, "richness_adaptive": False}, modality_dims=ADA_DIMS)
    flat.load_state_dict(model.state_dict())
    flat.eval()
    torch.testing.assert_close(flat.loss(tail)[0], flat.loss(head)[0])


def test_ada_sid_router_weights_codes_and_can_be_switched_off():
    torch.manual_seed(0)
    model = build_model("ada_sid", ADA_SMALL, modality_dims=ADA_DIMS)
    batch = ada_batch()
    fit(model, batch, steps=60)
    weights = model.code_weights(batch)
    assert weights.shape == (256, 4)
    assert torch.all(weights[:, :2] == 1) and torch.all((weights[:, 2:] > 0) & (weights[:, 2:] < 1))
    assert weights[:, 2:].std() > 1e-3  # the router gives items different weights
    plain = build_model("ada_sid", {**ADA_SMALL, "use_router": False}, modality_dims=ADA_DIMS)
    assert plain.code_weights(batch) is None and torch.all(plain.router_weights(batch) == 1)


@pytest.fixture(scope="module")
def ada_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ada_sid")
    cfg = ExperimentConfig.from_yaml(get_model("ada_sid").smoke_config, ["train.epochs=20"])
    Trainer(cfg, run_dir=run).fit()
    return run


def test_ada_sid_run_saves_router_weights_for_every_item(ada_run):
    router, codes = np.load(ada_run / "router.npy"), np.load(ada_run / "codes.npy")
    assert router.shape == (codes.shape[0], codes.shape[1] - 1)  # one weight per code column, no suffix
    assert np.all(router[1:, :2] == 1) and np.all((router[1:, 2:] > 0) & (router[1:, 2:] < 1))


def tiger_task(ada_run, *overrides: str):
    cfg = ExperimentConfig.from_yaml(get_model("tiger").smoke_config, [
        f"data.sid_run={ada_run}", "data.codes=null", "data.items=120", *overrides])
    return get_task("generative_retrieval")(cfg)


def test_tiger_scales_behavioural_tokens_by_the_router(ada_run):
    task = tiger_task(ada_run)
    assert task.router_source and task.item_scales is not None
    scales = task.item_scales
    assert np.all(scales[1:, :2] == 1) and np.all(scales[1:, -1] == 1)  # content codes and the suffix
    assert np.all(scales[1:, 2:4] < 1) and scales[1:, 2:4].std() > 1e-4
    batch = next(task.train_batches(np.random.default_rng(0)))
    assert "scales" in batch and batch["scales"].shape == batch["tokens"].shape
    torch.manual_seed(0)
    model = task.build_model().eval()
    tokens, history_scales = task.history_inputs([np.array([3, 9, 15, 21])])
    with torch.no_grad():
        scaled, _ = model.begin_decode(tokens, history_scales)
        plain, _ = model.begin_decode(tokens)
    assert (scaled - plain).abs().max() > 1e-4  # the router changes what the retriever reads
    off = tiger_task(ada_run, "task_params.router_scales=false")
    assert off.item_scales is None and "scales" not in next(off.train_batches(np.random.default_rng(0)))


def test_scaled_decoding_matches_a_full_forward_pass_over_scaled_tokens(ada_run):
    """Beam scores with router scales equal the exact log-probability of each item's tuple under a full
    forward pass whose every token (history and candidate) carries its scale."""
    task = tiger_task(ada_run)
    torch.manual_seed(1)
    model = task.build_model().eval()
    history = [np.array([3, 9, 15, 21])]
    n = task.data.n_items
    tokens, scales = task.history_inputs(history)
    with torch.no_grad():
        items, scores = constrained_beam_search(model, tokens, task.trie, n, scales)
        full = torch.cat([tokens.expand(n, -1), torch.as_tensor(task.item_tokens[1:])], 1)
        full_scales = torch.cat([scales.expand(n, -1), torch.as_tensor(task.item_scales[1:])], 1)
        hidden = model.hidden_states(full, full_scales)
        exact = torch.zeros(n)
        for level in range(task.n_levels):
            lp = torch.log_softmax(model.level_logits(hidden[:, tokens.shape[1] - 1 + level], level), -1)
            exact += lp.gather(1, torch.as_tensor(task.codes[1:, level]).view(-1, 1)).squeeze(1)
    torch.testing.assert_close(scores[0], exact[items[0] - 1], atol=1e-4, rtol=1e-4)


def test_trie_token_scales_are_prefix_means_of_the_item_weights():
    codes = np.array([[0, 0, 0], [0, 1, 0], [0, 1, 1], [1, 0, 0]])
    weights = np.array([[1, 1, 1], [1, 0.2, 1], [1, 0.6, 1], [1, 0.9, 1]], dtype=np.float32)
    trie = SemanticIdTrie(codes, weights)
    np.testing.assert_allclose(trie.item_token_scales[1:, 1], [0.4, 0.4, 0.9])
    with pytest.raises(ValueError, match="item scales"):
        SemanticIdTrie(codes, weights[:, :2])


# ---- MPQ ------------------------------------------------------------------------------------------
def test_mpq_orthogonality_term_decorrelates_its_experts():
    def orthogonality(weight: float) -> float:
        torch.manual_seed(0)
        model = build_model("mpq", {"experts": 3, "codebook_size": 8, "latent_dim": 8, "hidden": [16],
                                    "orth_weight": weight, "diversity_weight": 0.0, "balance_weight": 0.0,
                                    "expert_projections": False},
                            modality_dims=ADA_DIMS)
        batch = ada_batch()
        fit(model, batch)
        with torch.no_grad():
            return float(mutual_orthogonality(model.expert_outputs(model.features(batch))))

    with_term, without = orthogonality(1.0), orthogonality(0.0)
    assert with_term < 0.5 * without, (with_term, without)


# ---- evaluation by popularity -----------------------------------------------------------------------
def test_popularity_tertiles_cut_the_catalogue_in_equal_thirds_by_training_count():
    counts = np.array([0, 50, 1, 7, 30, 2, 9])  # items 1..6
    groups = popularity_tertiles(counts)
    assert groups[0] == -1
    assert groups[[1, 4]].tolist() == [0, 0] and groups[[6, 3]].tolist() == [1, 1] and groups[[5, 2]].tolist() == [2, 2]


def test_generative_retrieval_reports_recall_by_popularity_group():
    cfg = ExperimentConfig.from_yaml(get_model("tiger").smoke_config, ["train.epochs=1"])
    task = get_task("generative_retrieval")(cfg)
    torch.manual_seed(0)
    metrics = task.evaluate(task.build_model().eval(), "test")
    assert sum(metrics[f"users_{g}"] for g in ("head", "torso", "tail")) == task.data.n_users
    ranks = task.last_ranks["test"]
    overall = sum(metrics[f"recall@10_{g}"] * metrics[f"users_{g}"] for g in ("head", "torso", "tail"))
    assert overall / task.data.n_users == pytest.approx(float(((ranks >= 0) & (ranks < 10)).mean()))


@pytest.mark.parametrize(("dataset", "codebook"), [("ml1m", 64), ("beauty", 256)])
def test_tokenizers_compare_at_equal_code_length(dataset, codebook):
    """The semantic-ID tables (MovieLens-1M, Amazon Beauty) compare MMQ and ADA-SID with RQ-VAE at the same number
    of code levels and the same codebook size, so no row wins by a longer ID."""
    folder = Path(__file__).resolve().parents[2] / "configs" / "recsys" / f"{dataset}_sid"

    def shape(name: str) -> tuple[int, int]:
        params = ExperimentConfig.from_yaml(folder / f"{name}.yaml").model_params
        levels = params["content_levels"] + params["behaviour_levels"] if "content_levels" in params else params["levels"]
        return levels, params["codebook_size"]

    assert shape("rqvae4") == shape("mmq") == shape("ada_sid") == (4, codebook)
    assert shape("rqvae") == (3, codebook)
    mmq = ExperimentConfig.from_yaml(folder / "mmq.yaml")
    assert "behaviour" not in mmq.task_params["modalities"]  # stage 1 is content only
    assert mmq.task_params["behaviour_finetune_epochs"] > 0 and mmq.model_params["retriever"]


# ---- ADA-SID's router downstream in a ranker: semantic IDs as CTR item fields, scaled per item ------------------
def write_tokenizer_run(folder: Path, n_items: int, levels: int = 2, router: bool = True, seed: int = 0) -> np.ndarray:
    """A tokenizer run folder as `shoplab recsys train` writes it: codes with a collision suffix, router weights."""
    from recsys_core.tasks.generative import add_collision_suffix

    rng = np.random.default_rng(seed)
    codes = np.zeros((n_items + 1, levels + 1), dtype=np.int64)
    codes[1:] = add_collision_suffix(rng.integers(0, 4, (n_items, levels)))
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "codes.npy", codes)
    weights = np.ones((n_items + 1, levels), dtype=np.float32)
    weights[1:, -1] = rng.uniform(0.1, 0.9, n_items)  # the last level is behavioural
    if router:
        np.save(folder / "router.npy", weights)
    return weights


def ctr_task(tmp_path: Path, **data):
    overrides = ["train.epochs=1"] + [f"data.{k}={v}" for k, v in data.items()]
    cfg = ExperimentConfig.from_yaml(get_model("deepfm").smoke_config, overrides)
    return get_task("ctr")(cfg)


def test_semantic_id_fields_join_the_ctr_item_fields(tmp_path):
    base = ctr_task(tmp_path).data
    router = write_tokenizer_run(tmp_path / "tok", base.n_items)
    codes = np.load(tmp_path / "tok" / "codes.npy")
    data = ctr_task(tmp_path, sid_run=tmp_path / "tok").data
    assert data.field_names == [*base.field_names, "sid1", "sid2"]
    assert np.array_equal(data.item_fields[:, :2], base.item_fields)
    assert np.array_equal(data.item_fields[1:, 2:], codes[1:, :2] + 1)  # the suffix column is left out
    assert (data.item_fields[0] == 0).all()
    assert data.field_vocab_sizes[2:] == [int(codes[:, i].max()) + 2 for i in range(2)]
    assert np.allclose(data.item_field_scales[1:, 2:], router[1:]) and (data.item_field_scales[:, :2] == 1).all()
    assert ctr_task(tmp_path, sid_run=tmp_path / "tok", router_scales="false").data.item_field_scales is None
    flat = ctr_task(tmp_path, sid_run=tmp_path / "tok", router_scales="mean").data.item_field_scales
    assert np.allclose(flat[1:, 2:], router[1:].mean(0))  # the ablation: the same scale, no per-item information


def test_router_scales_reach_the_rankers_embeddings(tmp_path):
    """An item whose router weight on a semantic-ID field is 0 is scored as if that field were unknown (id 0), and
    one at weight 0.5 sits between: the weights scale the ranker's field embeddings (and FM first-order terms)."""
    n_items = ctr_task(tmp_path).data.n_items
    write_tokenizer_run(tmp_path / "tok", n_items)
    task = ctr_task(tmp_path, sid_run=tmp_path / "tok")
    torch.manual_seed(0)
    model = task.build_model().eval()
    assert torch.equal(model.features.item_scales, torch.from_numpy(task.data.item_field_scales))  # the task wires them
    for table in [*model.features.tables, *model.features.first_order]:  # trained-looking weights, not zeros
        torch.nn.init.normal_(table.weight, std=0.5)
        with torch.no_grad():
            table.weight[0].zero_()  # id 0 stays the unknown / padding id
    batch = next(iter(task.data.eval_batches("test", 64)))
    item = int(batch["cand_fields"][0, 0])

    def scores(weight: float, unknown_field: bool = False) -> torch.Tensor:
        scales = torch.from_numpy(task.data.item_field_scales).clone()
        scales[item, -1] = weight
        model.features.set_item_scales(scales)
        cand = batch["cand_fields"].clone()
        if unknown_field:
            cand[cand[:, 0] == item, -1] = 0
        with torch.no_grad():
            return model({**batch, "cand_fields": cand})

    mine = batch["cand_fields"][:, 0] == item
    assert torch.allclose(scores(0.0)[mine], scores(1.0, unknown_field=True)[mine], atol=1e-6)
    assert not torch.allclose(scores(0.0)[mine], scores(1.0)[mine], atol=1e-4)
    untouched = ~mine & ~(batch["hist_fields"][..., 0] == item).any(1)
    assert untouched.any() and torch.allclose(scores(0.0)[untouched], scores(1.0)[untouched])  # others keep theirs


def test_router_scales_need_a_router_and_a_feature_embedding(tmp_path):
    n_items = ctr_task(tmp_path).data.n_items
    write_tokenizer_run(tmp_path / "plain", n_items, router=False)
    assert ctr_task(tmp_path, sid_run=tmp_path / "plain").data.item_field_scales is None  # auto: none to use
    with pytest.raises(ValueError, match="no router.npy"):
        ctr_task(tmp_path, sid_run=tmp_path / "plain", router_scales="true")
    with pytest.raises(FileNotFoundError, match="codes.npy"):
        ctr_task(tmp_path, sid_run=tmp_path / "missing")
    write_tokenizer_run(tmp_path / "short", n_items - 1)
    with pytest.raises(ValueError, match="rows but the data has"):
        ctr_task(tmp_path, sid_run=tmp_path / "short")
