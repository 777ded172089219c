"""The zoo's foundation: registry, configs, the one training loop, metrics, and every smoke config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from recsys_core import ExperimentConfig, Trainer, get_model, load_run, model_names
from recsys_core.data import load_s3rec, split_inputs, synthetic_sequences, training_sequences
from recsys_core.metrics import codebook_stats, gauc, ranking_metrics, target_ranks

MODELS_DIR = Path(__file__).resolve().parents[2] / "recsys_core" / "models"
SMOKE_CONFIGS = sorted(MODELS_DIR.glob("*/smoke.yaml"))


def test_every_model_folder_has_a_config_and_a_smoke_config():
    for name in model_names():
        entry = get_model(name)
        assert entry.default_config.exists(), f"{name} has no config.yaml"
        assert entry.smoke_config.exists() or any(
            get_model(other).folder == entry.folder and get_model(other).smoke_config.exists()
            for other in model_names()), f"{name} has no smoke.yaml"


@pytest.mark.parametrize("config", SMOKE_CONFIGS, ids=[p.parent.name for p in SMOKE_CONFIGS])
def test_smoke_config_trains_and_writes_a_loadable_run(config, tmp_path, request):
    overrides = ["train.progress=false"]
    if config.parent.name == "gcl_mo":  # a simulator log over a sandbox and queries with golds
        root = request.getfixturevalue("sim_and_queries")
        overrides += [f"data.path={root / 'sim'}", f"task_params.queries_dir={root / 'queries'}",
                      "task_params.item_text=false"]
    if config.parent.name == "matt":  # a test-time wrapper: it needs a trained run on the same data
        base = ExperimentConfig.from_yaml(MODELS_DIR / "deepfm" / "smoke.yaml", ["train.progress=false",
                                          "train.epochs=1", f"data={ExperimentConfig.from_yaml(config).data}"])
        Trainer(base, tmp_path / "base").fit()
        overrides.append(f"model_params.base_run={tmp_path / 'base'}")
    cfg = ExperimentConfig.from_yaml(config, overrides)
    result = Trainer(cfg, tmp_path / "run").fit()
    assert result["steps"] > 0 or cfg.train.epochs == 0
    assert all(np.isfinite(v) for v in result["test"].values() if isinstance(v, float))
    trained = ("history.jsonl", "last.pt") if cfg.train.epochs else ()
    for name in ("config.yaml", "best.pt", "metrics.json", *trained):
        assert (tmp_path / "run" / name).exists(), name
    _, _, model = load_run(tmp_path / "run")
    assert isinstance(model, torch.nn.Module)


def test_sasrec_learns_the_synthetic_walks_far_above_an_untrained_model(tmp_path):
    cfg = ExperimentConfig.from_yaml(MODELS_DIR / "sasrec" / "smoke.yaml")
    trainer = Trainer(cfg, tmp_path / "run")
    untrained = trainer.task.evaluate(trainer.task.build_model().eval(), "test")
    trained = trainer.fit()["test"]
    assert untrained["recall@10"] < 0.4
    assert trained["recall@10"] > 0.9


def test_resume_continues_from_the_last_epoch_with_the_same_step_count(tmp_path):
    cfg = ExperimentConfig.from_yaml(MODELS_DIR / "sasrec" / "smoke.yaml", ["train.epochs=2"])
    Trainer(cfg, tmp_path / "run").fit()
    cfg4 = ExperimentConfig.from_yaml(MODELS_DIR / "sasrec" / "smoke.yaml", ["train.epochs=4"])
    resumed = Trainer(cfg4, tmp_path / "run").fit(resume=True)
    fresh = Trainer(cfg4, tmp_path / "fresh").fit()
    assert resumed["epochs_run"] == fresh["epochs_run"] == 4
    assert resumed["steps"] == fresh["steps"]
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_same_seed_same_result(tmp_path):
    cfg = ExperimentConfig.from_yaml(MODELS_DIR / "sasrec" / "smoke.yaml", ["train.epochs=2"])
    a = Trainer(cfg, tmp_path / "a").fit()["test"]
    b = Trainer(cfg, tmp_path / "b").fit()["test"]
    assert a == b


def test_config_errors_are_readable(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: sasrec\ntask: next_item\ntrain: {epoch: 3}\n")
    with pytest.raises(ValueError, match="unknown train settings"):
        ExperimentConfig.from_yaml(bad)
    bad.write_text("task: next_item\n")
    with pytest.raises(ValueError, match="`model` is required"):
        ExperimentConfig.from_yaml(bad)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        ExperimentConfig.from_yaml(MODELS_DIR / "sasrec" / "smoke.yaml", ["train.epochs"])


def test_base_inheritance_and_overrides(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {MODELS_DIR / 'sasrec' / 'smoke.yaml'}\nmodel_params: {{hidden: 16}}\n")
    cfg = ExperimentConfig.from_yaml(child, ["train.lr=0.01", "data.items=40"])
    assert cfg.model == "sasrec" and cfg.model_params["hidden"] == 16 and cfg.model_params["layers"] == 1
    assert cfg.train.lr == 0.01 and cfg.data["items"] == 40


def test_leave_one_out_split_keeps_valid_and_test_items_out_of_training():
    data = synthetic_sequences(n_users=50, n_items=30)
    train = training_sequences(data)
    valid_hist, valid_targets = split_inputs(data, "valid")
    test_hist, test_targets = split_inputs(data, "test")
    for seq, tr, vh, vt, th, tt in zip(data.sequences, train, valid_hist, valid_targets, test_hist, test_targets,
                                       strict=False):
        assert list(tr) == list(seq[:-2]) and vt == seq[-2] and tt == seq[-1]
        assert list(vh) == list(seq[:-2]) and list(th) == list(seq[:-1])


def test_s3rec_loader_reads_the_format_and_rejects_bad_lines(tmp_path):
    (tmp_path / "Mini.txt").write_text("1 1 2 3 4\n2 2 3 5\n3 4 5\n")
    (tmp_path / "Mini_item2attributes.json").write_text('{"1": [1, 2], "5": [3]}')
    data = load_s3rec(tmp_path, "Mini")
    assert data.n_items == 5 and data.n_users == 2  # the 2-item user cannot be split
    assert data.item_attributes[1] == [1, 2] and data.item_category()[5] == 3
    (tmp_path / "Bad.txt").write_text("1 1 x 3\n")
    with pytest.raises(ValueError, match="integers"):
        load_s3rec(tmp_path, "Bad")
    with pytest.raises(FileNotFoundError, match="S3-Rec"):
        load_s3rec(tmp_path, "Beauty")


def test_full_ranking_metrics_by_hand():
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.1], [0.0, 0.2, 0.3, 0.4]])
    ranks = target_ranks(scores, torch.tensor([2, 1]))
    assert ranks.tolist() == [1, 2]
    m = ranking_metrics(ranks.numpy(), ks=(1, 5))
    assert m["recall@1"] == 0.0 and m["recall@5"] == 1.0
    assert m["ndcg@5"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / 2)
    assert ranking_metrics(np.array([-1, 0]), ks=(5,))["recall@5"] == 0.5


def test_gauc_weights_users_by_impressions_and_skips_one_class_users():
    groups = np.array([1, 1, 1, 2, 2, 3])
    labels = np.array([1, 0, 0, 1, 0, 1])
    scores = np.array([0.9, 0.1, 0.2, 0.1, 0.9, 0.5])
    assert gauc(groups, labels, scores) == pytest.approx((1.0 * 3 + 0.0 * 2) / 5)


def test_codebook_stats_counts_collisions_and_utilisation():
    codes = np.array([[0, 1], [0, 1], [1, 2], [3, 0]])
    stats = codebook_stats(codes, [4, 4])
    assert stats["collision_rate"] == 0.5 and stats["distinct_ids"] == 3
    assert stats["utilisation_l0"] == 0.75


def test_cli_train_with_seeds_writes_a_summary_and_eval_reloads(tmp_path):
    from shoplab_cli import app

    runner = CliRunner()
    out = tmp_path / "runs"
    res = runner.invoke(app, ["recsys", "train", "--config", str(MODELS_DIR / "sasrec" / "smoke.yaml"),
                              "--set", "train.epochs=2", "--seed", "0", "--seed", "1", "--out-dir", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and "recall@10" in summary["test"]
    res = runner.invoke(app, ["recsys", "eval", "--run-dir", str(out / "seed1")])
    assert res.exit_code == 0 and "ndcg@10" in res.output
    res = runner.invoke(app, ["recsys", "eval", "--run-dir", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "not a recsys run folder" in res.output
    res = runner.invoke(app, ["recsys", "train", "--config", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "does not exist" in res.output
