"""Milvus Lite 3.2.2's search without its per-search Python loops over every row (issue 11).

The upstream problem (docs/indexing.md, "Milvus Lite's per-search loops"): every dense search in
Milvus Lite 3.2.2 walks every row of every sealed segment twice in Python, once to map each primary
key to its newest sequence number and once to build the visibility mask (newest version, not
deleted); a BM25 search walks every row the same way, then scores every posting of the query terms
in Python and sorts every matching document. At 100,000 rows that is about 95% of a search.

This module replaces four Milvus Lite functions with equivalents that
- work out "newest version and not deleted" once per set of sealed segments with numpy (sealed
  segments are immutable, tombstones change only on flush), then correct that per search only for
  the primary keys that the unflushed memtable and its pending deletes name;
- score BM25 with numpy over the query terms' posting lists, with the same float32 arithmetic, the
  same order of additions and the same order of ties as Milvus Lite;
- convert only the columns a hit's projection reads (stock converts every column of every hit to
  Python, its 512 + 384 floats included), and look a schema's primary key up once, not per field.
Search results are the stock ones: ids, order and scores (tests/indexing/test_milvus_lite_speedups.py
compares both on one collection with upserts, deletes and unflushed rows).

Use, in the process that runs the Milvus Lite server, before searching:

    from indexing import milvus_lite_speedups
    milvus_lite_speedups.install()   # -> True when the speedups are active

`install()` is idempotent; it applies only to milvus-lite == PINNED_VERSION and only when the
environment variable RUSHES_MILVUS_LITE_SPEEDUPS is not "0" (the switch reaches child processes
too); `uninstall()` puts the stock functions back. pymilvus runs Milvus Lite 3.x's gRPC server in a
thread of the process that opens OUT/milvus.db (milvus_lite.server_manager), so for ClipStore that
is rushes' own process; a separately started server process must call `install()` itself.
`direct_reads(client, servicer)` lets a client of a server in this process (an embedded database, or
the one `rushes serve` hosts) call its servicer for searches and queries instead of going through gRPC
over 127.0.0.1 (same messages, no loopback).
`wait_for_index_builds()` waits for Milvus Lite's background index builds (its `describe_index`
always reports 0 pending rows), for an in-process server.

Drop this module when Milvus Lite's search no longer loops over every row per search.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Any

import numpy as np

PINNED_VERSION = "3.2.2"
ENV_SWITCH = "RUSHES_MILVUS_LITE_SPEEDUPS"
# The memtable budget at which Milvus Lite seals a segment (stock: 128 MiB, about 34,500 rushes rows, and
# the WAL budget twice that). Every search runs once per segment (an HNSW walk, masks, hit conversion), so
# 100,000 clips in 3 segments cost about 3x one; 512 MiB is about 140,000 rows: 100,000 clips in one
# segment, 1,000,000 in eight (each above Milvus Lite's 100,000-row compaction limit, so never merged and
# indexed again). The price: unflushed rows are searched by brute force, up to a segment's worth while
# `rushes index` runs, and a flush holds that much more memory (peak 5.0 GB against 2.6 GB at 100,000).
SEGMENT_MEMTABLE_BYTES = 512 << 20

log = logging.getLogger(__name__)
_lock = threading.Lock()
_cache_lock = threading.Lock()  # guards _segment_states between search threads
_stock: list[tuple[Any, str, Any]] = []  # (owner, attribute, stock value) of what install() replaced
_warned = False


def enabled_by_env() -> bool:
    """False when RUSHES_MILVUS_LITE_SPEEDUPS says off (0, false, no, off)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def installed() -> bool:
    return bool(_stock)


def milvus_lite_version() -> str | None:
    try:
        import milvus_lite
    except ImportError:
        return None
    return str(milvus_lite.__version__)


