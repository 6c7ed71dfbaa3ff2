"""Batched searches vs one call per query, in Milvus Lite in this process and through the run's
managed server (indexing/server.py, what `rushes serve` and the commands beside it use). Run by hand:

    .venv/bin/python benchmarks/bench_batched_search.py [--n 20000] [--queries 30]

One collection of random unit vectors (512-d visual, 384-d caption, BM25 captions), built through a
managed server at a temp path, flushed, and the server restarted so its index builds are done. For each path it
times `--like` over `--queries` clips (`Searcher.like_many` vs `like` one by one), raw visual searches
(`ClipStore.search` with many vectors vs one), and hybrid searches (`hybrid_many` vs `hybrid`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def per_query_ms(fn, queries: int, repeats: int = 3) -> float:
    """Median over `repeats` of fn()'s wall time divided by `queries`, after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return 1000 * float(np.median(samples)) / queries


def measure(store, ids: list[str], qv: np.ndarray, qt: np.ndarray) -> dict[str, tuple[float, float]]:
    """{what: (ms per query one call each, ms per query all in one call)}."""
    from indexing.search import Searcher
    from indexing.store import F_BM25, F_HAS_CAPTION, F_TEXT, F_VISUAL

    searcher = Searcher(store)
    n = len(ids)
    captioned = f"{F_HAS_CAPTION} == true"
    words = ["red ball", "a dog", "beach at night", "a car turning"]
    return {
        "like": (per_query_ms(lambda: [searcher.like(c, 10) for c in ids], n),
                 per_query_ms(lambda: searcher.like_many(ids, 10), n)),
        "visual": (per_query_ms(lambda: [store.search(F_VISUAL, [v], 10, None) for v in qv], n),
                   per_query_ms(lambda: store.search(F_VISUAL, list(qv), 10, None), n)),
        "hybrid": (per_query_ms(lambda: [store.hybrid([(F_VISUAL, qv[i], None), (F_TEXT, qt[i], captioned),
                                                       (F_BM25, words[i % 4], captioned)], 10) for i in range(n)], n),
                   per_query_ms(lambda: store.hybrid_many([(F_VISUAL, list(qv), None), (F_TEXT, list(qt), captioned),
                                                           (F_BM25, [words[i % 4] for i in range(n)], captioned)], 10), n)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="clips in the collection")
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()

    from curation.core.schema import M
    from indexing import server
    from indexing.store import ClipStore, StoreMeta, store_row

    rng = np.random.default_rng(0)

    def unit(count: int, dim: int) -> np.ndarray:
        x = rng.standard_normal((count, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    db = str(Path(tempfile.mkdtemp(prefix="bench-batched-")) / "milvus.db")
    server.start(db)
    try:
        store = ClipStore(db, None, "rushes_clips")
        store.ensure(StoreMeta(visual_model="synthetic", text_model="synthetic", visual_dim=512, text_dim=384))
        visual, text = unit(args.n, 512), unit(args.n, 384)
        manifest = {M.source: "reel.mp4", M.width: 640, M.height: 360, M.fps: 24.0, M.status: "kept"}
        start = time.perf_counter()
        for lo in range(0, args.n, 1000):
            store.upsert([store_row({**manifest, M.clip_id: f"{i:020x}", M.duration: float(1 + i % 20)}, visual[i],
                                    text[i], "a red ball moving left", "synthetic", 384)
                          for i in range(lo, min(args.n, lo + 1000))])
        store.flush()
        store.close()
        print(f"{args.n} clips loaded through the managed server in {time.perf_counter() - start:.0f} s")
        server.stop(db)  # a stopping server waits for its background index builds: measure without them
        server.start(db)
        ids = [f"{i:020x}" for i in rng.choice(args.n, args.queries, replace=False)]
        qv, qt = unit(args.queries, 512), unit(args.queries, 384)
        results = {}
        store = ClipStore(db, None, "rushes_clips")
        results["managed server"] = measure(store, ids, qv, qt)
        store.close()
    finally:
        server.stop(db)  # waits for the index builds, then releases the database
    store = ClipStore(db, None, "rushes_clips")  # now Milvus Lite in this process
    results["in this process"] = measure(store, ids, qv, qt)
    store.close()
    print(f"{args.queries} queries, ms per query: one call each -> all in one call (speed-up)")
    for path, figures in results.items():
        print(f"  {path}: " + "; ".join(f"{what} {one:.1f} -> {many:.1f} ({one / many:.1f}x)"
                                         for what, (one, many) in figures.items()))


if __name__ == "__main__":
    main()
