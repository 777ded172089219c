"""`shoplab sandbox build`: tasks → gold products + decoys + generated fillers → a search index."""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sandbox.catalogue.generator import FillerGenerator, IdSpace, n_shops_for, shop_name
from sandbox.catalogue.golds import fit_decoys, reconstruct
from sandbox.catalogue.pipeline import interleave, prepared_fillers
from sandbox.catalogue.profile import profile_summary
from sandbox.data_model import Product
from sandbox.engines.base import SearchBackend
from sandbox.engines.lucene_bm25 import LuceneBM25Builder
from sandbox.engines.prepared import prepare_chunk
from sandbox.tasks import Task, load_located_tasks, write_tasks

FORMAT_VERSION = 1
LUCENE_INDEX_DIR = "index/lucene_bm25"  # ShoppingBench's relevance (sandbox.engines.lucene_bm25)


@dataclass
class BuildReport:
    data_dir: str
    backend: str
    n_products: int
    n_gold: int
    n_decoys: int
    n_fillers: int
    n_tasks: int
    intents: dict[str, int]
    seconds: float
    products_per_second: float
    conflicts: list[str]  # the tasks skipped (`skip_bad_tasks`), each with its file, line and why
    n_decoys_left_out: int = 0  # decoys that did not fit in `n_products` (see `fit_decoys`)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def open_backend(data_dir: Path, backend: str, create: bool, es_options: dict[str, Any] | None = None,
                 n_products: int = 0) -> SearchBackend:
    """The sandbox's search backend; `n_products` (a build's size) sizes tantivy's commits and heap."""
    if backend == "tantivy":
        from sandbox.engines.tantivy_backend import TantivyBackend, build_writer_settings

        commit_every, heap_size = build_writer_settings(n_products)
        return TantivyBackend(data_dir / "index" / "tantivy", create=create, heap_size=heap_size,
                              commit_every=commit_every)
    if backend == "elasticsearch":
        from sandbox.engines.elasticsearch_backend import ElasticsearchBackend

        return ElasticsearchBackend(create=create, **(es_options or {}))
    raise ValueError(f"unknown backend {backend!r} (expected 'tantivy' or 'elasticsearch')")


SANDBOX_MARKERS = ("manifest.json", "tasks.jsonl")


