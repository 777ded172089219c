"""The build's producer side: products generated and made ready to index, in worker processes.

Generating a filler and analysing its text for both search profiles are pure Python and take most
of a build's CPU time. So worker processes make `PreparedChunk`s (filler `i` depends only on the
seed and `i // CHUNK`, so any chunk can be made anywhere), and the building process only adds them
to its indexes, in catalogue order. The indexes are the same, byte for byte, whatever the number
of workers: one process makes the very same chunks.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import random
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from sandbox.catalogue.generator import CHUNK, FillerGenerator
from sandbox.catalogue.profile import CatalogueProfile
from sandbox.engines.prepared import PreparedChunk, prepare_chunk

# Below this many fillers a build runs in-process: forking workers and moving chunks between processes would
# cost more than the second core saves.
PARALLEL_MIN_FILLERS = 50_000


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_generator: FillerGenerator | None = None  # one per worker process, made by `_start_worker`


def _start_worker(profile: CatalogueProfile, seed: int, n_products: int, reserved: set[str]) -> None:
    global _generator
    gc.disable()  # a chunk's objects form no cycles; collecting would scan them all, again and again (~30 %)
    _generator = FillerGenerator(profile, seed, n_products, reserved_ids=reserved)


def _prepare_range(start: int, n: int) -> PreparedChunk:
    assert _generator is not None, "worker not started"
    return prepare_chunk(list(_generator.stream(n, start=start)))


def prepared_fillers(profile: CatalogueProfile, seed: int, n_products: int, reserved: set[str], n_fill: int,
                     workers: int = 0) -> Iterator[PreparedChunk]:
    """Fillers 0 .. n_fill-1 in chunks of CHUNK, in order, made by `workers` processes (0: one per core;
    1: in this process).

    The workers start now, not on the first `next`: they are forked, and must be forked before the caller
    starts threads of its own (tantivy's writer, a progress bar). Forking re-imports nothing, so a script
    without an `if __name__ == "__main__"` guard builds as well. At most two chunks per worker are in
    flight, so memory stays bounded when indexing is the slower side."""
    workers = default_workers() if workers <= 0 else workers
    starts = range(0, n_fill, CHUNK)
    if workers <= 1 or n_fill < PARALLEL_MIN_FILLERS:
        generator = FillerGenerator(profile, seed, n_products, reserved_ids=reserved)
        return (prepare_chunk(list(generator.stream(min(CHUNK, n_fill - s), start=s))) for s in starts)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_start_worker, initargs=(profile, seed, n_products, reserved))
    ranges = iter(starts)
    pending: deque[Future] = deque(pool.submit(_prepare_range, start, min(CHUNK, n_fill - start))
                                   for start in itertools.islice(ranges, 2 * workers))
    return _in_order(pool, pending, ranges, n_fill)


def _in_order(pool: ProcessPoolExecutor, pending: deque[Future], ranges: Iterator[int],
              n_fill: int) -> Iterator[PreparedChunk]:
    try:
        while pending:
            chunk = pending.popleft().result()
            start = next(ranges, None)
            if start is not None:
                pending.append(pool.submit(_prepare_range, start, min(CHUNK, n_fill - start)))
            yield chunk
    finally:  # a finished, failed or abandoned build stops the workers without waiting for unread chunks
        pool.shutdown(wait=True, cancel_futures=True)


def interleave(chunks: Iterable[PreparedChunk], specials: PreparedChunk, n_fill: int,
               seed: int) -> Iterator[tuple[PreparedChunk, int, int]]:
    """The catalogue in index order, as pieces (chunk, start, stop) of the filler chunks and of `specials`
    (gold products and decoys, spread over the stream). Index order breaks BM25 ties, and a gold product
    indexed first would win every tie against its decoys."""
    rng = random.Random(f"{seed}:positions")
    positions = sorted(rng.randrange(max(1, n_fill)) for _ in specials.rows)
    order = list(range(len(specials.rows)))
    rng.shuffle(order)
    k = 0
    base = 0  # the index of the chunk's first filler
    for chunk in chunks:
        n = len(chunk.rows)
        cut = 0
        while k < len(order) and positions[k] < base + n:  # special k goes right before filler positions[k]
            at = max(positions[k] - base, 0)
            if at > cut:
                yield chunk, cut, at
                cut = at
            yield specials, order[k], order[k] + 1
            k += 1
        if cut < n:
            yield chunk, cut, n
        base += n
    for j in order[k:]:
        yield specials, j, j + 1
