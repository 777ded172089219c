"""Building a sandbox's dense index: train the encoder on generated products, encode the catalogue, index.

Two entry points share `DenseConfig`: `shoplab sandbox build ... --dense` (the catalogue stream is
encoded as it is indexed into BM25, no second pass) and `shoplab sandbox dense-index --data-dir D`
(an existing sandbox: the catalogue is read back from the tantivy index). The index is written
into a staging folder and moved into place when complete, so a killed build leaves no half index.
The manifest records the dense build's seconds and memory (`dense` block).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sandbox.dense.encoder import DenseEncoder, EncoderConfig
from sandbox.dense.index import DENSE_INDEX_DIR, DenseIndexBuilder, DenseIndexConfig
from sandbox.dense.train import DenseTrainConfig, read_pairs, train_encoder


@dataclass
class DenseConfig:
    """`--config`/`--set` of `shoplab sandbox build --dense` and `shoplab sandbox dense-index`."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: DenseTrainConfig = field(default_factory=DenseTrainConfig)
    index: DenseIndexConfig = field(default_factory=DenseIndexConfig)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:  # psutil is a dependency; the stat is optional
        return float("nan")


def train_range(n_fillers: int, cfg: DenseTrainConfig) -> tuple[int, int]:
    """(start, count) of the generated products to train on: from `cfg.filler_start` when the sandbox has
    enough of them, else the last `n_products` (a small sandbox; the manifest records the range)."""
    start = min(cfg.filler_start, max(0, n_fillers - cfg.n_products))
    return start, max(0, min(cfg.n_products, n_fillers - start))


def train_for_sandbox(fillers: Callable[[int, int], list[dict[str, Any]]], n_fillers: int, cfg: DenseConfig,
                      lookup: Callable | None = None, progress: bool = False,
                      log: Callable[[str], None] | None = None) -> DenseEncoder:
    start, count = train_range(n_fillers, cfg.train)
    products = fillers(count, start)
    pairs = read_pairs(cfg.train.pairs_file, lookup) if cfg.train.pairs_file and lookup else []
    enc = train_encoder(products, cfg.train, cfg.encoder, extra_pairs=pairs, progress=progress, log=log)
    enc.meta["filler_range"] = [start, start + count]
    return enc


class DenseBuild:
    """Collects the catalogue into a staging folder; `finish` moves it into `<data_dir>/index/dense`."""

    def __init__(self, data_dir: Path, encoder: DenseEncoder, cfg: DenseConfig, started: float, rss_before: float):
        self.data_dir = Path(data_dir)
        self.cfg = cfg
        self.builder = DenseIndexBuilder(encoder, cfg.index)
        self.started = started
        self.rss_before = rss_before
        self.train_seconds = time.perf_counter() - started

    def add(self, products: Iterable[dict[str, Any]]) -> None:
        self.builder.add(products)

    def finish(self, progress: bool = False) -> dict[str, Any]:
        finish_started = time.perf_counter()
        final = self.data_dir / DENSE_INDEX_DIR
        staging = final.parent / f".dense.building-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            stats = self.builder.finish(staging, progress=progress, extra={
                "train_seconds": round(self.train_seconds, 2), "train": self.builder.encoder.meta})
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        # The dense build's own work: with `build --dense` the wall time since training began also holds
        # the BM25 indexing the catalogue stream goes through between encoder batches.
        finish_seconds = time.perf_counter() - finish_started
        seconds = self.train_seconds + self.builder.encode_seconds + finish_seconds
        summary = {"seconds": round(seconds, 2), "wall_seconds": round(time.perf_counter() - self.started, 2),
                   "train_seconds": round(self.train_seconds, 2),
                   "encode_seconds": stats["encode_seconds"], "index_seconds": stats["index_seconds"],
                   "n_products": stats["n_products"], "kind": self.cfg.index.kind,
                   "peak_rss_mb": round(peak_rss_mb(), 1),
                   "rss_growth_mb": round(current_rss_mb() - self.rss_before, 1),
                   "best_epoch": min(self.builder.encoder.meta.get("history") or [{}],
                                     key=lambda r: r.get("val_loss", 0.0)),
                   "filler_range": self.builder.encoder.meta.get("filler_range"),
                   "config": asdict(self.cfg)}
        (final / "dense.json").write_text(json.dumps({**stats, "summary": summary}, indent=2))
        return summary


def start_dense_build(data_dir: Path, fillers: Callable[[int, int], list[dict[str, Any]]], n_fillers: int,
                      cfg: DenseConfig | None = None, lookup: Callable | None = None, progress: bool = False,
                      log: Callable[[str], None] | None = None) -> DenseBuild:
    """Train the encoder; the returned DenseBuild then takes the catalogue (`add`) and writes it (`finish`)."""
    cfg = cfg or DenseConfig()
    cfg.encoder.check()
    cfg.train.check()
    cfg.index.check()
    rss_before = current_rss_mb()
    started = time.perf_counter()
    if log is None and progress:
        from tqdm import tqdm

        log = tqdm.write  # each epoch's validation line above the bars
    encoder = train_for_sandbox(fillers, n_fillers, cfg, lookup=lookup, progress=progress, log=log)
    return DenseBuild(data_dir, encoder, cfg, started, rss_before)


def build_dense_index(world, cfg: DenseConfig | None = None, progress: bool = True,
                      log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """`shoplab sandbox dense-index`: the dense index of an existing (tantivy) sandbox; the manifest
    gains its `dense` block."""
    from tqdm import tqdm

    iter_all = getattr(world.backend, "iter_all", None)
    if iter_all is None:
        raise ValueError("the dense index is built from the embedded tantivy index; this sandbox has none")
    n_fill = int(world.manifest.get("n_fillers", 0))
    build = start_dense_build(world.data_dir, lambda n, s: world.filler_products(n, start=s), n_fill, cfg,
                              lookup=world.products, progress=progress, log=log)
    with tqdm(total=world.backend.count(), desc="dense encoding", unit="prod", disable=not progress,
              mininterval=1.0) as bar:
        batch: list[dict[str, Any]] = []
        for p in iter_all():
            batch.append(p)
            if len(batch) >= 10_000:
                build.add(batch)
                bar.update(len(batch))
                batch = []
        build.add(batch)
        bar.update(len(batch))
    summary = build.finish(progress=progress)
    record_in_manifest(world.data_dir, summary)
    return summary


def record_in_manifest(data_dir: Path, summary: dict[str, Any]) -> None:
    path = Path(data_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["dense"] = summary
    tmp = path.with_name(f".manifest.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, path)
