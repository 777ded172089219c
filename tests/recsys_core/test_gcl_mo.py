"""GCL-MO: the item graph, the modified contrastive loss, graph propagation, both objectives, the inverted
table that serves the embeddings, and the search_retrieval task over a simulated sandbox log. Each paper
mechanism has a test that fails when it is switched off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys_core import ExperimentConfig
from recsys_core.data.item_graph import InvertedTable, co_click_graph, normalized_adjacency
from recsys_core.models.gcl_mo import GCLMO, multi_positive_loss
from recsys_core.registry import get_model
from recsys_core.tasks.search_retrieval import multi_objective_lift
from recsys_core.trainer import Trainer


@pytest.fixture(autouse=True)
def _seed(one_torch_thread):
    torch.manual_seed(0)


# ---------------------------------------------------------------- the item graph and the inverted table


def test_co_click_graph_links_clicks_within_the_window_weights_purchases_and_prunes():
    prefixes = [np.array([1, 2, 3, 4]), np.array([5, 5, 6])]
    graph = co_click_graph(prefixes, n_items=6, window=1, purchased=[{4}, set()], purchase_weight=3.0,
                           max_neighbours=0).toarray()
    assert (graph == graph.T).all() and np.diag(graph).sum() == 0  # symmetric, no self loops (5 → 5)
    assert graph[1, 2] == graph[2, 3] == 1.0 and graph[1, 3] == 0  # window 1: neighbours only
    assert graph[3, 4] == 3.0  # an edge touching a bought item weighs purchase_weight
    assert graph[5, 6] == 1.0 and graph[0].sum() == 0  # padding row empty
    wide = co_click_graph(prefixes, n_items=6, window=2, max_neighbours=0).toarray()
    assert wide[1, 3] == 1.0 and wide[1, 4] == 0
    # repeated co-clicks add up; pruning keeps each row's heaviest edges (then symmetrises)
    heavy = co_click_graph([np.array([1, 2, 1, 2, 1, 3])], n_items=3, window=1, max_neighbours=1).toarray()
    assert heavy[1, 2] == 4.0 and heavy[1, 3] == 1.0  # 3's only edge is kept, so 1 keeps it too
    adjacency = normalized_adjacency(co_click_graph(prefixes, 6, 1, max_neighbours=0)).to_dense()
    assert torch.allclose(adjacency, adjacency.T) and adjacency[0].abs().sum() == 0
    with pytest.raises(ValueError, match="window"):
        co_click_graph(prefixes, 6, window=0)


def test_inverted_table_holds_each_items_true_neighbours_and_merges_triggers_by_recency():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(301, 8)).astype(np.float32)
    vectors[0] = 0
    table = InvertedTable.from_vectors(vectors, k=5)
    scores = vectors[1:] @ vectors[1:].T
    np.fill_diagonal(scores, -np.inf)
    assert np.array_equal(table.neighbours[1:], np.argsort(-scores, 1)[:, :5] + 1)
    assert (table.neighbours[0] == 0).all() and table.megabytes > 0
    # two triggers: the recent one's neighbours come first
    out = table.retrieve([np.array([10, 20])], depth=10, decay=0.1)[0]
    assert out[0] == table.neighbours[20, 0]
    # the triggers are never returned, though here each is in the other's row
    old = 10
    recent = int(table.neighbours[old, 0])
    out = table.retrieve([np.array([old, recent])], depth=4)[0]
    assert old not in out and recent not in out and (out > 0).all()
    assert (table.retrieve([np.array([0])], depth=4) == 0).all()  # no trigger, nothing retrieved
    graph = co_click_graph([np.array([1, 2, 1, 3])], 3, window=1, max_neighbours=0)
    cf = InvertedTable.from_graph(graph, k=2)
    assert cf.neighbours[1].tolist() == [2, 3] and cf.neighbours[3].tolist() == [1, 0]


# ---------------------------------------------------------------- the modified contrastive loss


def test_modified_loss_keeps_positives_out_of_each_others_denominators():
    """An anchor with two positives: raising one positive's score must not raise the other's loss term
    (the mutual suppression GCL-MO's loss removes); the standard multi-positive InfoNCE does suppress."""
    logits = torch.tensor([[2.0, 2.0, 0.5, 0.1]], requires_grad=True)
    columns = torch.tensor([[0, 1]])
    own = torch.tensor([[True, True, False, False]])
    valid = torch.ones_like(own)
    first_only = torch.tensor([[0, -1]])  # the loss term of the first positive alone
    modified = multi_positive_loss(logits, first_only, own, valid, modified=True)
    (grad,) = torch.autograd.grad(modified, logits)
    assert grad[0, 1] == 0  # the other positive is not in the denominator
    standard = multi_positive_loss(logits, first_only, own, valid, modified=False)
    (grad,) = torch.autograd.grad(standard, logits)
    assert grad[0, 1] > 0  # standard: the other positive pushes this one's probability down
    both_modified = multi_positive_loss(logits, columns, own, valid, modified=True)
    both_standard = multi_positive_loss(logits, columns, own, valid, modified=False)
    assert both_modified < both_standard


def test_gcl_mo_uses_the_modified_loss_unless_asked_for_the_standard_one():
    graph = co_click_graph([np.arange(1, 21)], 20, window=2, max_neighbours=0)
    model = GCLMO(20, normalized_adjacency(graph), hidden=8, n_random=0, dropout=0.0)
    anchors, positives = torch.tensor([5, 9]), torch.tensor([[4, 6], [8, 10]])
    table = model.item_table()
    modified = model.personalization_loss(table, anchors, positives)
    model.contrastive = "standard"
    assert model.personalization_loss(table, anchors, positives) > modified
    with pytest.raises(ValueError, match="contrastive"):
        GCLMO(20, contrastive="supcon")
    with pytest.raises(ValueError, match="objectives"):
        GCLMO(20, objectives=["clicks"])


# ---------------------------------------------------------------- graph propagation


def test_graph_propagation_lets_an_item_borrow_from_its_neighbours():
    """With propagation an item's vector moves when a graph neighbour's input changes; without it
    (graph_layers 0) it does not."""
    graph = co_click_graph([np.array([1, 2, 3]), np.array([4, 5])], 5, window=1, max_neighbours=0)
    for layers, moves in ((2, True), (0, False)):
        torch.manual_seed(0)
        model = GCLMO(5, normalized_adjacency(graph), hidden=8, graph_layers=layers, dropout=0.0).eval()
        before = model.item_table().detach().clone()
        with torch.no_grad():
            model.id_emb.weight[2] += 1.0  # item 2's neighbours are 1 and 3
        after = model.item_table().detach()
        assert torch.allclose(before[4], after[4])  # not connected to 2
        assert (not torch.allclose(before[1], after[1], atol=1e-6)) is moves



def test_the_shared_text_projection_starts_on_the_titles_principal_directions():
    """Queries and titles share one projection to `hidden` dims; it starts on the titles' principal
    directions, so query-title cosines start close to their MiniLM values (titles here span 6 of 48 dims),
    far closer than through a random map of the same size."""
    rng = np.random.default_rng(0)
    titles = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 48)) + 0.05 * rng.normal(size=(300, 48))
    titles = np.vstack([np.zeros((1, 48)), titles / np.linalg.norm(titles, axis=1, keepdims=True)]).astype(np.float32)
    torch.manual_seed(0)
    model = GCLMO(300, item_text_vectors=titles, query_dim=48, hidden=6, use_id=False, dropout=0.0).eval()
    weight = model.text_proj.weight.detach()
    assert torch.allclose(weight @ weight.T, torch.eye(6), atol=1e-4)  # orthonormal directions
    t = torch.as_tensor(titles[1:])
    queries = t[:100] + 0.1 * torch.randn(100, 48)

    def cosine_fidelity(w):  # correlation of projected query-title cosines with the originals
        before = F.normalize(queries, dim=-1) @ t.T
        after = F.normalize(queries @ w.T, dim=-1) @ F.normalize(t @ w.T, dim=-1).T
        return torch.corrcoef(torch.stack([before.ravel(), after.ravel()]))[0, 1].item()
    assert cosine_fidelity(weight) > 0.95
    assert cosine_fidelity(weight) > cosine_fidelity(torch.randn(6, 48)) + 0.1