def install() -> bool:
    """Replace Milvus Lite's per-search loops (idempotent); True when the speedups are active."""
    global _warned
    if installed():
        return True
    if not enabled_by_env():
        return False
    version = milvus_lite_version()
    if version != PINNED_VERSION:
        if version is not None and not _warned:
            _warned = True
            log.warning("Milvus Lite %s is not %s, the version rushes' search speedups were written for: "
                        "searching with stock Milvus Lite (slow above ~10,000 clips)", version, PINNED_VERSION)
        return False
    from milvus_lite.engine import collection as collection_module
    from milvus_lite.engine import projection
    from milvus_lite.index.sparse_inverted import SparseInvertedIndex
    from milvus_lite.schema import validation

    replacements = [(collection_module, "execute_search_with_index", _execute_search_with_index),
                    (collection_module.Collection, "_search_sparse", _search_sparse),
                    (SparseInvertedIndex, "search", _bm25_search),
                    (projection, "_is_primary", _is_primary),
                    (collection_module, "validate_record", _validate_record),
                    (validation, "_find_float_vector", _find_float_vector)]
    # Larger segments (see SEGMENT_MEMTABLE_BYTES), unless the environment sets Milvus Lite's own budgets.
    if "MILVUS_LITE_MEMTABLE_MEMORY_LIMIT_BYTES" not in os.environ:
        replacements.append((collection_module, "MEMTABLE_MEMORY_LIMIT", SEGMENT_MEMTABLE_BYTES))
    if "MILVUS_LITE_WAL_SIZE_LIMIT_BYTES" not in os.environ:
        replacements.append((collection_module, "WAL_SIZE_LIMIT", 2 * SEGMENT_MEMTABLE_BYTES))
    with _lock:
        if _stock:
            return True
        for owner, name, replacement in replacements:
            _stock.append((owner, name, getattr(owner, name)))
            setattr(owner, name, replacement)
    return True


def uninstall() -> None:
    """Put Milvus Lite's own functions back."""
    with _lock:
        while _stock:
            owner, name, value = _stock.pop()
            setattr(owner, name, value)
        _segment_states.clear()
        _primary_names.clear()


# -- visibility: which rows of the sealed segments a search may return ---------------------------


class _SegmentSet:
    """One set of sealed segments: per segment, which rows are the newest version of their primary key
    among these segments, and (cached per tombstone map) which of those are not deleted."""

    def __init__(self, segments: tuple):
        self.segments = segments
        self.seqs = [np.asarray(s.seqs, dtype=np.int64) for s in segments]
        # pk -> rows, for segments holding a pk twice (pk_to_row keeps only the last)
        self.multi: list[dict | None] = []
        for seg in segments:
            if len(seg.pk_to_row) == seg.num_rows:
                self.multi.append(None)
            else:
                rows: dict = {}
                for i, pk in enumerate(seg.pks):
                    rows.setdefault(pk, []).append(i)
                self.multi.append(rows)
        self.newest = self._newest()
        self._tombstones: tuple[dict, list[np.ndarray]] | None = None
        self._filters: dict[int, tuple[Any, list]] = {}  # id(compiled filter) -> (it, mask per segment)
        self._joined: list[Any] = [None] * len(segments)  # per segment: the columns hits read, in one chunk

    def _newest(self) -> list[np.ndarray]:
        sizes = [len(s) for s in self.seqs]
        if not self.segments:  # nothing flushed yet: every row is in the memtable
            return []
        if len(self.segments) == 1 and self.multi[0] is None:
            return [np.ones(sizes[0], dtype=bool)]
        pks = np.concatenate([np.asarray(s.pks) for s in self.segments])
        seqs = np.concatenate(self.seqs)
        _, group = np.unique(pks, return_inverse=True)
        top = np.full(group.max() + 1, -1, dtype=np.int64)
        np.maximum.at(top, group, seqs)
        newest = seqs == top[group]
        return np.split(newest, np.cumsum(sizes)[:-1])

    def rows(self, i: int, pk) -> list[int]:
        multi = self.multi[i]
        if multi is not None:
            return multi.get(pk, [])
        row = self.segments[i].pk_to_row.get(pk)
        return [] if row is None else [row]

    def newest_seq(self, pk) -> int:
        """The largest sequence number of `pk` in these segments, -1 when none holds it."""
        best = -1
        for i in range(len(self.segments)):
            for row in self.rows(i, pk):
                best = max(best, int(self.seqs[i][row]))
        return best

    def live(self, tombstones: dict) -> list[np.ndarray]:
        """Newest rows not shadowed by a flushed delete (delete seq > row seq). Shared: do not modify."""
        cached = self._tombstones
        if cached is not None and cached[0] == tombstones:
            return cached[1]
        masks = [m.copy() for m in self.newest]
        for pk, delete_seq in tombstones.items():
            for i in range(len(self.segments)):
                for row in self.rows(i, pk):
                    if delete_seq > self.seqs[i][row]:
                        masks[i][row] = False
        self._tombstones = (dict(tombstones), masks)
        return masks

    def records(self, i: int, rows: list[int], columns: list[str]) -> list[dict]:
        """Rows of segment i as dicts of `columns`. A segment's table has a chunk per written batch, and
        pyarrow's take() over many chunks costs the whole segment (1,000,000 clips: 52% of a hybrid
        search), so the columns searches ask for are joined into one chunk once per segment (memory:
        those columns again, the result fields, not the vectors) and each search takes only its rows."""
        import pyarrow as pa

        joined = self._joined[i]
        if joined is None or not set(columns) <= set(joined.column_names):
            wanted = set(columns) | set(joined.column_names if joined is not None else ())
            table = self.segments[i].table
            joined = self._joined[i] = table.select([c for c in table.column_names if c in wanted]).combine_chunks()
        return joined.select(columns).take(pa.array(rows, type=pa.int64())).to_pylist()

    def filter_mask(self, i: int, compiled_filter, indexed_filter_plan) -> np.ndarray:
        """Which rows of segment i pass `compiled_filter` (read-only), evaluated once per segment and
        filter: sealed segments never change and Milvus Lite compiles an expression once (its filter
        cache), while stock evaluates it on every search (at 1,000,000 clips ~10 ms a filtered route)."""
        from milvus_lite.search.indexed_filter import evaluate_segment_filter

        entry = self._filters.get(id(compiled_filter))
        if entry is None or entry[0] is not compiled_filter:
            with _cache_lock:
                while len(self._filters) >= FILTERS_KEPT:
                    self._filters.pop(next(iter(self._filters)), None)
                entry = self._filters[id(compiled_filter)] = (compiled_filter, [None] * len(self.segments))
        mask = entry[1][i]
        if mask is None:
            mask = evaluate_segment_filter(self.segments[i], compiled_filter, indexed_filter_plan).astype(bool)
            mask.setflags(write=False)
            entry[1][i] = mask
        return mask

    def hide(self, masks: list[np.ndarray], shadows, partition_aware: bool = False) -> list[np.ndarray]:
        """`masks` with rows hidden that a newer memtable version or pending delete shadows.

        `shadows` yields (pk, seq, partition): rows of pk with a smaller seq are hidden (only in
        `partition` or every partition, when partition_aware). Touched masks are copied."""
        from milvus_lite.constants import ALL_PARTITIONS

        out = list(masks)
        copied = set()
        for pk, seq, partition in shadows:
            for i in range(len(self.segments)):
                if partition_aware and partition not in (ALL_PARTITIONS, self.segments[i].partition):
                    continue
                for row in self.rows(i, pk):
                    if seq > self.seqs[i][row] and out[i][row]:
                        if i not in copied:
                            out[i] = out[i].copy()
                            copied.add(i)
                        out[i][row] = False
        return out


