"""REG4Rec: MPQ's unordered tokens that do not collapse, and the reasoning generator's mechanisms
(CRSS, CORP, PARS, MSRA), each pinned by a test that fails when the mechanism is switched off."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_core import ExperimentConfig, Trainer
from recsys_core.data import training_sequences
from recsys_core.data.sequences import SequenceData, split_inputs
from recsys_core.models.mpq.model import MPQ, TokenSetIndex
from recsys_core.models.reg4rec import REG4Rec
from recsys_core.tasks.reasoning import pars_examples

SMOKE = Path(__file__).resolve().parents[2] / "recsys_core" / "models" / "reg4rec" / "smoke.yaml"


def small_codes(n_items: int = 40, sizes=(5, 4, 3), seed: int = 0) -> np.ndarray:
    """Random distinct token sets over `sizes` free codebooks plus a collision column."""
    from recsys_core.tasks.generative import add_collision_suffix

    rng = np.random.default_rng(seed)
    codes = np.stack([rng.integers(0, s, n_items) for s in sizes], 1)
    return np.vstack([np.zeros((1, len(sizes) + 1), dtype=np.int64), add_collision_suffix(codes)])


def small_model(codes: np.ndarray, **kw) -> REG4Rec:
    torch.manual_seed(0)
    return REG4Rec(codes, free_codebooks=codes.shape[1] - 1, max_items=8, hidden=16, layers=1, heads=2,
                   dropout=0.0, **kw).eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = ExperimentConfig.from_yaml(SMOKE, ["train.progress=false", "train.epochs=8"])
    trainer = Trainer(cfg, tmp_path_factory.mktemp("reg4rec") / "run")
    trainer.fit()
    model = trainer.task.build_model()
    model.load_state_dict(torch.load(trainer.run_dir / "best.pt"))
    return trainer.task, model.eval()


# ---- MPQ ----------------------------------------------------------------------------------------------
def test_token_set_lookup_returns_the_item_for_every_order_of_its_tokens():
    codes = small_codes()
    index = TokenSetIndex(codes)
    for item in range(1, len(codes)):
        tokens = list(enumerate(codes[item].tolist()))
        assert {index.lookup(order) for order in itertools.permutations(tokens)} == {item}
        assert index.lookup(tokens[:-1]) is None  # a partial set is not an item
    clash = codes.copy()
    clash[2] = clash[1]
    with pytest.raises(ValueError, match="share a token set"):
        TokenSetIndex(clash)


def _grid_features(seed: int = 0) -> dict[str, torch.Tensor]:
    """Items on a 6 x 6 grid of two independent factors, in 8 noisy dims: two 6-code experts can only
    give 36 distinct pairs if each takes one factor."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    a, b = a.flatten().repeat(8), b.flatten().repeat(8)
    basis = torch.randn(12, 8, generator=g)
    x = torch.cat([torch.nn.functional.one_hot(a, 6), torch.nn.functional.one_hot(b, 6)], 1).float() @ basis
    return {"x": x + 0.05 * torch.randn(x.shape, generator=g)}


def _train_mpq(seed: int = 0, steps: int = 300, **params) -> tuple[MPQ, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    batch = _grid_features(seed)
    model = MPQ({"x": 8}, experts=2, hidden=[32], decoder_hidden=[32], latent_dim=8, codebook_size=6,
                restart_every=0, **params)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), batch


def _code_mutual_information(model: MPQ, batch) -> float:
    from sklearn.metrics import mutual_info_score

    codes = model.encode(batch).numpy()
    return float(mutual_info_score(codes[:, 0], codes[:, 1]))


def test_mpq_code_diversity_makes_one_experts_token_say_little_about_anothers():
    """The diversity term (mutual information between experts' soft codes) is what stops experts from
    splitting the items the same way: measured on the hard codes, their mutual information drops."""
    with_div = _code_mutual_information(*_train_mpq(0, steps=100, diversity_weight=1.0))
    without = _code_mutual_information(*_train_mpq(0, steps=100, diversity_weight=0.0))
    assert with_div < 0.75 * without, (with_div, without)


