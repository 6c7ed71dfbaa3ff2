"""indexing.milvus_lite_speedups gives stock Milvus Lite's search results: the same ids, order and scores.

One small collection in rushes' schema holds every case the speedups handle differently from stock:
two flushed segments with upserts across them, flushed deletes (tombstones), and an unflushed
memtable with new rows, newer versions of flushed rows and pending deletes. Every search mode and the
filter expressions rushes documents run once with stock Milvus Lite and once with the speedups, in
the same process (the speedups can be installed and removed at runtime)."""

from __future__ import annotations

import numpy as np
import pytest

from curation.core.schema import M
from indexing import milvus_lite_speedups as speedups
from indexing.store import F_BM25, F_HAS_CAPTION, F_TEXT, F_VISUAL, ClipStore, StoreMeta, store_row

VDIM, TDIM = 16, 8
WORDS = "red dog beach car night woman city rain pan candle".split()  # few words: many tied BM25 scores
FILTERS = [
    None,
    "duration > 2 and aesthetic_score > 5",
    'camera_motion == "pan_left" and motion_score < 4',
    'array_contains(dominant_colors, "red")',
    'source like "%beach%" and width >= 1280',
]


@pytest.fixture(autouse=True)
def _switch_on(monkeypatch):
    monkeypatch.setenv(speedups.ENV_SWITCH, "1")
    yield
    speedups.install()  # leave the process as ClipStore leaves it


def _row(rng: np.random.Generator, i: int, version: int) -> dict:
    captioned = i % 7 != 0
    manifest = {
        M.clip_id: f"{i:020x}", M.source: f"{'beach' if i % 3 == 0 else 'city'}{i % 5}.mp4",
        M.duration: float(1 + (i * 7 + version) % 9), M.width: 1920 if i % 2 else 640, M.height: 360,
        M.aesthetic_score: float(rng.uniform(1, 9)), M.motion_score: float(rng.uniform(0, 8)),
        M.camera_motion: ["pan_left", "static", "tilt_up"][i % 3],
        M.dominant_colors: [["red", "blue"], ["green"], ["red"]][(i + version) % 3], M.status: "kept",
    }
    caption = " ".join(rng.choice(WORDS, int(rng.integers(2, 6)))) if captioned else None
    visual = rng.standard_normal(VDIM).astype(np.float32)
    text = rng.standard_normal(TDIM).astype(np.float32) if captioned else None
    return store_row(manifest, visual / np.linalg.norm(visual), None if text is None else text / np.linalg.norm(text),
                     caption, "test" if captioned else None, TDIM)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(0)
    s = ClipStore(str(tmp_path_factory.mktemp("speedups") / "m.db"), None, "clips")
    s.ensure(StoreMeta(visual_model="test", text_model="test", visual_dim=VDIM, text_dim=TDIM))
    s.upsert([_row(rng, i, 0) for i in range(300)])
    s.flush()                                                         # segment 1
    s.upsert([_row(rng, i, 1) for i in range(0, 300, 4)] + [_row(rng, i, 0) for i in range(300, 400)])
    s.flush()                                                         # segment 2: newer versions of segment 1 rows
    s.delete([f"{i:020x}" for i in range(1, 300, 9)])                 # tombstones, some of upserted rows
    s.flush()
    s.wait_for_indexes(timeout=120)
    s.upsert([_row(rng, i, 2) for i in range(2, 400, 11)] + [_row(rng, i, 0) for i in range(400, 430)])
    s.delete([f"{i:020x}" for i in range(5, 400, 13)] + [f"{i:020x}" for i in range(405, 430, 5)])  # not flushed
    s.ids_deleted = {f"{i:020x}" for i in range(1, 300, 9)} - {f"{i:020x}" for i in range(2, 400, 11)}
    s.ids_deleted |= {f"{i:020x}" for i in range(5, 400, 13)} | {f"{i:020x}" for i in range(405, 430, 5)}
    s.queries = {"visual": rng.standard_normal((4, VDIM)).astype(np.float32),
                 "text": rng.standard_normal((4, TDIM)).astype(np.float32),
                 "keyword": ["red dog", "night", "candle woman rain", "pan pan city"]}
    yield s
    s.close()