_segment_states: dict[tuple, _SegmentSet] = {}
FILTERS_KEPT = 16  # filter masks per segment set: 1 byte a row each


def _segment_set(segments: tuple) -> _SegmentSet:
    """The cached _SegmentSet of exactly these segment objects (a flush or compaction makes a new set)."""
    key = tuple(id(s) for s in segments)
    state = _segment_states.get(key)
    if state is None or any(a is not b for a, b in zip(state.segments, segments, strict=True)):
        state = _SegmentSet(segments)
        with _cache_lock:  # the server answers searches on several threads
            while len(_segment_states) >= 8:  # a few sets at once: one per partition scope and collection
                _segment_states.pop(next(iter(_segment_states)), None)
            _segment_states[key] = state
    return state


# -- dense search: milvus_lite.search.executor_indexed.execute_search_with_index ----------------------


def _execute_search_with_index(query_vectors, segments, memtable, delta_index, top_k, metric_type, pk_field,
                               vector_field, partition_names=None, compiled_filter=None, output_fields=None,
                               indexed_filter_plan=None, project_record_fn=None, search_params=None):
    """Stock's per-source recall and merge; the visibility masks come from _SegmentSet."""
    from milvus_lite.index.brute_force import BruteForceIndex

    if query_vectors.ndim == 1:
        query_vectors = query_vectors.reshape(1, -1)
    if query_vectors.dtype != np.float32:
        query_vectors = query_vectors.astype(np.float32, copy=False)
    nq = int(query_vectors.shape[0])
    if nq == 0 or top_k <= 0:
        return [[] for _ in range(nq)]

    wanted = set(partition_names) if partition_names else None
    segs = tuple(s for s in segments if s.num_rows > 0 and (wanted is None or s.partition in wanted))
    mt_pks, mt_seqs, mt_vecs, mt_refs, mt_table = memtable.to_search_snapshot(
        vector_field=vector_field, partition_names=partition_names, include_table=compiled_filter is not None)
    if not segs and not mt_pks:
        return [[] for _ in range(nq)]
    mt_deletes = memtable.delete_index_snapshot()  # {pk: (seq, partition)}, not yet in delta_index
    tombstones = delta_index._map
    mt_seq_list = [int(s) for s in mt_seqs.tolist()]

    state = _segment_set(segs)
    shadows = [(pk, seq, None) for pk, seq in zip(mt_pks, mt_seq_list, strict=True)]
    shadows += [(pk, entry[0], None) for pk, entry in mt_deletes.items()]
    masks = state.hide(state.live(tombstones), shadows)
    mt_mask = np.array([state.newest_seq(pk) <= seq and tombstones.get(pk, -1) <= seq
                        and (pk not in mt_deletes or mt_deletes[pk][0] <= seq)
                        for pk, seq in zip(mt_pks, mt_seq_list, strict=True)], dtype=bool)

    seg_filters: list[np.ndarray | None] = [None] * len(segs)
    mt_filter = None
    if compiled_filter is not None:
        from milvus_lite.search.filter import evaluate_mask

        seg_filters = [state.filter_mask(i, compiled_filter, indexed_filter_plan) for i in range(len(segs))]
        if mt_pks and mt_table is not None:
            mt_filter = evaluate_mask(compiled_filter, mt_table)

    candidates: list[list[tuple[float, int, int]]] = [[] for _ in range(nq)]

    def recall(source: int, visible: np.ndarray, restrict: np.ndarray | None, vectors, index) -> None:
        if restrict is not None:
            visible = visible & restrict.astype(bool)
        if not visible.any():
            return
        if index is None:
            index = BruteForceIndex.build(vectors, metric_type)
        # no mask when every row is visible: a mask makes HNSW use an id selector, which changes its walk
        ids, dists = index.search(query_vectors, top_k, valid_mask=None if visible.all() else visible.copy(),
                                  params=search_params)
        for q in range(nq):
            for lid, dist in zip(ids[q].tolist(), dists[q].tolist(), strict=True):
                if lid < 0:
                    break
                candidates[q].append((float(dist), source, lid))

    for i, seg in enumerate(segs):
        vectors, null_mask = seg.vector_data(vector_field)
        restrict = seg_filters[i]
        if null_mask is not None:
            restrict = null_mask if restrict is None else restrict & null_mask
        recall(i, masks[i], restrict, vectors, seg.indexes.get(vector_field))
    if mt_pks:
        recall(len(segs), mt_mask, mt_filter, mt_vecs, None)

    if project_record_fn is not None:
        project = project_record_fn
    elif output_fields is None:
        def project(record: dict) -> dict:
            return {k: v for k, v in record.items() if k != pk_field and k != vector_field}
    else:
        keep = set(output_fields) - {pk_field}

        def project(record: dict) -> dict:
            return {k: record[k] for k in keep if k in record}

    winners = [sorted(c)[:top_k] for c in candidates]  # ties: source, then row, as stock
    # Only the columns the projection reads (stock converts every column of a hit, vectors included).
    wanted_columns = None
    if output_fields is not None and "*" not in output_fields:
        wanted_columns = set(output_fields) | {pk_field, "$meta"}
    records: dict[tuple[int, int], dict] = {}
    for source in range(len(segs)):
        rows = sorted({lid for hits in winners for dist, src, lid in hits if src == source})
        if rows and wanted_columns is None:
            records.update(((source, r), segs[source].row_to_dict(r)) for r in rows)
        elif rows:
            columns = [c for c in segs[source].table.column_names if c in wanted_columns]
            for r, record in zip(rows, state.records(source, rows, columns), strict=True):
                records[source, r] = _unpack_meta(record)
    results = []
    for hits in winners:
        out = []
        for dist, source, lid in hits:
            if source < len(segs):
                record = records[source, lid]
                pk = record[pk_field] if pk_field in record else segs[source].pks[lid]
            else:
                record = memtable.materialize_row(*mt_refs[lid])
                pk = record[pk_field] if pk_field in record else mt_pks[lid]
            out.append({"id": pk, "distance": dist, "entity": project(record)})
        results.append(out)
    return results


