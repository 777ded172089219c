"""Generative retrieval over semantic IDs: codes, the catalogue trie, cached decoding, beam search,
training on synthetic walks and the `recommend` tool entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_core import ExperimentConfig, Trainer, get_task, load_run
from recsys_core.data import training_sequences
from recsys_core.tasks.generative import (
    SemanticIdTrie,
    add_collision_suffix,
    constrained_beam_search,
    kmeans_codes,
)

SMOKE = Path(__file__).resolve().parents[2] / "recsys_core" / "models" / "tiger" / "smoke.yaml"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_task(*overrides: str):
    cfg = ExperimentConfig.from_yaml(SMOKE, list(overrides))
    return get_task(cfg.task)(cfg)


@pytest.fixture(scope="module")
def task():
    return make_task()


def random_codes(n_items: int, sizes: list[int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = np.zeros((n_items + 1, len(sizes) + 1), dtype=np.int64)
    codes[1:] = add_collision_suffix(np.stack([rng.integers(0, s, n_items) for s in sizes], 1))
    return codes


class RandomLogitsModel:
    """A stand-in decoder with random log-probabilities (mass on codes that lead nowhere too)."""

    def __init__(self, sizes: list[int], seed: int = 0):
        self.sizes, self.gen = sizes, torch.Generator().manual_seed(seed)

    def _log_probs(self, *shape: int) -> torch.Tensor:
        return torch.log_softmax(torch.randn(*shape, generator=self.gen) * 3, -1)

    def begin_decode(self, tokens):
        return self._log_probs(tokens.shape[0], self.sizes[0]), 0

    def extend_decode(self, level, parents, codes):
        return self._log_probs(*codes.shape, self.sizes[level + 1]), level + 1


def test_collision_suffix_and_kmeans_give_one_distinct_tuple_per_item():
    codes = np.array([[1, 2], [1, 2], [0, 0], [1, 2]])
    assert add_collision_suffix(codes)[:, -1].tolist() == [0, 1, 0, 2]
    features = np.repeat(np.eye(4), 5, axis=0)  # 4 distinct rows, 5 identical items each
    out = kmeans_codes(features, [4, 3])
    assert out.shape == (20, 3)
    assert len(np.unique(out[:, 0])) == 4
    assert len(np.unique(out, axis=0)) == 20
    assert out[:, -1].max() == 4  # five identical items → suffixes 0..4
    with pytest.raises(ValueError, match="positive"):
        kmeans_codes(features, [0])


def test_trie_allows_exactly_the_prefixes_of_real_items():
    codes = random_codes(300, [8, 8, 4])
    trie = SemanticIdTrie(codes)
    rng = np.random.default_rng(1)
    real = {tuple(row) for row in codes[1:]}
    for _ in range(200):  # random walks down the trie always end at the item with that tuple
        node, path = torch.zeros(1, dtype=torch.long), []
        for level in range(trie.n_levels):
            allowed = trie.allowed(level, node)[0]
            expected = {row[level] for row in real if tuple(row[:level]) == tuple(path)}
            assert set(np.flatnonzero(allowed.numpy()).tolist()) == expected
            code = int(rng.choice(np.flatnonzero(allowed.numpy())))
            path.append(code)
            node = trie.child(level, node, torch.tensor([code]))
        assert tuple(codes[int(node)]) == tuple(path)


def test_trie_rejects_items_sharing_a_tuple():
    codes = np.array([[0, 0], [1, 2], [1, 2]])
    with pytest.raises(ValueError, match="share a code tuple"):
        SemanticIdTrie(codes)


def test_constrained_beam_search_returns_distinct_real_items_even_from_a_random_decoder():
    codes = random_codes(500, [16, 16, 8])
    trie = SemanticIdTrie(codes)
    model = RandomLogitsModel(trie.level_sizes)
    items, scores = constrained_beam_search(model, torch.ones(7, 3, dtype=torch.long), trie, beam_size=20)
    assert items.shape == (7, 20)
    assert (items > 0).all() and (items <= 500).all()
    for row, score in zip(items, scores, strict=True):
        assert len(set(row.tolist())) == 20
        assert (score[:-1] >= score[1:]).all()  # best first


def test_beam_search_on_a_tiny_catalogue_lists_every_item_once():
    codes = random_codes(6, [2, 2])
    trie = SemanticIdTrie(codes)
    items, scores = constrained_beam_search(RandomLogitsModel(trie.level_sizes), torch.ones(3, 3, dtype=torch.long),
                                            trie, beam_size=10)
    for row, score in zip(items, scores, strict=True):
        real = row[row > 0].tolist()
        assert sorted(real) == [1, 2, 3, 4, 5, 6]
        assert torch.isinf(score[row == 0]).all()


def test_cached_decoding_matches_a_full_forward_pass(task):
    torch.manual_seed(0)
    model = task.build_model().eval()
    histories = [np.array([5, 11, 17]), np.array([2]), np.array([1, 2, 3, 4, 5, 6])]
    tokens = task.history_tokens(histories)
    path = torch.tensor([[1], [2], [0]])  # one level-0 code and one level-1 code per user
    path_l1 = torch.tensor([[1], [0], [1]])
    with torch.no_grad():
        lp0, state = model.begin_decode(tokens)
        lp1, state = model.extend_decode(state, torch.zeros(3, 1, dtype=torch.long), path)
        lp2, _ = model.extend_decode(state, torch.zeros(3, 1, dtype=torch.long), path_l1)
        full = torch.cat([tokens, path + model.offsets[0], path_l1 + model.offsets[1]], 1)
        hidden = model.hidden_states(full)
        expected = [torch.log_softmax(model.level_logits(hidden[:, -3 + level], level), -1) for level in range(3)]
    torch.testing.assert_close(lp0, expected[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lp1[:, 0], expected[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lp2[:, 0], expected[2], atol=1e-5, rtol=1e-4)


def test_wide_beam_search_ranks_every_item_by_its_exact_model_probability(task):
    """With a beam as wide as the catalogue nothing is pruned, so the beam order must equal the exact
    ranking of all items by the log-probability of their code tuples (scored by full forward passes)."""
    torch.manual_seed(1)
    model = task.build_model().eval()
    history = [np.array([3, 9, 15, 21])]
    n = task.data.n_items
    with torch.no_grad():
        items, scores = constrained_beam_search(model, task.history_tokens(history), task.trie, beam_size=n)
        prefix = task.history_tokens(history).expand(n, -1)
        full = torch.cat([prefix, torch.as_tensor(task.item_tokens[1:])], 1)
        hidden = model.hidden_states(full)
        exact = torch.zeros(n)
        for level in range(task.n_levels):
            lp = torch.log_softmax(model.level_logits(hidden[:, prefix.shape[1] - 1 + level], level), -1)
            exact += lp.gather(1, torch.as_tensor(task.codes[1:, level]).view(-1, 1)).squeeze(1)
    assert sorted(items[0].tolist()) == list(range(1, n + 1))
    torch.testing.assert_close(scores[0], exact[items[0] - 1], atol=1e-4, rtol=1e-4)
    assert items[0].tolist()[:5] == (torch.argsort(exact, descending=True)[:5] + 1).tolist()


def test_training_batches_target_every_item_but_the_first_once():
    task = make_task("data.max_items=3")  # short windows: long prefixes are cut into several
    loader = task.loader
    assert len(loader.windows) > len(training_sequences(task.data))
    total = 0
    for batch in loader.batches(np.random.default_rng(0)):
        assert batch["tokens"].shape == batch["targets"].shape
        total += int((batch["targets"] > 0).sum())
        real = batch["tokens"] > 0
        assert ((batch["targets"] > 0) <= real).all()  # no target at a padded input
    expected = sum(len(s) - 1 for s in training_sequences(task.data))
    assert total == expected * task.n_levels


def test_loss_goes_down_on_a_fixed_batch(task):
    torch.manual_seed(0)
    model = task.build_model()
    batch = next(task.loader.batches(np.random.default_rng(0)))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    with torch.no_grad():
        first = float(model.loss(batch))
    for _ in range(40):
        optimizer.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        assert float(model.loss(batch)) < 0.5 * first


def test_trained_model_learns_the_walks_far_above_an_untrained_one(tmp_path):
    cfg = ExperimentConfig.from_yaml(SMOKE)
    trainer = Trainer(cfg, tmp_path / "run")
    torch.manual_seed(0)
    untrained = trainer.task.evaluate(trainer.task.build_model().eval(), "test")
    result = trainer.fit()
    assert untrained["recall@10"] < 0.4  # chance is 10 / 60
    assert result["test"]["recall@10"] > 0.9
    assert result["test"]["ndcg@10"] > 0.7
    assert result["sid"]["collision_rate"] == 0.0
    assert (tmp_path / "run" / "codes.npy").exists()

    _, task, model = load_run(tmp_path / "run")
    seq = task.data.sequences[0]
    recs = task.recommend(model, [int(i) for i in seq[:-1]], k=10)
    assert len(recs) == 10 and len(set(recs)) == 10
    assert all(1 <= i <= task.data.n_items for i in recs)
    assert int(seq[-1]) in recs[:3]  # the walk's next item
    assert task.recommend(model, seq[:-1], k=3) == recs[:3]  # numpy ints are fine too


def test_recommend_rejects_bad_input_with_clear_errors(task):
    model = task.build_model()
    with pytest.raises(ValueError, match="empty"):
        task.recommend(model, [], k=5)
    with pytest.raises(ValueError, match="unknown item index 61"):
        task.recommend(model, [3, 61], k=5)
    with pytest.raises(ValueError, match="unknown item index 0"):
        task.recommend(model, [0], k=5)
    with pytest.raises(ValueError, match="not an integer"):
        task.recommend(model, ["7"], k=5)
    with pytest.raises(ValueError, match="list of item indices"):
        task.recommend(model, "7", k=5)
    with pytest.raises(ValueError, match="positive integer"):
        task.recommend(model, [7], k=0)
    assert len(task.recommend(model, [7], k=30)) == 30  # k beyond the configured beam widens it


def test_codes_from_a_tokenizer_run_folder_and_their_errors(tmp_path):
    codes = random_codes(60, [4, 4])
    run = tmp_path / "rqvae"
    run.mkdir()
    np.save(run / "codes.npy", codes)
    (run / "metrics.json").write_text(json.dumps({"codebook_stats": {}}))
    task = make_task("data.codes=null", f"data.sid_run={run}")
    assert task.trie.level_sizes == [int(s) for s in codes[1:].max(0) + 1]
    np.testing.assert_array_equal(task.codes, codes)

    with pytest.raises(FileNotFoundError, match="codes.npy"):
        make_task("data.codes=null", f"data.sid_run={tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="either data.sid_run or data.codes"):
        make_task(f"data.sid_run={run}")
    with pytest.raises(ValueError, match="needs semantic IDs"):
        make_task("data.codes=null")
    np.save(tmp_path / "short.npy", codes[:30])
    with pytest.raises(ValueError, match="30 rows but the data has 60 items"):
        make_task(f"data.codes={tmp_path / 'short.npy'}")
    dup = codes.copy()
    dup[2] = dup[1]
    np.save(tmp_path / "dup.npy", dup)
    with pytest.raises(ValueError, match="collision suffix"):
        make_task(f"data.codes={tmp_path / 'dup.npy'}")
