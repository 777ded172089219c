"""A built sandbox opened for use: the search engine, the tasks, shops and vouchers."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from sandbox.catalogue.build import LUCENE_INDEX_DIR, open_backend
from sandbox.data_model import Voucher
from sandbox.engines.base import SearchBackend, SearchPage, SearchRequest
from sandbox.engines.lucene_bm25 import LuceneBM25Index, build_lucene_index
from sandbox.tasks import Task, read_tasks
from shoplab_core.errors import UserError

SEARCH_MODES = ("bm25", "dense", "hybrid")


def check_search_mode(data_dir: Path, mode: str) -> None:
    """A readable error for an unknown mode, or for dense/hybrid on a sandbox without a dense index."""
    from sandbox.dense.index import dense_index_exists

    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}; choose from {', '.join(SEARCH_MODES)}")
    if mode != "bm25" and not dense_index_exists(data_dir):
        raise FileNotFoundError(
            f"search mode {mode!r} needs a dense index, and {data_dir} has none: run `shoplab sandbox dense-index "
            f"--data-dir {data_dir}` (or build the sandbox with `shoplab sandbox build ... --dense`)")



class SandboxNotFoundError(UserError, FileNotFoundError):
    """`--data-dir` names a folder with no built sandbox in it."""


def sandbox_manifest_path(data_dir: Path) -> Path:
    """The manifest of the sandbox in `data_dir`; a `SandboxNotFoundError` that says how to build one if none."""
    path = Path(data_dir) / "manifest.json"
    if not path.exists():
        raise SandboxNotFoundError(f"{data_dir} is not a built sandbox (no manifest.json): build it with "
                                   f"`shoplab sandbox build --data-dir {data_dir}` (or `make run`)")
    return path

class ShoppingWorld:
    """Shared, read-only state of one sandbox. Episodes (`ShoppingEnv`) keep their own state.

    `search_mode` is how `find_product` retrieves (shoplab profile): `bm25` (the engine's tiered BM25,
    the default), `dense` (the trained query tower and the faiss index, `sandbox.dense`) or `hybrid`
    (both, reciprocal-rank fused). Every mode applies the same filters inside the search and answers
    the same `SearchPage`, so observations look alike. The `shoppingbench` profile's search is
    ShoppingBench's own Lucene BM25 (`compat_index`) in every mode."""

    def __init__(self, data_dir: str | Path, backend: SearchBackend, manifest: dict[str, Any],
                 search_mode: str = "bm25"):
        self.data_dir = Path(data_dir)
        self.backend = backend
        self.manifest = manifest
        self._dense = None
        self._dense_lock = threading.Lock()  # parallel episodes share the world: load the index once
        self.search_mode = "bm25"
        self.set_search_mode(search_mode)

    def set_search_mode(self, mode: str) -> None:
        """Switch retrieval mode; dense and hybrid need the sandbox's dense index (a readable error if absent)."""
        check_search_mode(self.data_dir, mode)
        self.search_mode = mode

    @property
    def dense(self):
        """The sandbox's dense index (`sandbox.dense.DenseIndex`), loaded on first use."""
        if self._dense is None:
            from sandbox.dense.index import open_dense_index

            with self._dense_lock:
                if self._dense is None:
                    self._dense = open_dense_index(self.data_dir)
        return self._dense

    @classmethod
    def open(cls, data_dir: str | Path, backend: str | None = None, es_options: dict[str, Any] | None = None,
             search_mode: str | None = None) -> ShoppingWorld:
        """`search_mode` None: the manifest's `search_mode` (bm25 when it names none)."""
        data_dir = Path(data_dir)
        manifest = json.loads(sandbox_manifest_path(data_dir).read_text())
        name = backend or manifest.get("backend", "tantivy")
        options = {**manifest.get("es_options", {}), **(es_options or {})} if name == "elasticsearch" else None
        mode = search_mode or manifest.get("search_mode") or "bm25"
        check_search_mode(data_dir, mode)  # before the engine is opened: nothing to close on error
        return cls(data_dir, open_backend(data_dir, name, create=False, es_options=options), manifest, mode)

    @cached_property
    def tasks(self) -> dict[str, Task]:
        return {t.task_id: t for t in read_tasks(self.data_dir / "tasks.jsonl")}

    def tasks_by_intent(self, intent: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.intent.value == intent]

    @cached_property
    def vouchers(self) -> dict[str, Voucher]:
        out: dict[str, Voucher] = {}
        path = self.data_dir / "vouchers.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                raw = json.loads(line)
                out[raw["voucher_id"]] = Voucher.model_validate(raw)
        return out

    def voucher_for_task(self, task_id: str) -> Voucher | None:
        return self.vouchers.get(f"V-{task_id}")

    @cached_property
    def compat_index(self) -> LuceneBM25Index:
        """ShoppingBench's relevance (Lucene's analysis and BM25) over this catalogue: the `shoppingbench`
        profile's search. Built with the sandbox; a sandbox built before it existed gets it on first use
        (in product-id order, which then decides BM25 ties)."""
        path = self.data_dir / LUCENE_INDEX_DIR
        if not (path / "meta.json").exists():
            iter_all = getattr(self.backend, "iter_all", None)
            if iter_all is None:
                raise FileNotFoundError(f"{path} is missing; rebuild the sandbox (`shoplab sandbox build`)")
            build_lucene_index(iter_all(), path)
        return LuceneBM25Index(path)

    def search(self, request: SearchRequest) -> SearchPage:
        if self.search_mode == "dense":
            from sandbox.dense.search import dense_search

            return dense_search(self.dense, self.backend, request)
        if self.search_mode == "hybrid":
            from sandbox.dense.search import hybrid_search

            return hybrid_search(self.dense, self.backend, request)
        return self.backend.search_sorted_or_relaxed(request)

    def products(self, product_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self.backend.get_products(product_ids)

    def filler_products(self, n: int, start: int = 0) -> list[dict[str, Any]]:
        """Products `start .. start+n` of the generated (non-task) part of the catalogue, regenerated
        deterministically from the build's profile and seed. They are not the task golds or their
        decoys, so training data drawn from them never shows a model an evaluation product."""
        from sandbox.catalogue.generator import FillerGenerator
        from sandbox.catalogue.profile import CatalogueProfile

        n_fill = int(self.manifest.get("n_fillers", 0))
        n = max(0, min(n, n_fill - start))
        if n == 0:
            return []
        special_path = self.data_dir / "special_products.jsonl"
        reserved = {json.loads(line)["product_id"] for line in special_path.read_text().splitlines() if line}
        gen = FillerGenerator(CatalogueProfile.from_json(self.data_dir / "profile.json"), int(self.manifest["seed"]),
                              int(self.manifest["requested_products"]), reserved_ids=reserved)
        return list(gen.stream(n, start=start))

    def close(self) -> None:
        self.backend.close()