def _unpack_meta(record: dict) -> dict:
    """Dynamic fields kept in `$meta` also become top-level keys, as Segment.row_to_dict makes them."""
    raw = record.get("$meta")
    if isinstance(raw, str):
        import json

        try:
            raw = json.loads(raw)
        except (json.JSONDecodeError, ValueError):
            raw = None
    if isinstance(raw, dict):
        record.update(raw)
    return record


# -- sparse (BM25) search: milvus_lite.engine.collection.Collection._search_sparse --------------------


def _search_sparse(self, query_vectors, vector_field, top_k, metric_type, partition_names, expr, output_fields,
                   timezone=None):
    """Stock's per-segment sparse search and merge; visibility masks come from _SegmentSet."""
    import pyarrow as pa
    from milvus_lite.analyzer.sparse import bytes_to_sparse
    from milvus_lite.engine.projection import build_projection_plan, project_record
    from milvus_lite.index.sparse_factory import (
        _search_prepared_sparse_index,
        create_sparse_index,
        sparse_index_matches,
    )
    from milvus_lite.index.sparse_inverted import SparseInvertedIndex

    wanted = set(partition_names) if partition_names else None
    plan = build_projection_plan(output_fields, self._schema, api_kind="search")
    spec = self._index_specs.get(vector_field)
    index_params = spec.build_params if spec else {}
    queries = self._prepare_sparse_queries(query_vectors, vector_field)
    nq = len(queries)
    compiled_filter = self._compile_filter(expr, timezone=timezone) if expr else None
    indexed_filter_plan = self._indexed_filter_plan(compiled_filter)
    candidates: list[list] = [[] for _ in range(nq)]  # (distance, pk, (segment, row) | (record, seq))

    seg_snapshot, delta_snap = self._read_snapshot()
    mt_deletes = self._memtable.delete_index_snapshot()
    mt_versions = self._memtable.pk_index_snapshot()  # ((pk, (batch, row, seq)), ...)
    tombstones = delta_snap._map

    # Versions are resolved over every segment (all partitions), as stock does.
    segs = tuple(s for s in seg_snapshot if s.num_rows > 0)
    state = _segment_set(segs)
    shadows = [(pk, pos[2], None) for pk, pos in mt_versions]
    masks = state.hide(state.live(tombstones), shadows)
    masks = state.hide(masks, ((pk, e[0], e[1]) for pk, e in mt_deletes.items()), partition_aware=True)
    index_of = {id(s): i for i, s in enumerate(segs)}

    for seg in seg_snapshot:
        if wanted is not None and seg.partition not in wanted:
            continue
        table = seg.table
        if table is None or len(table) == 0:
            continue
        index = seg.sparse_indexes.get(vector_field)
        if not sparse_index_matches(index, metric_type, index_params):
            vectors = [bytes_to_sparse(r) if isinstance(r, bytes) else (r or {})
                       for r in table.column(vector_field).to_pylist()]
            index = create_sparse_index(metric_type, index_params)
            index.build(vectors)
            seg.sparse_indexes[vector_field] = index
        if isinstance(index, SparseInvertedIndex):
            _postings(index, every_term=True)
        i = index_of[id(seg)]
        valid = masks[i]
        if compiled_filter is not None:
            valid = valid & state.filter_mask(i, compiled_filter, indexed_filter_plan)
        if not valid.any():
            continue
        ids, dists = _search_prepared_sparse_index(index, queries, top_k, valid_mask=valid.copy())
        for q in range(nq):
            for lid, dist in zip(ids[q].tolist(), dists[q].tolist(), strict=True):
                if lid < 0:
                    break
                candidates[q].append((float(dist), seg.pks[lid], (i, lid)))

    # The memtable (small, mutable) is indexed per search, as stock does.
    mt_pks, mt_vectors, mt_refs = [], [], []
    for pk, seq, record in self._memtable.active_record_snapshots(partition_names=partition_names):
        if tombstones.get(pk, -1) > seq or state.newest_seq(pk) > seq:
            continue
        raw = record.get(vector_field)
        mt_pks.append(pk)
        mt_vectors.append(bytes_to_sparse(raw) if isinstance(raw, bytes) else (raw or {}))
        mt_refs.append((record, seq))
    if mt_pks:
        mt_valid = np.ones(len(mt_pks), dtype=bool)
        if compiled_filter is not None:
            from milvus_lite.search.filter.eval.python_backend import _eval_row

            mt_valid = np.array([bool(_eval_row(compiled_filter.ast, rec)) for rec, _ in mt_refs], dtype=bool)
        index = create_sparse_index(metric_type, index_params)
        index.build(mt_vectors, valid_mask=mt_valid)
        ids, dists = _search_prepared_sparse_index(index, queries, top_k)
        for q in range(nq):
            for lid, dist in zip(ids[q].tolist(), dists[q].tolist(), strict=True):
                if lid < 0:
                    break
                candidates[q].append((float(dist), mt_pks[lid], mt_refs[lid]))

    results = []
    for q in range(nq):
        best: dict = {}  # pk -> (seq, candidate): the newest version, at the pk's first position
        for cand in candidates[q]:
            _, pk, source = cand
            if isinstance(source[0], dict):
                seq = int(source[1])
            else:
                seq = int(state.seqs[source[0]][source[1]])
            if pk not in best or seq > best[pk][0]:
                best[pk] = (seq, cand)
        ranked = sorted((c for _, c in best.values()), key=lambda c: c[0])[:top_k]  # stable, as stock
        # only the columns the projection reads (stock converts every one, vectors included), one read per segment
        rows_of: dict[int, list[int]] = {}
        for _, _, source in ranked:
            if not isinstance(source[0], dict):
                rows_of.setdefault(source[0], []).append(source[1])
        records: dict[tuple[int, int], dict] = {}
        for i, rows in rows_of.items():
            table = segs[i].table
            columns = [name for name in table.column_names if name not in ("_seq", "_partition")
                       and (plan.engine_fields is None or name in plan.engine_fields)]
            if plan.engine_fields is None:  # every field, vectors too: read these rows only, keep nothing
                found = pa.concat_tables([table.select(columns).slice(r, 1) for r in rows]).to_pylist()
            else:
                found = state.records(i, rows, columns)
            records.update(((i, row), record) for row, record in zip(rows, found, strict=True))
        hits = []
        for dist, pk, source in ranked:
            record = source[0] if isinstance(source[0], dict) else records[source]
            hits.append({"id": pk, "distance": dist, "entity": project_record(record, self._schema, plan)})
        results.append(hits)
    return results