def test_mpq_orthogonality_term_pushes_expert_outputs_apart():
    from recsys_core.layers.quantize import mutual_orthogonality

    def orth_after(weight: float) -> float:
        model, batch = _train_mpq(0, steps=60, orth_weight=weight, diversity_weight=0.0)
        with torch.no_grad():
            return float(mutual_orthogonality(model.expert_outputs(model.features(batch))))

    assert orth_after(5.0) < 0.5 * orth_after(0.0)


# ---- the generator's search ---------------------------------------------------------------------------
def test_beam_search_returns_distinct_real_items_whose_tokens_are_their_path():
    codes = small_codes()
    model = small_model(codes)
    history = torch.tensor([[0, 0, 3, 7], [1, 2, 3, 4]])
    paths = model.beam_search(history, beam_size=10)
    n_free = codes.shape[1] - 1
    for row in range(2):
        items = paths.items[row][paths.items[row] > 0].tolist()
        assert len(items) == 10 and len(set(items)) == 10
        for beam, item in enumerate(items):
            order = paths.codebooks[row, beam].tolist()
            assert sorted(order[:n_free]) == list(range(n_free)) and order[n_free:] == [n_free]
            assert paths.codes[row, beam].tolist() == [int(codes[item, r]) for r in order]
        assert torch.all(paths.scores[row, :-1] >= paths.scores[row, 1:])


def test_a_wide_beam_lists_every_item_once_whatever_order_each_path_took():
    codes = small_codes(n_items=30)
    paths = small_model(codes).beam_search(torch.tensor([[5, 6]]), beam_size=64)
    found = paths.items[0][paths.items[0] > 0].tolist()
    assert sorted(found) == list(range(1, 31))


def test_crss_emits_the_most_confident_codebook_first_and_the_ablation_keeps_the_fixed_order():
    codes = small_codes()
    model = small_model(codes)
    with torch.no_grad():  # codebook 2's code 1 becomes near certain
        model.out_bias[model.offsets[2] + 1] = 20.0
    history = torch.tensor([[1, 2], [3, 4], [5, 6]])
    with_crss = model.beam_search(history, beam_size=10, crss=True)
    fixed = model.beam_search(history, beam_size=10, crss=False)
    assert set(with_crss.codebooks[:, :, 0].flatten().tolist()) == {2}
    assert fixed.codebooks[:, :, :3].reshape(-1, 3).tolist() == [[0, 1, 2]] * 30


def test_crss_lets_paths_differ_across_users_of_a_trained_model(trained):
    task, model = trained
    histories, _ = split_inputs(task.data, "test")
    paths = model.beam_search(task.history_items(histories[:100]), beam_size=10, corp=False)
    orders = {tuple(o) for o in paths.codebooks.reshape(-1, paths.codebooks.shape[-1]).tolist()}
    assert len(orders) > 1


def _inconsistent_paths(model: REG4Rec, history: torch.Tensor, paths) -> int:
    """Finished paths whose some prefix fails CORP's self-reflection check."""
    bad = 0
    users = model.user_states(history)[:, -1]
    for row in range(paths.items.shape[0]):
        for beam in range(paths.items.shape[1]):
            if paths.items[row, beam] == 0:
                continue
            assigned = torch.full((1, model.n_codebooks), -1, dtype=torch.long)
            failed = False
            for step in range(model.free_codebooks):
                assigned[0, paths.codebooks[row, beam, step]] = paths.codes[row, beam, step]
                if step >= 1 and not bool(model._corp_consistent(users[row:row + 1], assigned)[0]):
                    failed = True
            bad += failed
    return bad


def test_corp_prunes_paths_that_contradict_themselves(trained):
    task, model = trained
    model.corp_rank = 1
    try:
        histories, _ = split_inputs(task.data, "test")
        history = task.history_items(histories[:20])
        with torch.no_grad():
            plain = model.beam_search(history, beam_size=10, corp=False)
            pruned = model.beam_search(history, beam_size=10, corp=True)
            bad_plain = _inconsistent_paths(model, history, plain)
            bad_pruned = _inconsistent_paths(model, history, pruned)
    finally:
        model.corp_rank = 3
    assert plain.pruned == 0 and pruned.pruned > 0
    assert bad_plain > 0 and bad_pruned < bad_plain


