"""What rushes itself adds to a search, measured in one run. Run by hand:

    .venv/bin/python benchmarks/bench_search_costs.py [--n 20000]

- the filter check: `ClipStore.validate_filter` used to run the `--where` expression as a full query
  before every search; now a filter is checked only when a search fails;
- hybrid fields: `ClipStore.hybrid` asked Milvus for every result field of every sub-search candidate,
  then (against stock Milvus Lite, which converts every column of a candidate) for the ids and then
  the fields of the final k in a second call; with rushes' Milvus Lite speedups a candidate converts
  only the fields asked for, so it asks for them in the one hybrid call again.

Both old costs are reproduced here beside the current calls, on the same collection (random unit
vectors, Milvus Lite at a temp path, reopened after the flush so the index builds are finished).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def p50_ms(fn, queries: int) -> float:
    for i in range(3):  # warm-up: the first calls load segments and indexes
        fn(i)
    samples = []
    for i in range(queries):
        start = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - start)
    return 1000 * float(np.median(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="clips in the collection")
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()

    from pymilvus import AnnSearchRequest, RRFRanker

    from curation.core.schema import M
    from indexing.store import (
        F_BM25,
        F_HAS_CAPTION,
        F_TEXT,
        F_VISUAL,
        RESULT_FIELDS,
        ClipStore,
        StoreMeta,
        store_row,
    )

    rng = np.random.default_rng(0)

    def unit(count: int, dim: int) -> np.ndarray:
        x = rng.standard_normal((count, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    visual, text = unit(args.n, 512), unit(args.n, 384)
    db = str(Path(tempfile.mkdtemp(prefix="bench-search-")) / "bench.db")
    store = ClipStore(db, None, "bench")
    store.ensure(StoreMeta(visual_model="synthetic", text_model="synthetic", visual_dim=512, text_dim=384))
    manifest = {M.source: "reel.mp4", M.width: 640, M.height: 360, M.fps: 24.0, M.status: "kept", M.aesthetic_score: 5.0}
    store.upsert([store_row({**manifest, M.clip_id: f"{i:020x}", M.duration: float(1 + i % 20)}, visual[i], text[i],
                            "a red ball moving left", "synthetic", 384) for i in range(args.n)])
    store.flush()
    store.close()
    store = ClipStore(db, None, "bench")  # reopening waits for the index builds
    store.require()

    qv, qt = unit(args.queries, 512), unit(args.queries, 384)
    where, captioned = "duration > 5", f"{F_HAS_CAPTION} == true"
    search = p50_ms(lambda i: store.search(F_VISUAL, [qv[i]], 10, where), args.queries)
    check = p50_ms(lambda i: store.validate_filter(where), args.queries)

    def hybrid_ids_then_fields(i: int):
        def request(field, data, expr, metric):
            return AnnSearchRequest(data=[data], anns_field=field, limit=20, expr=expr,
                                    param={"metric_type": metric, "params": {} if metric == "BM25" else {"ef": 64}})

        reqs = [request(F_VISUAL, qv[i].tolist(), "", "COSINE"), request(F_TEXT, qt[i].tolist(), captioned, "COSINE"),
                request(F_BM25, "red ball", captioned, "BM25")]
        hits = store.client.hybrid_search(store.collection, reqs, RRFRanker(60), limit=10, output_fields=[M.clip_id])[0]
        return store.get([h["id"] for h in hits], RESULT_FIELDS)

    old = p50_ms(hybrid_ids_then_fields, args.queries)
    new = p50_ms(lambda i: store.hybrid([(F_VISUAL, qv[i], None), (F_TEXT, qt[i], captioned),
                                         (F_BM25, "red ball", captioned)], 10), args.queries)
    store.close()
    print(f"{args.n} clips: visual search with a filter p50 {search:.1f} ms; the filter check it no longer runs "
          f"first {check:.1f} ms (before: {search + check:.1f} ms, {(search + check) / search:.2f}x)")
    print(f"hybrid p50: ids, then the final k's fields in a second call {old:.1f} ms; the fields in the one "
          f"hybrid call {new:.1f} ms ({old / new:.2f}x)")


if __name__ == "__main__":
    main()