def build_sandbox(data_dir: str | Path, task_files: Sequence[str | Path], n_products: int, backend: str = "tantivy",
                  seed: int = 0, es_options: dict[str, Any] | None = None, progress: bool = True,
                  skip_bad_tasks: bool = False, dense: Any = None, workers: int = 0) -> BuildReport:
    """Build a sandbox into `data_dir`, atomically: everything is written into a staging folder next
    to it, which replaces `data_dir` only once the build has succeeded. A build that fails or is killed
    leaves the previous sandbox as it was (or no folder at all). `data_dir` must be missing, empty, or
    an earlier sandbox: it is replaced as a whole. (With the elasticsearch backend the index lives in
    the cluster and is rewritten in place.)

    The catalogue holds exactly `n_products` products: the golds, their decoys (evenly fewer when they do
    not all fit) and generated fillers. A task that cannot be built fails the build with its file and line,
    or with `skip_bad_tasks` is left out and listed in the report's `conflicts`.

    `dense` (a `sandbox.dense.build.DenseConfig`) also builds the dense index (`find_product`'s dense
    and hybrid modes): its encoder is trained first, then every product is encoded as it is indexed.

    `workers` processes generate and analyse the fillers (0: one per core; 1: none); the catalogue and
    its indexes are the same whatever the number (sandbox.catalogue.pipeline)."""
    final = Path(data_dir)
    if final.exists() and (not final.is_dir() or (any(final.iterdir())
                                                   and not any((final / m).exists() for m in SANDBOX_MARKERS))):
        raise ValueError(f"{final} exists and is not a sandbox: build into a new or empty folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    for leftover in final.parent.glob(f".{final.name}.building-*"):  # from a killed build
        shutil.rmtree(leftover, ignore_errors=True)
    staging = final.parent / f".{final.name}.building-{os.getpid()}"
    staging.mkdir()
    try:
        report = _build_into(staging, final, task_files, n_products, backend, seed, es_options, progress,
                             skip_bad_tasks, dense, workers)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _replace_folder(staging, final)
    return report


def _replace_folder(staging: Path, final: Path) -> None:
    """Put the finished build in place of the previous one (two renames; the old one is then removed)."""
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def _build_into(data_dir: Path, final: Path, task_files: Sequence[str | Path], n_products: int, backend: str,
                seed: int, es_options: dict[str, Any] | None, progress: bool, skip_bad_tasks: bool = False,
                dense: Any = None, workers: int = 0) -> BuildReport:
    started = time.perf_counter()
    located = load_located_tasks(task_files, allow_empty=False)  # bounded and checked, with file:line
    tasks: list[Task] = [t.task for t in located]
    recon, profile, tasks = reconstruct(tasks, seed, n_products, {t.task.task_id: t.where for t in located},
                                        skip_bad_tasks)
    left_out = fit_decoys(recon, n_products)
    specials = recon.golds + recon.decoys
    for p in specials:
        Product.model_validate(p)  # a reconstruction bug must fail the build, not an episode
    n_fill = max(0, n_products - len(specials))

    write_tasks(tasks, data_dir / "tasks.jsonl")
    profile.to_json(data_dir / "profile.json")
    with (data_dir / "special_products.jsonl").open("w", encoding="utf-8") as fh:
        for p in specials:
            fh.write(json.dumps(p) + "\n")
    with (data_dir / "decoys.jsonl").open("w", encoding="utf-8") as fh:
        for entry in recon.decoy_log:
            fh.write(json.dumps(entry) + "\n")
    ids = IdSpace(seed)
    n_shops = n_shops_for(n_products)
    with (data_dir / "shops.jsonl").open("w", encoding="utf-8") as fh:
        listed: set[str] = set()
        for k in range(n_shops):
            shop_id = ids.shop_id(k)
            listed.add(shop_id)
            fh.write(json.dumps({"shop_id": shop_id, "name": shop_name(k), "official": k % 10 == 0}) + "\n")
        for shop in sorted(recon.gold_shops - listed):
            fh.write(json.dumps({"shop_id": shop, "name": f"Shop {shop}", "official": False}) + "\n")
    with (data_dir / "vouchers.jsonl").open("w", encoding="utf-8") as fh:
        for t in tasks:
            if t.voucher is None:
                continue
            # A task's shop voucher applies to any single shop's basket, as its text and the scorer say.
            fh.write(json.dumps({"voucher_id": f"V-{t.task_id}", "task_id": t.task_id, "shop_id": None,
                                 **t.voucher.model_dump(exclude={"price_after_voucher", "budget"})}) + "\n")

    reserved = {p["product_id"] for p in specials}
    dense_build = None
    if dense is not None:
        from sandbox.dense.build import start_dense_build

        if dense.train.pairs_file:
            raise ValueError("dense training pairs (train.pairs_file) name catalogue products: build the sandbox "
                             "first, then `shoplab sandbox dense-index --set train.pairs_file=...`")
        dense_build = start_dense_build(
            data_dir, lambda n, s: list(FillerGenerator(profile, seed, n_products, reserved_ids=reserved).stream(
                n, start=s)), n_fill, dense, progress=progress)
    engine = open_backend(data_dir, backend, create=True, es_options=es_options, n_products=n_products)
    fillers = prepared_fillers(profile, seed, n_products, reserved, n_fill, workers=workers)
    total = n_fill + len(specials)
    # The `shoppingbench` profile's search, in the same docid order; its postings wait on disk until saved.
    relevance = LuceneBM25Builder(spill_dir=data_dir / ".lucene_postings")
    gc_was_on = gc.isenabled()
    gc.disable()  # millions of short-lived rows, no cycles: collecting would only rescan them
    try:
        with tqdm(total=total, desc=f"indexing ({backend})", unit="prod", disable=not progress,
                  mininterval=1.0) as bar:
            for chunk, start, stop in interleave(fillers, prepare_chunk(specials), n_fill, seed):
                rows = chunk.rows[start:stop]
                engine.index_prepared(rows)
                relevance.add_rows(rows, chunk.lucene, start)
                if dense_build is not None:
                    dense_build.add([row.product() for row in rows])
                bar.update(len(rows))
    finally:
        fillers.close()  # stops the workers now, also when indexing failed
        if gc_was_on:
            gc.enable()
    engine.commit()
    relevance.save(data_dir / LUCENE_INDEX_DIR)
    indexed = engine.count()
    engine.close()
    dense_summary = dense_build.finish(progress=progress) if dense_build is not None else None
    seconds = time.perf_counter() - started
    intents = Counter(t.intent.value for t in tasks)
    report = BuildReport(
        data_dir=str(final), backend=backend, n_products=indexed, n_gold=len(recon.golds),
        n_decoys=len(recon.decoys), n_fillers=n_fill, n_tasks=len(tasks), intents=dict(intents),
        seconds=round(seconds, 2), products_per_second=round(indexed / max(seconds, 1e-9), 1),
        conflicts=recon.conflicts, n_decoys_left_out=left_out,
    )
    manifest = {
        "format_version": FORMAT_VERSION, "backend": backend, "seed": seed, "requested_products": n_products,
        "task_files": [str(p) for p in task_files], "profile": profile_summary(profile),
        "es_options": {k: v for k, v in (es_options or {}).items() if k in ("url", "index")},
        **report.as_dict(),
    }
    if dense_summary is not None:
        manifest["dense"] = dense_summary
    (data_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return report