def test_the_monitor_weighs_both_objectives_alike_against_their_floors():
    floors = {"itemcf_ndcg@10": 0.01, "minilm_rel_ndcg@10": 0.25}
    # twice item-CF on personalization and MiniLM's relevance: lift (2 + 1) / 2
    assert multi_objective_lift({"pers_ndcg@10": 0.02, "rel_ndcg@10": 0.25, **floors}) == pytest.approx(1.5)
    # a small personalization gain outweighs a relevance loss of the same size (relevance's floor is 25x higher)
    better = multi_objective_lift({"pers_ndcg@10": 0.03, "rel_ndcg@10": 0.24, **floors})
    assert better > multi_objective_lift({"pers_ndcg@10": 0.02, "rel_ndcg@10": 0.25, **floors})
    assert multi_objective_lift({"pers_ndcg@10": 0.02}) == pytest.approx(0.02)  # no floor, no relevance: raw

# ---------------------------------------------------------------- the task, end to end


def gcl_config(root, *overrides: str) -> ExperimentConfig:
    return ExperimentConfig.from_yaml(get_model("gcl_mo").smoke_config, [
        f"data.path={root / 'sim'}", f"task_params.queries_dir={root / 'queries'}", "task_params.item_text=false",
        *overrides])


def test_search_retrieval_trains_serves_through_the_inverted_table_and_saves_its_artefacts(sim_and_queries, tmp_path):
    root = sim_and_queries
    trainer = Trainer(gcl_config(root, "train.epochs=4", "train.eval_every=2"), tmp_path / "run")
    task = trainer.task
    assert task.query_counts["dropped"] == 1 and task.query_counts["test"] == 40  # the outside gold is dropped
    torch.manual_seed(0)
    untrained = task.evaluate(task.build_model().eval(), "test")
    test = trainer.fit()["test"]
    for key in ("pers_ndcg@10", "table_recall@50", "rel_recall@50", "itemcf_recall@50", "mo_lift@10",
                "table_serve_us", "pers_tail_recall@50"):
        assert key in test, key
    assert test["pers_recall@50"] > untrained["pers_recall@50"]
    assert test["rel_recall@50"] > untrained["rel_recall@50"] + 0.1
    assert test["table_recall@50"] > 0
    saved = np.load(tmp_path / "run" / "test_ranks.npz")
    assert len(saved["rank"]) == len(saved["table_rank"]) == task.data.n_users and len(saved["rel_rank"]) == 40
    table = InvertedTable.load(tmp_path / "run" / "inverted_table.npz")
    assert table.neighbours.shape == (task.data.n_items + 1, 10)