# -- BM25 scoring: milvus_lite.index.sparse_inverted.SparseInvertedIndex.search ---------------------


class _Postings:
    """numpy copies of one SparseInvertedIndex's posting lists: all of them at once for a sealed
    segment's index (a term's first search at 1,000,000 clips otherwise waited ~30 ms per segment for
    its copy; ClipStore.warm makes them at start), per term on first use for the memtable's index,
    which is built anew for every search."""

    def __init__(self, index, every_term: bool):
        self.source = index._posting_lists  # build() replaces this dict: a new one means rebuilt
        self.terms: dict[int, tuple[np.ndarray, np.ndarray] | None] = {}
        if every_term:
            for term in self.source:
                self.get(term)
        avgdl = index.avgdl if index.avgdl > 0 else 1.0
        # stock: tf + k1 * (1.0 - b + b * dl / avgdl), dl float32, so float32 throughout
        dl = index._doc_lengths
        self.norm = np.float32(index.k1) * (np.float32(1.0 - index.b) + np.float32(index.b) * dl / np.float32(avgdl))

    def get(self, term) -> tuple[np.ndarray, np.ndarray] | None:
        if term not in self.terms:
            posting = self.source.get(term)
            self.terms[term] = None if not posting else (
                np.fromiter((p[0] for p in posting), dtype=np.int64, count=len(posting)),
                np.fromiter((p[1] for p in posting), dtype=np.float64, count=len(posting)))
        return self.terms[term]