# ---- PARS and MSRA ------------------------------------------------------------------------------------
def test_pars_raises_the_rewarded_item_to_the_top_of_the_beam():
    codes = small_codes()
    model = small_model(codes, sft_weight=0.0, group_size=16, msra_gamma=0.0).train()
    history = torch.tensor([[1, 2, 3]] * 8)
    target = 17
    batch = {"pars_history": history, "pars_targets": torch.full((8,), target), "pars_batch_id": torch.tensor(0)}
    before = model.eval().beam_search(history[:1], beam_size=10).items[0].tolist()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(40):
        loss, parts = model.loss({**batch, "pars_pass": torch.tensor(0)})
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.eval().beam_search(history[:1], beam_size=10).items[0].tolist()
    assert before[0] != target
    assert after[0] == target


def test_grpo_clip_bounds_the_update_on_the_second_pass():
    codes = small_codes()
    model = small_model(codes, sft_weight=0.0, group_size=8, clip_eps=0.2).train()
    batch = {"pars_history": torch.tensor([[1, 2, 3]] * 4), "pars_targets": torch.tensor([5, 6, 7, 8]),
             "pars_batch_id": torch.tensor(3)}
    model.loss({**batch, "pars_pass": torch.tensor(0)})
    cached = model._old_log_probs[3]
    loss, _ = model.loss({**batch, "pars_pass": torch.tensor(1)})  # same paths, ratio = 1: reuses the sample
    assert model._old_log_probs[3] is cached
    assert torch.isfinite(loss)


def test_msra_credits_the_users_next_items_and_only_when_switched_on():
    codes = small_codes()
    model = small_model(codes, msra_gamma=0.5, msra_delta=0.7)
    generated = torch.as_tensor(codes[[9]])
    target, futures = torch.tensor([3]), torch.tensor([[4, 9, 0]])
    base = float(model.token_hits(generated, target))
    partial = float(model.token_hits(generated, torch.tensor([4])))  # item 4 shares some of item 9's tokens
    assert float(model.token_hits(generated, torch.tensor([9]))) == model.token_reward + model.item_reward
    assert float(model.rewards(generated, target, futures)) == pytest.approx(
        base + 0.5 * 0.7 * partial + 0.5 * 0.7 ** 2 * (model.token_reward + model.item_reward))
    model.msra_gamma = 0.0
    assert float(model.rewards(generated, target, futures)) == pytest.approx(base)


def test_pars_examples_draw_targets_and_future_rewards_from_the_training_prefix_only():
    rng = np.random.default_rng(0)
    seqs = [np.arange(1 + 10 * u, 1 + 10 * u + 4 + u % 5) for u in range(30)]  # every item appears once
    data = SequenceData("unique", seqs, n_items=400)
    held_out = {int(i) for s in seqs for i in s[-2:]}
    for _ in range(20):
        hist, targets, futures = pars_examples(data, rng, max_items=5, steps=3)
        used = set(hist.ravel().tolist()) | set(targets.tolist()) | set(futures.ravel().tolist())
        assert not (used - {0}) & held_out
        for row, prefix in enumerate(training_sequences(data)):
            t = list(prefix).index(targets[row])
            assert t >= 1
            assert [x for x in futures[row] if x] == list(prefix[t + 1:t + 4])


def test_pars_stage_without_an_sft_run_is_refused_with_a_clear_error(tmp_path):
    cfg = ExperimentConfig.from_yaml(SMOKE, ["task_params.stage=pars"])
    with pytest.raises(ValueError, match="init_from"):
        Trainer(cfg, tmp_path / "run")


def test_trained_generator_learns_the_walks_far_above_an_untrained_one(trained):
    task, model = trained
    torch.manual_seed(0)
    untrained = task.build_model().eval()
    assert task.evaluate(untrained, "test")["ndcg@10"] < 0.6
    assert task.evaluate(model, "test")["recall@10"] > 0.9