def test_each_objective_is_what_teaches_its_metric(sim_and_queries, tmp_path):
    """Trained on one objective only, a model is better at that objective's metric than the model trained
    on the other one (switching an objective's loss off loses its metric)."""
    root = sim_and_queries
    results = {}
    for objective in ("personalization", "relevance"):
        torch.manual_seed(0)
        cfg = gcl_config(root, "train.epochs=4", "train.eval_every=4", f"model_params.objectives=[{objective}]")
        results[objective] = Trainer(cfg, tmp_path / objective).fit()["test"]
    pers, rel = results["personalization"], results["relevance"]
    assert pers["pers_recall@50"] > rel["pers_recall@50"] + 0.05
    assert rel["rel_recall@50"] > pers["rel_recall@50"] + 0.1


def test_bad_task_inputs_get_clear_errors(sim_and_queries, tmp_path):
    root = sim_and_queries
    from recsys_core.registry import get_task

    cfg = gcl_config(root)
    cfg.task_params.pop("queries_dir")
    with pytest.raises(ValueError, match="queries_dir is required"):
        get_task("search_retrieval")(cfg)
    with pytest.raises(FileNotFoundError, match="queries_train.jsonl"):
        get_task("search_retrieval")(gcl_config(root, f"task_params.queries_dir={tmp_path}"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "queries_train.jsonl").write_text('{"query": "shoes"}\n')
    (bad / "queries_heldout.jsonl").write_text("")
    with pytest.raises(ValueError, match="queries_train.jsonl:1"):
        get_task("search_retrieval")(gcl_config(root, f"task_params.queries_dir={bad}"))
    with pytest.raises(ValueError, match="simulator data"):
        get_task("search_retrieval")(gcl_config(root, "data.kind=synthetic"))