def _postings(index, every_term: bool = False) -> _Postings:
    """The index's _Postings, made on first use and again after the index is rebuilt."""
    postings = index.__dict__.get("_rushes_postings")
    if postings is None or postings.source is not index._posting_lists:
        postings = index.__dict__["_rushes_postings"] = _Postings(index, every_term)
    return postings


def _bm25_search(self, query_sparse_vectors, top_k, valid_mask=None):
    """SparseInvertedIndex.search with numpy: same float32 scores, same order (ties: first term, row)."""
    from milvus_lite.index.sparse_common import empty_results, validate_mask

    valid_mask = validate_mask(valid_mask, len(self._doc_lengths))
    nq = len(query_sparse_vectors)
    all_ids, all_dists = empty_results(nq, top_k)
    if self.doc_count == 0:
        return all_ids, all_dists
    postings = _postings(self)
    n_docs = len(self._doc_lengths)
    k1_plus_1 = self.k1 + 1.0
    for q, terms in enumerate(query_sparse_vectors):
        if not terms:
            continue
        scores = np.zeros(n_docs, dtype=np.float32)
        first = np.full(n_docs, len(terms), dtype=np.int64)  # the query term that first reached a document
        for t, (term, weight) in enumerate(terms.items()):
            found = postings.get(term)
            if found is None:
                continue
            ids, tfs = found
            if valid_mask is not None:
                keep = valid_mask[ids]
                ids, tfs = ids[keep], tfs[keep]
            if len(ids) == 0:
                continue
            df = self._df[term]
            idf = math.log((self.doc_count - df + 0.5) / (df + 0.5) + 1.0)
            # the stock expression's types: python float (tf * (k1 + 1)) over float32, times float32(idf)
            tf_norm = (tfs * k1_plus_1).astype(np.float32) / (tfs.astype(np.float32) + postings.norm[ids])
            scores[ids] += tf_norm * np.float32(idf) * np.float32(weight)
            first[ids] = np.minimum(first[ids], t)
        hit = np.flatnonzero(first < len(terms))
        if len(hit) == 0:
            continue
        if len(hit) > top_k > 0:
            kth = np.partition(scores[hit], len(hit) - top_k)[len(hit) - top_k]
            hit = hit[scores[hit] >= kth]
        order = np.lexsort((hit, first[hit], -scores[hit]))[:top_k]
        chosen = hit[order]
        all_ids[q, : len(chosen)] = chosen
        all_dists[q, : len(chosen)] = -scores[chosen]
    return all_ids, all_dists


