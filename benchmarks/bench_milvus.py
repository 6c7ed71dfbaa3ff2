"""Milvus Lite with rushes' clip collection: insert rate, query latency per mode, ANN recall@10.

    .venv/bin/python benchmarks/bench_milvus.py            # 100,000 clips (takes minutes)
    .venv/bin/python benchmarks/bench_milvus.py --n 5000   # a quick look

Synthetic clips go through the real code path (`indexing.store.ClipStore`, `store_row`): 512-d
visual and 384-d caption vectors, a caption for BM25, and the manifest's scalar fields. Vectors are
drawn around 2,000 cluster centres (embeddings of real footage are clustered, and uniform random
vectors in 512-d are a needlessly hard, unrealistic case for HNSW), then normalized. Recall@10 compares
the HNSW results with exact cosine top-10 computed by numpy over the same vectors. Queries are fresh
points from the same distribution. Everything is measured in one run, on this machine; compare the
figures with each other, not with another machine's.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = ("red blue green yellow orange purple pink white black circle square triangle ball car dog woman man "
         "child street beach forest kitchen dinner candle night day rain snow moving left right up down "
         "camera pan tilt zoom close wide shot slow fast bright dark crowd city river mountain sky").split()


def clustered(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray, spread: float) -> np.ndarray:
    picks = rng.integers(0, len(centres), n)
    x = centres[picks] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def caption(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, int(rng.integers(6, 14))))


def percentiles(samples: list[float]) -> str:
    ms = np.asarray(samples) * 1000
    return f"p50 {np.percentile(ms, 50):7.2f} ms   p95 {np.percentile(ms, 95):7.2f} ms"


def exact_top10(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    scores = queries @ data.T
    top = np.argpartition(-scores, 10, axis=1)[:, :10]
    return top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="clips in the collection")
    parser.add_argument("--queries", type=int, default=100, help="queries per mode")
    parser.add_argument("--batch", type=int, default=1000, help="rows per upsert call")
    parser.add_argument("--dir", type=Path, default=None, help="where the Milvus Lite database goes (temp dir)")
    args = parser.parse_args()

    from curation.core.schema import M
    from indexing.store import F_BM25, F_HAS_CAPTION, F_TEXT, F_VISUAL, ClipStore, StoreMeta, store_row

    rng = np.random.default_rng(0)
    vcent = rng.standard_normal((2000, 512)).astype(np.float32)
    tcent = rng.standard_normal((2000, 384)).astype(np.float32)
    visual = clustered(rng, args.n, 512, vcent, 0.6)
    text = clustered(rng, args.n, 384, tcent, 0.6)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="bench-milvus-"))
    db = workdir / "bench.db"
    if db.exists():
        shutil.rmtree(db)
    store = ClipStore(str(db), None, "bench")
    store.ensure(StoreMeta(visual_model="synthetic", text_model="synthetic", visual_dim=512, text_dim=384))

    print(f"Milvus Lite at {db}: {args.n:,} clips, 512-d visual + 384-d caption vectors + BM25 captions")
    start = time.perf_counter()
    for lo in range(0, args.n, args.batch):
        rows = []
        for i in range(lo, min(args.n, lo + args.batch)):
            manifest = {M.clip_id: f"clip{i:07d}", M.source: f"reel{i % 50}.mp4", M.duration: float(1 + i % 20),
                        M.width: 640, M.height: 360, M.fps: 24.0, M.status: "kept",
                        M.aesthetic_score: float(rng.uniform(1, 9))}
            rows.append(store_row(manifest, visual[i], text[i], caption(rng), "synthetic", 384))
        store.upsert(rows)
    insert_s = time.perf_counter() - start
    print(f"insert (upsert, {args.batch} rows per call): {args.n / insert_s:,.0f} rows/s ({insert_s:.1f} s)")
    start = time.perf_counter()
    store.flush()  # what `rushes index` does once at the end: seal segments, build their HNSW indexes
    flush_s = time.perf_counter() - start
    print(f"flush (seal + index build): {flush_s:.1f} s; insert + flush: {args.n / (insert_s + flush_s):,.0f} rows/s")

    qv = clustered(rng, args.queries, 512, vcent, 0.6)
    qt = clustered(rng, args.queries, 384, tcent, 0.6)
    qk = [" ".join(rng.choice(WORDS, 3)) for _ in range(args.queries)]
    start = time.perf_counter()
    store.search(F_VISUAL, [qv[0]], 10, None, [M.clip_id])
    print(f"first search after the flush: {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    while any(store.client.describe_index(store.collection, f).get("pending_index_rows", 0)
              for f in (F_VISUAL, F_TEXT, F_BM25)):
        time.sleep(0.5)
    print(f"waited {time.perf_counter() - start:.1f} s more for pending index builds")

    def timed(fn) -> list[float]:
        samples = []
        for i in range(args.queries):
            t = time.perf_counter()
            fn(i)
            samples.append(time.perf_counter() - t)
        return samples

    captioned = f"{F_HAS_CAPTION} == true"
    modes = {
        "visual": lambda i: store.search(F_VISUAL, [qv[i]], 10, None, [M.clip_id]),
        "text": lambda i: store.search(F_TEXT, [qt[i]], 10, captioned, [M.clip_id]),
        "keyword": lambda i: store.search(F_BM25, [qk[i]], 10, captioned, [M.clip_id]),
        "hybrid": lambda i: store.hybrid([(F_VISUAL, qv[i], None), (F_TEXT, qt[i], captioned),
                                          (F_BM25, qk[i], captioned)], 10, output_fields=[M.clip_id]),
        "visual + filter": lambda i: store.search(F_VISUAL, [qv[i]], 10, "duration > 5 and aesthetic_score > 4",
                                                  [M.clip_id]),
    }
    for fn in modes.values():  # warm-up: first calls load segments and indexes
        for i in range(3):
            fn(i)
    latency = {name: timed(fn) for name, fn in modes.items()}
    for name, samples in latency.items():
        print(f"query latency {name:16s} {percentiles(samples)}")
    base = np.percentile(latency["visual"], 50)
    print("p50 relative to visual: " + ", ".join(f"{k} {np.percentile(v, 50) / base:.2f}x" for k, v in latency.items()))

    for name, field, data, queries in (("visual", F_VISUAL, visual, qv), ("caption", F_TEXT, text, qt)):
        truth = exact_top10(data, queries)
        found = store.search(field, list(queries), 10, None, [M.clip_id])
        recall = np.mean([len({int(h[M.clip_id][4:]) for h in hits} & set(t.tolist())) / 10
                          for hits, t in zip(found, truth, strict=True)])
        t = time.perf_counter()
        exact_top10(data, queries[:1])
        brute = time.perf_counter() - t
        print(f"recall@10 {name:8s} HNSW vs exact numpy: {recall:.3f}  (numpy brute force, 1 query: {brute * 1000:.1f} ms)")
    store.close()
    from milvus_lite import server_manager_instance

    server_manager_instance.release_server(str(db))  # Milvus Lite keeps writing files until released
    if args.dir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
