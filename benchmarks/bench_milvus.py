"""Milvus Lite through rushes' search path: insert rate, index-build time, query latency per mode,
recall@10, memory, with rushes' Milvus Lite speedups on and off, in one run.

    .venv/bin/python benchmarks/bench_milvus.py                      # 100,000 clips (minutes)
    .venv/bin/python benchmarks/bench_milvus.py --n 5000             # a quick look
    .venv/bin/python benchmarks/bench_milvus.py --n 1000000 --dir /tmp/bench-1m --stock-queries 10   # keep it ...
    .venv/bin/python benchmarks/bench_milvus.py --n 1000000 --dir /tmp/bench-1m --reuse   # ... and search it again
    .venv/bin/python benchmarks/bench_milvus.py --dir /tmp/bench-100k --reuse --through-serve   # as `rushes serve` reads

Synthetic clips go in through `ClipStore.upsert` (`store_row`: 512-d visual and 384-d caption vectors,
a caption for BM25, the manifest's scalar fields); the collection is flushed and the benchmark waits
until Milvus Lite's background index builds have finished (`ClipStore.wait_for_indexes`; Milvus Lite
builds HNSW indexes minutes after flush returns and searches by brute force until then). Queries go
through `indexing.search.Searcher`, the code `rushes search` and `rushes serve` run, with the query
encoders replaced by a lookup of synthetic query vectors (no model runs). Vectors are drawn around
2,000 cluster centres (embeddings of real footage are clustered), then normalized. Recall@10 compares
the results with exact cosine top-10 computed by numpy. Every figure is measured in this one run, on
this machine: compare them with each other, not with another machine's. At 1,000,000 clips the run
takes about 35 minutes on 2 cores and up to 18 GB of memory (the benchmark's own vectors are 3.6 GB);
stock Milvus Lite needs 2-7 s a search there, hence --stock-queries 10.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = ("red blue green yellow orange purple pink white black circle square triangle ball car dog woman man "
         "child street beach forest kitchen dinner candle night day rain snow moving left right up down "
         "camera pan tilt zoom close wide shot slow fast bright dark crowd city river mountain sky").split()
FILTER = "duration > 5 and aesthetic_score > 4"


def clustered(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray, spread: float) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, 100_000):  # in chunks: 1M x 512 float64 noise would be 4 GB
        m = min(n, lo + 100_000) - lo
        x = centres[rng.integers(0, len(centres), m)] + spread * rng.standard_normal((m, dim), dtype=np.float32)
        out[lo : lo + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def rss_gb() -> str:
    status = Path("/proc/self/status").read_text()
    fields = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith("Vm")}
    return f"RSS {fields['VmRSS'] / 2**20:.2f} GB (peak {fields['VmHWM'] / 2**20:.2f} GB)"


class Lookup:
    """Stands in for the query encoders: the vector of each synthetic query text."""

    def __init__(self, name: str, vectors: dict[str, np.ndarray]):
        self.name = name
        self.vectors = vectors

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])

    encode = encode_texts


def build(store, args, visual, text, captions, scalars) -> None:
    from curation.core.schema import M
    from indexing.store import StoreMeta, store_row

    store.ensure(StoreMeta(visual_model="synthetic", text_model="synthetic", visual_dim=512, text_dim=384))
    start = time.perf_counter()
    for lo in range(0, args.n, args.batch):
        rows = []
        for i in range(lo, min(args.n, lo + args.batch)):
            manifest = {M.clip_id: f"{i:020x}", M.source: f"reel{i % 50}.mp4", M.duration: float(1 + i % 20),
                        M.width: 640, M.height: 360, M.fps: 24.0, M.status: "kept", M.aesthetic_score: scalars[i]}
            rows.append(store_row(manifest, visual[i], text[i], captions[i], "synthetic", 384))
        store.upsert(rows, batch=args.batch)
        if lo and lo % (args.batch * 100) == 0:
            print(f"  {lo:,} rows, {lo / (time.perf_counter() - start):,.0f} rows/s", flush=True)
    insert_s = time.perf_counter() - start
    print(f"insert rate {args.n / insert_s:,.0f} rows/s ({insert_s:.1f} s, upserts of {args.batch} rows)")
    start = time.perf_counter()
    store.flush()
    flush_s = time.perf_counter() - start
    waited = store.wait_for_indexes()
    print(f"index build {flush_s + waited:.1f} s (flush {flush_s:.1f} s, then background HNSW builds {waited:.1f} s); "
          f"insert + index build {args.n / (insert_s + flush_s + waited):,.0f} rows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="clips in the collection")
    parser.add_argument("--queries", type=int, default=100, help="queries per mode, speedups on")
    parser.add_argument("--stock-queries", type=int, default=30, help="queries per mode, speedups off (slow)")
    parser.add_argument("--batch", type=int, default=1000, help="rows per upsert call")
    parser.add_argument("--dir", type=Path, default=None, help="keep the Milvus Lite database here (else a temp dir)")
    parser.add_argument("--reuse", action="store_true", help="search the database --dir already holds")
    parser.add_argument("--through-serve", action="store_true",
                        help="open the database as `rushes serve` does: through the run's managed server, hosted "
                             "on threads of this process (indexing.server.host), instead of embedded")
    args = parser.parse_args()

    from indexing import milvus_lite_speedups as speedups
    from indexing.search import Searcher
    from indexing.store import ClipStore

    rng = np.random.default_rng(0)
    vcent = rng.standard_normal((2000, 512)).astype(np.float32)
    tcent = rng.standard_normal((2000, 384)).astype(np.float32)
    visual = clustered(rng, args.n, 512, vcent, 0.6)
    text = clustered(rng, args.n, 384, tcent, 0.6)
    words = np.asarray(WORDS)
    lengths = rng.integers(6, 14, args.n)
    picks = rng.integers(0, len(WORDS), (args.n, 14))
    captions = [" ".join(words[picks[i, : lengths[i]]]) for i in range(args.n)]
    scalars = rng.uniform(1, 9, args.n).tolist()
    nq = max(args.queries, args.stock_queries)
    qv = clustered(rng, nq, 512, vcent, 0.6)
    qt = clustered(rng, nq, 384, tcent, 0.6)
    qk = [f"{' '.join(rng.choice(WORDS, 3))} q{i}" for i in range(nq)]  # unique texts; "q<i>" matches no caption

    workdir = args.dir or Path(tempfile.mkdtemp(prefix="bench-milvus-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "bench.db"
    if db.exists() and not args.reuse:
        shutil.rmtree(db)
    print(f"Milvus Lite {speedups.milvus_lite_version()} at {db}: {args.n:,} clips, 512-d visual + 384-d caption "
          f"vectors + BM25 captions; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if args.through_serve:
        from indexing import server

        state, _ = server.host(db)
        print(f"path: rushes serve's, the managed server hosted in this process on {state.uri}")
    store = ClipStore(str(db), None, "bench")
    print(f"speedups installed: {speedups.installed()}")
    if args.reuse and store.exists():
        print(f"reusing {store.count():,} rows; waited {store.wait_for_indexes():.1f} s for index builds")
    else:
        build(store, args, visual, text, captions, scalars)
    print(f"memory after build: {rss_gb()}")

    searcher = Searcher(store)
    searcher._clip = Lookup("synthetic", dict(zip(qk, qv, strict=True)))
    searcher._text = Lookup("synthetic", dict(zip(qk, qt, strict=True)))
    start = time.perf_counter()
    store.warm()
    print(f"BM25 index build (first keyword search after open, ClipStore.warm): {time.perf_counter() - start:.2f} s")

    modes = {
        "visual": lambda q: searcher.search(q, "visual"),
        "text": lambda q: searcher.search(q, "text"),
        "keyword": lambda q: searcher.search(q, "keyword"),
        "hybrid": lambda q: searcher.search(q, "hybrid"),
        "visual+filter": lambda q: searcher.search(q, "visual", where=FILTER),
    }

    def measure(label: str, count: int) -> dict[str, float]:
        p50s = {}
        for name, fn in modes.items():
            for q in qk[:3]:  # warm-up
                fn(q)
            samples = []
            for q in qk[:count]:
                t = time.perf_counter()
                fn(q)
                samples.append((time.perf_counter() - t) * 1000)
            p50s[name] = float(np.percentile(samples, 50))
            print(f"query latency {name} p50 {p50s[name]:.2f} ms p95 {np.percentile(samples, 95):.2f} ms"
                  f"   ({label}, {count} queries)", flush=True)
        for name, vectors, data in (("visual", qv, visual), ("caption", qt, text)):
            mode = "visual" if name == "visual" else "text"
            found = searcher.search_many(qk[: args.queries], mode, 10)
            truth = np.argpartition(-(vectors[: args.queries] @ data.T), 10, axis=1)[:, :10]
            recall = np.mean([len({int(h.clip_id, 16) for h in hits} & set(t.tolist())) / 10
                              for hits, t in zip(found, truth, strict=True)])
            print(f"recall@10 {name} {recall:.3f} against exact numpy search ({label}, {args.queries} queries)")
        return p50s

    fast = measure("speedups on", args.queries)
    t = time.perf_counter()
    np.argpartition(-(qv[:1] @ visual.T), 10, axis=1)
    print(f"exact numpy search, one visual query: {(time.perf_counter() - t) * 1000:.1f} ms")
    print(f"memory after searches: {rss_gb()}")
    speedups.uninstall()
    stock = measure("speedups off: stock Milvus Lite", args.stock_queries)
    print("speedup (p50 off / on): " + ", ".join(f"{m} {stock[m] / fast[m]:.1f}x" for m in fast))
    print(f"peak memory of this process (Milvus Lite runs in it): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")
    store.close()
    if args.through_serve:
        server.stop(db)  # waits for Milvus Lite's background work
    else:
        from milvus_lite import server_manager_instance

        server_manager_instance.release_server(str(db))  # waits for Milvus Lite's background work
    if args.dir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