# -- projection: milvus_lite.engine.projection._is_primary ----------------------------------------

_primary_names: dict[int, tuple[Any, frozenset]] = {}


def _is_primary(schema, field_name: str) -> bool:
    """Stock scans every schema field for every projected field of every hit; a collection's primary
    key never changes, so its name is looked up once per schema object."""
    cached = _primary_names.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, frozenset(f.name for f in schema.fields if f.is_primary))
        _primary_names[id(schema)] = cached
    return field_name in cached[1]


# -- inserts: milvus_lite.schema.validation.validate_record ---------------------------------------

_vector_checked = threading.local()


def _validate_record(record, schema, default_properties=None):
    """Stock validate_record without its per-element loop over the vector when every element is a float.

    Stock checks each element of the first FLOAT_VECTOR field with two isinstance calls (0.4 ms of a
    512-d row, most of an insert). A list of exactly `dim` Python floats passes that check, so for one
    the check is skipped (stock looks the field up through _find_float_vector, replaced below, and
    does nothing when it finds none); anything else is checked, and rejected, by stock itself."""
    from milvus_lite.schema import validation

    field = _stock_find_float_vector()(schema)
    vector = record.get(field.name) if field is not None and isinstance(record, dict) else None
    if type(vector) is list and len(vector) == field.dim and set(map(type, vector)) == {float}:
        _vector_checked.schema = schema
        try:
            return validation.validate_record(record, schema, default_properties=default_properties)
        finally:
            _vector_checked.schema = None
    return validation.validate_record(record, schema, default_properties=default_properties)


def _stock_find_float_vector():
    from milvus_lite.schema import validation

    for owner, name, value in _stock:
        if owner is validation and name == "_find_float_vector":
            return value
    return validation._find_float_vector


def _find_float_vector(schema):
    """Stock's lookup, except None (nothing to check) while _validate_record has checked this schema's vector."""
    if getattr(_vector_checked, "schema", None) is schema:
        return None
    return _stock_find_float_vector()(schema)


# -- reads without the loopback: pymilvus calls the servicer of its own process -----------------

# The RPCs rushes' searches make. pymilvus runs an embedded Milvus Lite as a gRPC server on threads of
# the same process and talks to it over 127.0.0.1, so each search pays for protobuf encoding and
# decoding both ways and two thread hand-offs: at 100,000 clips most of a 5 ms visual search. Writes
# stay on gRPC: their payloads are what the server's message limits and its one-writer rule are for.
DIRECT_RPCS = frozenset({"Search", "HybridSearch", "Query"})


