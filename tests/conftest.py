"""Shared fixtures: one small sandbox built from the four ShoppingBench dev files, opened once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "shoppingbench"
TASK_FILES = [
    DATA_DIR / "synthesize_product_dev.jsonl",
    DATA_DIR / "synthesize_shop_dev.jsonl",
    DATA_DIR / "synthesize_voucher_dev.jsonl",
    DATA_DIR / "synthesize_web_simpleqa_dev.jsonl",
]


@pytest.fixture(scope="session")
def small_sandbox(tmp_path_factory) -> Path:
    """A sandbox of 5,000 products (golds + decoys + fillers) for the 312 dev tasks; returns its data dir."""
    from sandbox.catalogue import build_sandbox

    data_dir = tmp_path_factory.mktemp("sb")
    build_sandbox(data_dir, TASK_FILES, n_products=5000, seed=0, progress=False)
    return data_dir


@pytest.fixture(scope="session")
def world(small_sandbox):
    from sandbox.world import ShoppingWorld

    w = ShoppingWorld.open(small_sandbox)
    yield w
    w.close()


@pytest.fixture(scope="session")
def similarity():
    """The real MiniLM title similarity (about 9 s to load: loaded once per session)."""
    from sandbox.scorer import default_title_similarity

    return default_title_similarity()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny models: on a shared 2-core CPU more threads only spin-wait."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sim_and_queries(world, tmp_path_factory) -> Path:
    """A simulated shopper log over the small sandbox (`sim/`) and long-tail-style queries written from item
    titles (`queries/`, one training query's gold outside the universe): the `search_retrieval` inputs."""
    import json

    import numpy as np

    from recsys_core.simulate import simulate

    root = tmp_path_factory.mktemp("gcl")
    simulate(world, root / "sim", n_users=500, n_fillers=200, seed=3, sessions_per_user=6, progress=False)
    items = [json.loads(line) for line in (root / "sim" / "items.jsonl").read_text().splitlines()]
    picked = np.random.default_rng(0).choice(len(items), 120, replace=False)
    train = [{"query": " ".join(items[i]["title"].split()[:4]).lower(), "gold_ids": [items[i]["product_id"]]}
             for i in picked]
    train.append({"query": "a product outside the universe", "gold_ids": ["no-such-product"]})
    # held out: other words of 40 of the same products (item text is off in the tests that use it, so an item
    # never seen with a query could only be found through its attributes)
    heldout = [{"query": " ".join(items[i]["title"].split()[2:7]).lower(), "gold_ids": [items[i]["product_id"]]}
               for i in picked[:40]]
    (root / "queries").mkdir()
    (root / "queries" / "queries_train.jsonl").write_text("\n".join(json.dumps(r) for r in train))
    (root / "queries" / "queries_heldout.jsonl").write_text("\n".join(json.dumps(r) for r in heldout))
    return root