def _searches(store: ClipStore) -> dict:
    """Every search rushes runs, as (ids, scores) per query: the modes, `like`, and hybrid, with each filter."""
    out = {}
    captioned = f"{F_HAS_CAPTION} == true"
    q = store.queries
    for where in FILTERS:
        both = f"({where}) and ({captioned})" if where else captioned
        for k in (10, 60):
            out["visual", where, k] = store.search(F_VISUAL, list(q["visual"]), k, where, [M.clip_id])
            out["text", where, k] = store.search(F_TEXT, list(q["text"]), k, both, [M.clip_id])
            out["keyword", where, k] = store.search(F_BM25, q["keyword"], k, both, [M.clip_id, M.duration])
        out["like", where] = store.search(F_VISUAL, [q["visual"][0]], 10,
                                          (f"({where}) and " if where else "") + f'{M.clip_id} != "{0:020x}"')
        out["hybrid", where] = [store.hybrid([(F_VISUAL, q["visual"][i], where), (F_TEXT, q["text"][i], both),
                                              (F_BM25, q["keyword"][i], both)], 10) for i in range(4)]
    return {key: [[(h.get(M.clip_id) or h["id"], float(h["distance"]), h.get("entity")) for h in hits] for hits in result]
            for key, result in out.items()}


def test_every_search_matches_stock_milvus_lite(store):
    speedups.uninstall()
    stock = _searches(store)
    assert speedups.install() and speedups.installed()
    fast = _searches(store)
    assert _searches(store) == fast  # the second time from the filter masks kept per segment
    assert fast.keys() == stock.keys()
    for key in stock:
        for want, got in zip(stock[key], fast[key], strict=True):
            assert [h[0] for h in got] == [h[0] for h in want], key  # same ids in the same order
            assert np.allclose([h[1] for h in got], [h[1] for h in want], rtol=0, atol=1e-5), key
            assert [h[2] for h in got] == [h[2] for h in want], key
    # the collection really has the cases: deleted rows never come back, and searches find rows
    found = {h[0] for result in fast.values() for hits in result for h in hits}
    assert found and not found & store.ids_deleted
    assert any(len(hits) == 60 for key, result in fast.items() if 60 in key for hits in result)


def test_bm25_scores_are_stock_to_the_bit():
    from milvus_lite.index.sparse_inverted import SparseInvertedIndex

    speedups.uninstall()
    stock_search = SparseInvertedIndex.search
    rng = np.random.default_rng(1)
    docs = [{int(t): float(rng.integers(1, 4)) for t in rng.choice(12, int(rng.integers(0, 6)), replace=False)}
            for _ in range(500)]
    index = SparseInvertedIndex()
    index.build(docs, valid_mask=rng.random(500) > 0.1)
    queries = [{3: 1.0, 7: 2.0}, {0: 1.0}, {}, {99: 1.0}, {1: 1.0, 2: 1.0, 5: 1.0, 11: 3.0}]
    for mask in (None, rng.random(500) > 0.3):
        stock_ids, stock_dists = stock_search(index, queries, 40, valid_mask=mask)
        ids, dists = speedups._bm25_search(index, queries, 40, valid_mask=mask)
        assert np.array_equal(ids, stock_ids) and np.array_equal(dists, stock_dists)
    index.build(docs[:50])  # a rebuilt index is scored from its new postings
    assert np.array_equal(speedups._bm25_search(index, queries, 40)[0],
                          stock_search(index, queries, 40)[0])


def test_switch_and_version_pin(monkeypatch):
    import milvus_lite
    from milvus_lite.engine import collection

    speedups.uninstall()
    stock = collection.execute_search_with_index
    monkeypatch.setenv(speedups.ENV_SWITCH, "0")
    assert not speedups.install() and collection.execute_search_with_index is stock
    monkeypatch.setenv(speedups.ENV_SWITCH, "1")
    monkeypatch.setattr(milvus_lite, "__version__", "3.2.3")
    assert not speedups.install() and collection.execute_search_with_index is stock
    monkeypatch.setattr(milvus_lite, "__version__", speedups.PINNED_VERSION)
    assert speedups.install() and speedups.install()  # idempotent
    assert collection.execute_search_with_index is speedups._execute_search_with_index
    speedups.uninstall()
    assert collection.execute_search_with_index is stock


def _stock_outcome(validate, record, schema):
    """What validating a copy of `record` does: the record afterwards, or the error's type and text."""
    record = dict(record) if isinstance(record, dict) else record
    try:
        validate(record, schema)
    except Exception as e:  # noqa: BLE001 - the outcome compared is the exception itself
        return type(e).__name__, str(e)
    return record


