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
