"""Semantic-ID tokenizers (rqvae, mmq, ada_sid, mpq), their quantizer pieces and item content features."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_core.config import ExperimentConfig
from recsys_core.data.content import (
    behaviour_features,
    information_richness,
    interaction_counts,
    item_modalities,
    text_features,
)
from recsys_core.data.sequences import SequenceData, synthetic_sequences
from recsys_core.layers.quantize import (
    Codebook,
    ResidualQuantizer,
    cross_orthogonality,
    mutual_orthogonality,
)
from recsys_core.registry import build_model, get_model, get_task
from recsys_core.tasks.semantic_id import collision_suffix
from recsys_core.trainer import Trainer, load_run

TOKENIZERS = ["rqvae", "mmq", "ada_sid", "mpq"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def smoke_config(name: str) -> ExperimentConfig:
    return ExperimentConfig.from_yaml(get_model(name).smoke_config)


@pytest.mark.parametrize("name", TOKENIZERS)
def test_tokenizer_trains_and_writes_unique_codes(name, tmp_path):
    cfg = smoke_config(name)
    task = get_task("semantic_id")(cfg)
    torch.manual_seed(cfg.train.seed)
    untrained = task.build_model().eval()
    _, untrained_error = task.encode_all(untrained)

    result = Trainer(cfg, tmp_path).fit()
    assert result["recon_error"] < 0.5 * untrained_error

    codes = np.load(tmp_path / "codes.npy")
    n_items = task.data.n_items
    sizes = result["codebook_sizes"]
    assert codes.dtype == np.int64 and codes.shape == (n_items + 1, len(sizes) + 1)
    assert not codes[0].any()
    for level, size in enumerate(sizes):
        assert codes[1:, level].min() >= 0 and codes[1:, level].max() < size
    assert len(np.unique(codes[1:], axis=0)) == n_items  # the suffix column separates every collision
    assert codes[1:, -1].max() == result["suffix_max"] == result["suffix_size"] - 1

    content = np.load(tmp_path / "content.npy")
    assert content.dtype == np.float32 and content.shape[0] == n_items + 1
    np.testing.assert_allclose(np.linalg.norm(content[1:], axis=1), 1.0, atol=1e-5)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 < metrics["codebook_stats"]["utilisation_mean"] <= 1

    _, _, reloaded = load_run(tmp_path)  # the run folder rebuilds the same tokenizer
    np.testing.assert_array_equal(task.encode_all(reloaded)[0], codes[1:, :-1])


def test_finetune_epochs_are_refused_for_models_without_that_stage():
    cfg = smoke_config("rqvae")
    cfg.task_params["behaviour_finetune_epochs"] = 3
    with pytest.raises(ValueError, match="no behaviour-aware fine-tuning"):
        get_task("semantic_id")(cfg).build_model()


def test_soft_indexing_keeps_hard_codes_in_the_forward_pass():
    torch.manual_seed(0)
    codebook = Codebook(8, 4, metric="cosine")
    codebook.train()
    z = torch.randn(32, 4, requires_grad=True)
    hard = codebook(z)
    soft = codebook(z, soft_tau=0.1)
    torch.testing.assert_close(soft.quantized, codebook.weight[hard.codes])
    soft.soft.sum().backward()
    assert z.grad.abs().sum() > 0  # the soft mixture carries gradients back to the encoder output


def _utilisation_on_clusters(kmeans_init: bool, restart_every: int, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(32, 8, generator=gen) * 5
    torch.manual_seed(seed)
    codebook = Codebook(32, 8, kmeans_init=kmeans_init, restart_every=restart_every)
    optimiser = torch.optim.Adam(codebook.parameters(), lr=0.05)
    codebook.train()
    for _ in range(150):
        z = centres[torch.randint(32, (256,), generator=gen)] + 0.1 * torch.randn(256, 8, generator=gen)
        loss = codebook(z).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return len(torch.unique(codebook.assign(centres))) / 32


def test_kmeans_init_and_dead_code_restart_keep_codebook_utilised():
    for seed in range(2):
        good = _utilisation_on_clusters(kmeans_init=True, restart_every=10, seed=seed)
        plain = _utilisation_on_clusters(kmeans_init=False, restart_every=0, seed=seed)
        assert good >= 0.9
        assert plain < good


def test_dead_codes_are_reseeded_from_batch_vectors():
    def utilisation(restart_every: int) -> float:
        torch.manual_seed(0)
        codebook = Codebook(16, 4, kmeans_init=False, restart_every=restart_every)
        with torch.no_grad():
            codebook.weight.add_(100.0)  # every codeword far from the data: all but one stay unused
        codebook.train()
        data = torch.randn(512, 4)
        for _ in range(30):
            codebook(data[torch.randint(512, (128,))])
        return len(torch.unique(codebook.assign(data))) / 16

    assert utilisation(restart_every=0) <= 1 / 16
    assert utilisation(restart_every=5) >= 0.75


def test_residual_quantizer_levels_reduce_error():
    torch.manual_seed(0)
    z = torch.randn(512, 8)
    quantizer = ResidualQuantizer(levels=3, size=32, dim=8)
    quantizer.train()
    quantizer(z)  # k-means initialisation level by level
    codes = quantizer.encode(z)
    errors = [(z - sum(cb.weight[codes[:, i]] for i, cb in enumerate(quantizer.codebooks[:n]))).pow(2).sum(-1).mean()
              for n in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]


def test_mpq_gives_one_token_per_expert():
    torch.manual_seed(0)
    model = build_model("mpq", {"experts": 5, "codebook_size": 8, "latent_dim": 8, "hidden": [16]},
                        modality_dims={"attributes": 6, "behaviour": 4})
    batch = {"attributes": torch.randn(20, 6), "behaviour": torch.randn(20, 4), "item": torch.arange(1, 21)}
    model.train()
    model.loss(batch)
    codes = model.encode(batch)
    assert codes.shape == (20, 5) and model.codebook_sizes == [8] * 5
    assert codes.min() >= 0 and codes.max() < 8


def test_ada_sid_richness_weight_grows_with_interaction_counts():
    counts = np.array([0, 0, 1, 3, 10, 100, 1000])
    richness = information_richness(counts)
    assert richness[0] == 0 and richness[-1] == pytest.approx(1.0)
    assert np.all(np.diff(richness[1:]) > 0)
    model = build_model("ada_sid", {}, modality_dims={"attributes": 6, "behaviour": 4})
    weights = model.richness_weight(torch.from_numpy(richness)).numpy()
    assert np.all(np.diff(weights[1:]) > 0) and weights[1] < 0.05 and weights[-1] > 0.95
    codes = model.encode({"attributes": torch.randn(3, 6), "behaviour": torch.randn(3, 4)})
    assert codes.shape == (3, len(model.codebook_sizes)) == (3, 4)  # content levels + behavioural levels


def test_ada_sid_requires_behaviour_and_content():
    with pytest.raises(ValueError, match="behaviour modality"):
        build_model("ada_sid", {}, modality_dims={"attributes": 6})
    with pytest.raises(ValueError, match="content modality"):
        build_model("ada_sid", {}, modality_dims={"behaviour": 6})


def test_orthogonality_loss_is_zero_for_orthogonal_and_positive_for_identical():
    eye = torch.eye(4).unsqueeze(0).repeat(3, 1, 1)  # 3 items, 4 orthogonal expert outputs each
    assert cross_orthogonality(eye[:, :2], eye[:, 2:]) == pytest.approx(0.0, abs=1e-6)
    assert mutual_orthogonality(eye) == pytest.approx(0.0, abs=1e-6)
    same = torch.randn(3, 1, 5).repeat(1, 4, 1)
    assert cross_orthogonality(same[:, :2], same[:, 2:]) == pytest.approx(4.0, abs=1e-5)
    assert mutual_orthogonality(same) == pytest.approx(6.0, abs=1e-5)


def test_text_modality_without_titles_is_a_clear_error():
    data = synthetic_sequences(n_users=30, n_items=20)
    with pytest.raises(ValueError, match="no item text"):
        item_modalities(data, ["text", "attributes"])
    with pytest.raises(ValueError, match="unknown modalities"):
        item_modalities(data, ["images"])
    with pytest.raises(ValueError, match="non-empty list"):
        item_modalities(data, [])


def test_text_features_embed_titles_by_meaning():
    titles = ["", "red matte lipstick", "lipstick in a matte red shade", "garden hose 30 m", ""]
    data = SequenceData("titles", [np.array([1, 2, 3, 4])], n_items=4, item_text=titles)
    vectors = text_features(data)
    assert vectors.shape == (5, 384) and not vectors[0].any() and not vectors[4].any()
    assert vectors[1] @ vectors[2] > vectors[1] @ vectors[3] + 0.3


def test_attribute_and_behaviour_features_are_normalised():
    data = synthetic_sequences(n_users=200, n_items=60)
    feats = item_modalities(data, ["attributes", "behaviour"], dim=8)
    for matrix in feats.values():
        assert matrix.shape == (61, 8) and matrix.dtype == np.float32 and not matrix[0].any()
        np.testing.assert_allclose(np.linalg.norm(matrix[1:], axis=1), 1.0, atol=1e-5)


def test_behaviour_features_use_training_prefixes_only():
    data = synthetic_sequences(n_users=200, n_items=60)
    base = behaviour_features(data, dim=8)
    counts = interaction_counts(data)

    changed = copy.deepcopy(data)
    for seq in changed.sequences[:50]:
        seq[-2:] = [1, 2]  # the validation and test items
    np.testing.assert_array_equal(behaviour_features(changed, dim=8), base)
    np.testing.assert_array_equal(interaction_counts(changed), counts)

    control = copy.deepcopy(data)
    for seq in control.sequences[:50]:
        seq[0] = 1  # a training item: the features must notice
    assert not np.array_equal(behaviour_features(control, dim=8), base)


def test_collision_suffix_numbers_items_sharing_a_tuple():
    codes = np.array([[1, 2], [3, 4], [1, 2], [1, 2], [3, 4], [0, 0]])
    np.testing.assert_array_equal(collision_suffix(codes), [0, 0, 1, 2, 1, 0])
    with pytest.raises(ValueError):
        collision_suffix(np.zeros((0, 2)))


def test_config_points_at_real_beauty_data():
    for name in TOKENIZERS:
        cfg = ExperimentConfig.from_yaml(Path(get_model(name).default_config))
        assert cfg.task == "semantic_id" and cfg.data["kind"] == "s3rec"
        # MMQ's first stage is content only: behaviour reaches it through the retriever in stage 2
        expected = ["attributes"] if name == "mmq" else ["attributes", "behaviour"]
        assert cfg.task_params["modalities"] == expected