def test_record_validation_matches_stock(store):
    import os

    from milvus_lite import server_manager_instance
    from milvus_lite.engine import collection
    from milvus_lite.schema import validation

    schema = server_manager_instance._servers[os.path.abspath(store.uri)][1].get_collection("clips").schema
    good = _row(np.random.default_rng(3), 7, 0)
    records = [good, {**good, F_VISUAL: [int(x * 10) for x in good[F_VISUAL]]},  # ints pass too
               {**good, F_VISUAL: good[F_VISUAL][:-1]}, {**good, F_VISUAL: good[F_VISUAL] + [0.5]},
               {**good, F_VISUAL: [True] + good[F_VISUAL][1:]}, {**good, F_VISUAL: ["x"] + good[F_VISUAL][1:]},
               {**good, F_VISUAL: np.asarray(good[F_VISUAL])}, {**good, F_VISUAL: tuple(good[F_VISUAL])},
               {**good, F_VISUAL: None}, {k: v for k, v in good.items() if k != F_VISUAL},
               {**good, M.clip_id: None}, {**good, M.duration: "long"}, {**good, "extra": 1}, [good]]
    speedups.uninstall()
    stock = [_stock_outcome(validation.validate_record, r, schema) for r in records]
    assert speedups.install() and collection.validate_record is speedups._validate_record
    fast = [_stock_outcome(collection.validate_record, r, schema) for r in records]
    assert fast == stock
    assert isinstance(fast[0], dict) and isinstance(fast[1], dict) and all(isinstance(o, tuple) for o in fast[2:6])
    assert validation._find_float_vector(schema).name == F_VISUAL  # outside a validation, stock's answer


def test_segment_budget_and_milvus_lite_environment(monkeypatch):
    from milvus_lite import constants
    from milvus_lite.engine import collection

    speedups.uninstall()
    assert collection.MEMTABLE_MEMORY_LIMIT == constants.MEMTABLE_MEMORY_LIMIT
    assert speedups.install()
    assert collection.MEMTABLE_MEMORY_LIMIT == speedups.SEGMENT_MEMTABLE_BYTES
    assert collection.WAL_SIZE_LIMIT == 2 * speedups.SEGMENT_MEMTABLE_BYTES
    speedups.uninstall()
    monkeypatch.setenv("MILVUS_LITE_MEMTABLE_MEMORY_LIMIT_BYTES", str(constants.MEMTABLE_MEMORY_LIMIT))
    assert speedups.install()  # Milvus Lite's own setting wins
    assert collection.MEMTABLE_MEMORY_LIMIT == constants.MEMTABLE_MEMORY_LIMIT
    assert collection.WAL_SIZE_LIMIT == 2 * speedups.SEGMENT_MEMTABLE_BYTES
    speedups.uninstall()
    assert (collection.MEMTABLE_MEMORY_LIMIT, collection.WAL_SIZE_LIMIT) == (constants.MEMTABLE_MEMORY_LIMIT,
                                                                            constants.WAL_SIZE_LIMIT)


def test_a_collection_with_nothing_flushed_matches_stock(tmp_path):
    rng = np.random.default_rng(5)
    s = ClipStore(str(tmp_path / "fresh.db"), None, "fresh")
    s.ensure(StoreMeta(visual_model="test", text_model="test", visual_dim=VDIM, text_dim=TDIM))
    s.upsert([_row(rng, i, 0) for i in range(60)])  # memtable only: no sealed segment yet
    query = rng.standard_normal(VDIM).astype(np.float32)

    def searches():
        return [[(h[M.clip_id], round(float(h["distance"]), 5)) for h in hits]
                for hits in (s.search(F_VISUAL, [query], 10, None, [M.clip_id])[0],
                             s.search(F_BM25, ["red dog"], 10, None, [M.clip_id])[0])]

    speedups.uninstall()
    stock = searches()
    assert speedups.install()
    assert searches() == stock and all(stock)
    s.close()


def test_searches_skip_the_loopback_while_installed(store, monkeypatch):
    """An embedded store's searches and queries call Milvus Lite's servicer in this thread (the results are
    the ones test_every_search_matches_stock_milvus_lite compares); uninstall() puts them back on gRPC."""
    stub = store.client._get_connection()._stub
    assert isinstance(stub, speedups._DirectStub)
    calls = []
    for name in sorted(speedups.DIRECT_RPCS):
        method = getattr(stub._servicer, name)
        monkeypatch.setattr(stub._servicer, name, lambda req, ctx, m=method, n=name: calls.append(n) or m(req, ctx))
    q, some = store.queries, f"{3:020x}"

    def every_read():
        hits = store.search(F_VISUAL, [q["visual"][0]], 5, None, [M.clip_id])[0]
        fused = store.hybrid([(F_VISUAL, q["visual"][0], None), (F_BM25, "red dog", None)], 5)
        return hits, fused, store.get([some], [M.clip_id, M.duration])

    direct = every_read()
    assert sorted(calls) == ["HybridSearch", "Query", "Search"]
    assert len(direct[0]) == 5 and len(direct[1]) == 5 and direct[2][some][M.clip_id] == some
    with pytest.raises(Exception, match="not a valid Milvus filter"):  # a bad filter still gets rushes' message
        store.search(F_VISUAL, [q["visual"][0]], 5, "no_such_field > 1", [M.clip_id])
    speedups.uninstall()
    calls.clear()
    assert every_read()[2] == direct[2] and not calls  # gRPC: this stub's servicer is not called