class _InProcessContext:
    """What Milvus Lite's servicer reads of a grpc.ServicerContext: the call's metadata, a status it may set."""

    def __init__(self, metadata):
        self._metadata = tuple(metadata or ())
        self.code = self.details = None

    def invocation_metadata(self):
        return self._metadata

    def set_code(self, code) -> None:
        self.code = code

    def set_details(self, details) -> None:
        self.details = details


class _DirectCall:
    """One read RPC called on the servicer in the caller's thread; `.future` and the rest stay gRPC's."""

    def __init__(self, grpc_call, servicer_method):
        self._grpc_call = grpc_call
        self._servicer_method = servicer_method

    def __call__(self, request, timeout=None, metadata=None, **_):
        return self._servicer_method(request, _InProcessContext(metadata))

    def __getattr__(self, name):
        return getattr(self._grpc_call, name)


class _DirectStub:
    """pymilvus' MilvusServiceStub with DIRECT_RPCS answered by the servicer while the speedups are installed."""

    def __init__(self, stub, servicer):
        self._stub = stub
        self._servicer = servicer

    def __getattr__(self, name):
        call = getattr(self._stub, name)
        if name in DIRECT_RPCS and installed():
            return _DirectCall(call, getattr(self._servicer, name))
        return call


def embedded_servicer(db_path: str):
    """A servicer of the Milvus Lite database pymilvus opened at db_path in this process, or None."""
    if milvus_lite_version() != PINNED_VERSION:
        return None
    from milvus_lite import server_manager_instance
    from milvus_lite.adapter.grpc.servicer import MilvusServicer

    entry = server_manager_instance._servers.get(os.path.abspath(db_path))
    return MilvusServicer(entry[1]) if entry else None


def direct_reads(client, servicer) -> bool:
    """Route a MilvusClient's searches and queries straight to `servicer`, the Milvus Lite servicer of the
    server it is connected to when that server runs in this process (`embedded_servicer`, or
    indexing.server.hosted_servicer): same requests and responses, in the calling thread, no loopback.
    True when routed.

    Only while the speedups are installed (uninstall() puts every call back on gRPC). A reconnect makes
    pymilvus build a new stub, which is plain gRPC again: correct, only slower."""
    if servicer is None or milvus_lite_version() != PINNED_VERSION or not installed():
        return False
    handler = client._get_connection()
    if getattr(handler, "_stub", None) is None:
        return False
    if not isinstance(handler._stub, _DirectStub):
        handler._stub = _DirectStub(handler._stub, servicer)
    return True


# -- index builds -------------------------------------------------------------------------------


def unindexed_segments(collection) -> int:
    """(segment, dense field) pairs of a Milvus Lite Collection that have no vector index yet."""
    from milvus_lite.schema.types import DataType

    dense = [name for name, spec in collection._index_specs.items()
             if any(f.name == name and f.dtype == DataType.FLOAT_VECTOR for f in collection.schema.fields)]
    return sum(1 for seg in collection._segments_snapshot() if seg.num_rows > 0
               for name in dense if name not in seg.indexes)


def wait_for_index_builds(db_path: str, collection_name: str, timeout: float | None = None) -> float:
    """Wait until Milvus Lite has built the vector indexes of every sealed segment; the seconds waited.

    Milvus Lite builds them in a background thread after flush returns, and its describe_index says
    0 pending rows all along. Only for a server that runs in this process (pymilvus opened db_path
    here); RuntimeError otherwise, or when this is not the pinned Milvus Lite version."""
    if milvus_lite_version() != PINNED_VERSION:
        raise RuntimeError(f"wait_for_index_builds reads Milvus Lite {PINNED_VERSION} internals, "
                           f"this is {milvus_lite_version()}")
    from milvus_lite import server_manager_instance

    entry = server_manager_instance._servers.get(os.path.abspath(db_path))
    if entry is None:
        raise RuntimeError(f"no Milvus Lite server for {db_path} runs in this process")
    collection = entry[1].get_collection(collection_name)
    start = time.monotonic()
    collection._wait_for_bg(timeout)
    missing = unindexed_segments(collection)
    if missing:
        raise RuntimeError(f"{missing} segment indexes of {collection_name} are still missing after the background "
                           "builds ended (a failed build is logged by milvus_lite and retried on the next flush)")
    return time.monotonic() - start
