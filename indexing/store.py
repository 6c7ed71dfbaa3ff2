"""The Milvus collection of clips: one row per kept clip, upserted by clip_id.

Fields: `clip_id` (primary key), the visual vector (open_clip), the caption vector (sentence
encoder), the caption text with a BM25 function feeding a sparse vector (full-text search, Milvus
2.5+ and Milvus Lite 3), `has_caption`, and the manifest's scalar columns to filter on. Dense vectors
get HNSW indexes with COSINE similarity. The models that made the vectors are kept in the collection's
properties, so `rushes search` embeds a query with the same models.

Milvus Lite (`OUT/milvus.db`, the default) is a database one process opens; when a rushes-managed server
holds it (indexing/server.py, started by `rushes serve` or `rushes milvus start`) every store connects
through that server instead. A server URI (`http://host:19530` plus a token) serves many. OUT/embeddings/ stays the source of truth: a
collection can always be dropped and rebuilt from it (`--recreate`).
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curation.core import schema
from curation.core.schema import M

# Milvus field names that are not manifest columns.
F_VISUAL = "visual_vector"
F_TEXT = "caption_vector"
F_CAPTION = "caption"
F_BM25 = "caption_bm25"
F_HAS_CAPTION = "has_caption"
F_CAPTIONER = "captioner"
META_PROPERTY = "rushes.meta"

# Manifest columns copied into the collection, filterable with --where.
SCALAR_COLUMNS = [
    M.source, M.clip_index, M.start_frame, M.end_frame, M.start_time, M.end_time, M.duration, M.fps,
    M.width, M.height, M.codec, M.status, M.clip_path, M.thumb_path,
    M.motion_score, M.motion_p90, M.camera_motion, M.camera_motion_confidence, M.luminance_mean,
    M.black_fraction, M.bright_fraction, M.sharpness, M.text_area, M.dominant_colors,
    M.aesthetic_score, M.aesthetic_model,
]
RESULT_FIELDS = [M.source, M.start_time, M.end_time, M.duration, M.clip_path, M.thumb_path, M.width, M.height,
                 M.aesthetic_score, M.aesthetic_model, M.status, F_CAPTION, F_CAPTIONER]
CAPTION_MAX_CHARS = 8000
STRING_MAX = 4096
UPSERT_BATCH = 256
CONNECT_TIMEOUT_S = 120

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """Milvus cannot be reached or used as configured; the message says what to do."""


class StoreSchemaError(StoreError):
    """The existing collection does not match what this index needs."""


class FilterExpressionError(ValueError):
    """A --where expression Milvus rejected; the message names the fields one can filter on."""


@dataclass
class StoreMeta:
    """What made the vectors of a collection (kept in its properties)."""

    visual_model: str
    text_model: str
    visual_dim: int
    text_dim: int
    clip_model: str = ""
    clip_pretrained: str | None = None
    text_model_ref: str = ""
    bm25: bool = True

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StoreMeta:
        return cls(**json.loads(text))


def _milvus_type(arrow_type: pa.DataType):
    from pymilvus import DataType

    if pa.types.is_string(arrow_type):
        return DataType.VARCHAR
    if pa.types.is_float64(arrow_type):
        return DataType.DOUBLE
    if pa.types.is_float32(arrow_type):
        return DataType.FLOAT
    if pa.types.is_int32(arrow_type):
        return DataType.INT32
    if pa.types.is_int64(arrow_type):
        return DataType.INT64
    if pa.types.is_list(arrow_type):
        return DataType.ARRAY
    raise TypeError(f"no Milvus type for manifest column type {arrow_type}")


def scalar_field_types() -> dict[str, str]:
    """Filterable field -> Milvus type name, for error messages and docs."""
    types = {M.clip_id: "VARCHAR"}
    for name in SCALAR_COLUMNS:
        types[name] = _milvus_type(schema.MANIFEST.field(name).type).name
    types[F_CAPTION] = "VARCHAR"
    types[F_CAPTIONER] = "VARCHAR"
    types[F_HAS_CAPTION] = "BOOL"
    return types


def collection_schema(meta: StoreMeta):
    """The collection schema and index parameters for vectors made by `meta`'s models."""
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field(M.clip_id, DataType.VARCHAR, is_primary=True, max_length=64)
    s.add_field(F_VISUAL, DataType.FLOAT_VECTOR, dim=meta.visual_dim)
    s.add_field(F_TEXT, DataType.FLOAT_VECTOR, dim=meta.text_dim)
    s.add_field(F_CAPTION, DataType.VARCHAR, max_length=CAPTION_MAX_CHARS * 4, enable_analyzer=meta.bm25)
    s.add_field(F_HAS_CAPTION, DataType.BOOL)
    s.add_field(F_CAPTIONER, DataType.VARCHAR, max_length=STRING_MAX, nullable=True)
    for name in SCALAR_COLUMNS:
        dtype = _milvus_type(schema.MANIFEST.field(name).type)
        if dtype == DataType.VARCHAR:
            s.add_field(name, dtype, max_length=STRING_MAX, nullable=True)
        elif dtype == DataType.ARRAY:
            s.add_field(name, dtype, element_type=DataType.VARCHAR, max_capacity=64, max_length=64, nullable=True)
        else:
            s.add_field(name, dtype, nullable=True)
    if meta.bm25:
        s.add_field(F_BM25, DataType.SPARSE_FLOAT_VECTOR)
        s.add_function(Function(name="caption_bm25_fn", function_type=FunctionType.BM25,
                                input_field_names=[F_CAPTION], output_field_names=[F_BM25]))
    index = MilvusClient.prepare_index_params()
    for name in (F_VISUAL, F_TEXT):
        index.add_index(name, index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 200})
    if meta.bm25:
        index.add_index(F_BM25, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    return s, index


def default_uri(out) -> str:
    from curation.core.rundir import RunDir

    return str(RunDir(out).milvus_db)


def connect_address(uri: str) -> str:
    """Where to connect for `uri`: a Milvus Lite database with a running rushes-managed server is reached
    through that server (so this process never opens the database itself); anything else as given."""
    from indexing.server import is_local_db, running

    if is_local_db(uri):
        state = running(uri)
        if state is not None:
            return state.uri
    return uri


def _connect_failure(uri: str, address: str, err: Exception) -> str:
    from indexing.server import is_local_db, lock_holder, locked_message

    if is_local_db(uri) and address == uri:
        holder = lock_holder(uri)
        if holder is not None and holder != os.getpid():
            return locked_message(uri, holder)
        return f"cannot open Milvus Lite database {uri}: {err}"
    if address != uri:
        return (f"cannot reach the rushes-managed Milvus server of {uri} at {address}: {err}. "
                f"`rushes milvus status --out {Path(uri).parent}` shows it; `rushes milvus stop` then start resets it")
    return f"cannot connect to Milvus at {uri}: {err}. Check --milvus-uri/--milvus-token"


class ClipStore:
    """One Milvus collection of clips. Use `open_store` to get one checked against the models in use."""

    def __init__(self, uri: str, token: str | None = None, collection: str = "rushes_clips"):
        from pymilvus import MilvusClient

        from indexing import milvus_lite_speedups, server

        # pymilvus logs every failed RPC at ERROR before raising; the caller turns the exception into a
        # clear message, so the duplicate log line only confuses.
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
        self.uri = uri
        self.collection = collection
        self.address = connect_address(uri)
        embedded = self.address.endswith(".db")
        if embedded:  # Milvus Lite will run in this process: without the speedups its searches loop over every row
            milvus_lite_speedups.install()
        try:
            # a generous timeout: Milvus Lite starts its server in this process, slowly on a busy machine
            self.client = MilvusClient(uri=self.address, token=token or "", timeout=CONNECT_TIMEOUT_S)
        except Exception as e:
            raise StoreError(_connect_failure(uri, self.address, e)) from e
        # a server on threads of this process (embedded, or hosted by `rushes serve`): searches skip the loopback
        servicer = (milvus_lite_speedups.embedded_servicer(self.address) if embedded
                    else server.hosted_servicer(uri) if server.is_local_db(uri) else None)
        milvus_lite_speedups.direct_reads(self.client, servicer)
        self.meta: StoreMeta | None = self._read_meta() if self.exists() else None
        self._fields_info: dict | None = None  # the collection's fields as pymilvus describes them, for upserts

    # -- schema ---------------------------------------------------------------------------------

    def exists(self) -> bool:
        return bool(self.client.has_collection(self.collection))

    def _read_meta(self) -> StoreMeta | None:
        desc = self.client.describe_collection(self.collection)
        raw = (desc.get("properties") or {}).get(META_PROPERTY)
        return StoreMeta.from_json(raw) if raw else None

    def _expected_fields(self, meta: StoreMeta) -> dict[str, tuple]:
        from pymilvus import DataType

        fields = {
            M.clip_id: (DataType.VARCHAR, None),
            F_VISUAL: (DataType.FLOAT_VECTOR, meta.visual_dim),
            F_TEXT: (DataType.FLOAT_VECTOR, meta.text_dim),
            F_CAPTION: (DataType.VARCHAR, None),
            F_HAS_CAPTION: (DataType.BOOL, None),
            F_CAPTIONER: (DataType.VARCHAR, None),
        }
        if meta.bm25:
            fields[F_BM25] = (DataType.SPARSE_FLOAT_VECTOR, None)
        for name in SCALAR_COLUMNS:
            fields[name] = (_milvus_type(schema.MANIFEST.field(name).type), None)
        return fields

    def create(self, meta: StoreMeta) -> None:
        """Create the collection; without BM25 support, create it without keyword search and say so."""
        s, index = collection_schema(meta)
        self._fields_info = None
        try:
            self.client.create_collection(self.collection, schema=s)
        except Exception as e:
            if not meta.bm25:
                raise StoreError(f"cannot create Milvus collection {self.collection} at {self.uri}: {e}") from e
            log.warning("Milvus at %s has no BM25 full-text search (%s); keyword search is off", self.uri, e)
            meta.bm25 = False
            s, index = collection_schema(meta)
            self.client.create_collection(self.collection, schema=s)
        # sync=False: the index builds as rows arrive; waiting would poll an RPC Milvus Lite lacks
        self.client.create_index(self.collection, index, sync=False)
        self.client.alter_collection_properties(self.collection, properties={META_PROPERTY: meta.to_json()})
        self.client.load_collection(self.collection)
        self.meta = meta

    def check_schema(self, meta: StoreMeta) -> None:
        """Raise StoreSchemaError when the existing collection cannot hold vectors made by `meta`'s models."""
        desc = self.client.describe_collection(self.collection)
        have = {f["name"]: (f["type"], (f.get("params") or {}).get("dim")) for f in desc["fields"]}
        stored = self.meta
        bm25 = stored.bm25 if stored else F_BM25 in have
        want = self._expected_fields(StoreMeta(**{**meta.__dict__, "bm25": bm25}))
        problems = []
        for name, (dtype, dim) in want.items():
            if name not in have:
                problems.append(f"field {name} is missing")
            elif have[name][0] != dtype or (dim is not None and int(have[name][1]) != dim):
                problems.append(f"field {name} is {have[name][0].name}{'(dim ' + str(have[name][1]) + ')' if have[name][1] else ''}"
                                f", this index needs {dtype.name}{'(dim ' + str(dim) + ')' if dim else ''}")
        for name in sorted(set(have) - set(want)):
            problems.append(f"field {name} is not one rushes writes")
        if stored is None:
            problems.append("it has no rushes metadata (it was not made by rushes)")
        else:
            for key in ("visual_model", "text_model"):
                if getattr(stored, key) != getattr(meta, key):
                    problems.append(f"its {key} is {getattr(stored, key)!r}, this run uses {getattr(meta, key)!r}")
        if problems:
            raise StoreSchemaError(
                f"Milvus collection '{self.collection}' at {self.uri} does not match this index: "
                + "; ".join(problems)
                + ". Re-run with --recreate to drop it and rebuild it from OUT/embeddings, "
                "or pick another --collection name."
            )
        meta.bm25 = bm25
        self.meta = stored or meta

    def ensure(self, meta: StoreMeta, recreate: bool = False) -> None:
        """Create the collection, or check the existing one (dropping it first with `recreate`)."""
        if self.exists() and recreate:
            self.client.drop_collection(self.collection)
            self.meta = None
        if self.exists():
            self.check_schema(meta)
            self.client.load_collection(self.collection)
        else:
            self.create(meta)

    def refresh(self) -> bool:
        """Re-read the collection's metadata (another command may have dropped or recreated it since this
        store opened); True when it changed."""
        meta = self._read_meta() if self.exists() else None
        changed = meta != self.meta
        self.meta = meta
        self._fields_info = None  # a recreated collection with the same models may still differ
        return changed

    def require(self) -> StoreMeta:
        """The collection's metadata, or a clear error when there is nothing to search."""
        if not self.exists():
            raise StoreError(
                f"Milvus at {self.uri} has no collection '{self.collection}': run `rushes index --out OUT` first"
            )
        if self.meta is None:
            raise StoreSchemaError(f"collection '{self.collection}' at {self.uri} was not made by rushes (no metadata)")
        self.client.load_collection(self.collection)
        return self.meta

    # -- rows -----------------------------------------------------------------------------------

    def upsert(self, rows: list[dict], batch: int = UPSERT_BATCH) -> int:
        """Upsert rows (store_row's dicts) by clip_id, `batch` rows per call."""
        for start in range(0, len(rows), batch):
            self._upsert_columns(rows[start : start + batch])
        return len(rows)

    def _upsert_columns(self, rows: list[dict]) -> None:
        """One upsert call, sent column by column: pymilvus packs a list of row dicts field by field and
        row by row in Python (about 0.6 ms a row in rushes' 40-field schema, most of an insert); a column
        goes into its protobuf field in one call. Same request, same rows (what `client.upsert` sends)."""
        handler = getattr(self.client, "_get_connection", None) if _columns_upsert_tested() else None
        if handler is None:
            self.client.upsert(self.collection, rows)
            return
        if self._fields_info is None:
            self._fields_info = handler().describe_collection(self.collection, timeout=CONNECT_TIMEOUT_S)
        columns = [{"name": f["name"], "type": f["type"], "values": [row.get(f["name"]) for row in rows]}
                   for f in self._fields_info["fields"] if not f.get("is_function_output")]
        handler().upsert(self.collection, columns, schema=self._fields_info, timeout=CONNECT_TIMEOUT_S)

    def flush(self) -> None:
        """Seal what was written. Milvus Lite searches unsealed rows by brute force, and builds a sealed
        segment's HNSW index in a background thread after this returns (minutes at 100k rows), searching
        it by brute force until then: `wait_for_indexes` waits for those builds (so does the exit of the
        process that holds the database; closing the client does not)."""
        self.client.flush(self.collection)

    def wait_for_indexes(self, timeout: float | None = None) -> float:
        """Wait until every sealed segment has its vector indexes; the seconds waited. Milvus Lite's
        describe_index reports 0 pending rows all along, so this asks Milvus Lite itself (or, when another
        process holds the database, reloads the collection: loading builds every missing index)."""
        import time

        if not self.uri.endswith(".db"):
            return 0.0  # a Milvus server builds indexes on its own and answers describe_index truthfully
        from indexing import milvus_lite_speedups

        start = time.monotonic()
        try:
            return milvus_lite_speedups.wait_for_index_builds(self.uri, self.collection, timeout)
        except RuntimeError as e:
            log.info("reloading %s to build its indexes: %s", self.collection, e)
            self.client.release_collection(self.collection)
            self.client.load_collection(self.collection, timeout=timeout)
            return time.monotonic() - start

    def warm(self) -> None:
        """Build what Milvus Lite builds on the first keyword search (each segment's BM25 index, ~1 s per
        100,000 clips), and what rushes' speedups make on a segment's first search (its result columns
        in one chunk), so that the first person searching does not wait for them."""
        if self.meta is None:
            return
        probe = np.zeros(self.meta.visual_dim, dtype=np.float32)
        probe[0] = 1.0
        self.client.search(self.collection, data=[probe.tolist()], anns_field=F_VISUAL, limit=1,
                           search_params={"metric_type": "COSINE", "params": {"ef": 64}}, output_fields=RESULT_FIELDS)
        if self.meta.bm25:
            self.client.search(self.collection, data=["warm"], anns_field=F_BM25, limit=1,
                               search_params={"metric_type": "BM25", "params": {}}, output_fields=RESULT_FIELDS)

    def delete(self, clip_ids: list[str]) -> None:
        if clip_ids:
            self.client.delete(self.collection, ids=list(clip_ids))

    def count(self) -> int:
        res = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def get(self, clip_ids: list[str], fields: list[str]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for start in range(0, len(clip_ids), 500):
            for r in self.client.get(self.collection, ids=clip_ids[start : start + 500], output_fields=fields):
                out[r[M.clip_id]] = r
        return out

    @contextmanager
    def _filter_errors(self, where: str | None):
        """A search that fails with a filter: tell a bad filter (FilterExpressionError) from other failures.

        The filter is checked only when the search failed, so a good filter costs nothing extra (a check
        is a full query: 0.2 s at 100k rows)."""
        try:
            yield
        except Exception:
            if where:
                self.validate_filter(where)
            raise

    def validate_filter(self, where: str | None) -> None:
        """Run the expression once; a rejected one becomes FilterExpressionError listing the usable fields."""
        if not where:
            return
        try:
            self.client.query(self.collection, filter=where, output_fields=[M.clip_id], limit=1)
        except Exception as e:
            fields = ", ".join(f"{k} ({v})" for k, v in scalar_field_types().items())
            reason = str(getattr(e, "message", None) or e).splitlines()[0]  # Milvus' own field list follows; ours is clearer
            raise FilterExpressionError(
                f"--where {where!r} is not a valid Milvus filter: {reason}.\n"
                f"Fields you can filter on: {fields}.\nExample: \"duration > 2 and aesthetic_score > 5\"; "
                f"strings in double quotes, e.g. camera_motion == \"pan_left\"; arrays with "
                f"array_contains(dominant_colors, \"red\")"
            ) from None

    def search(self, field_name: str, queries: list[Any], k: int, where: str | None,
               output_fields: list[str] | None = None) -> list[list[dict]]:
        metric = "BM25" if field_name == F_BM25 else "COSINE"
        params = {"metric_type": metric, "params": {} if metric == "BM25" else {"ef": max(64, 2 * k)}}
        data = [q.tolist() if isinstance(q, np.ndarray) else q for q in queries]
        with self._filter_errors(where):
            return self.client.search(self.collection, data=data, anns_field=field_name, limit=k, filter=where or "",
                                      search_params=params, output_fields=output_fields or RESULT_FIELDS)

    def hybrid(self, requests: list[tuple[str, Any, str]], k: int, rrf_k: int = 60,
               output_fields: list[str] | None = None) -> list[dict]:
        """Reciprocal-rank fusion of several (field, query, filter) searches, done by Milvus."""
        return self.hybrid_many([(f, [q], w) for f, q, w in requests], k, rrf_k, output_fields)[0]

    def hybrid_many(self, requests: list[tuple[str, list[Any], str]], k: int, rrf_k: int = 60,
                    output_fields: list[str] | None = None) -> list[list[dict]]:
        """`hybrid` for many queries in one Milvus call: each request is (field, queries, filter), every
        request has one query per result list, and the i-th queries of all requests are fused together."""
        from pymilvus import AnnSearchRequest, RRFRanker

        reqs = []
        for field_name, queries, where in requests:
            metric = "BM25" if field_name == F_BM25 else "COSINE"
            data = [q.tolist() if isinstance(q, np.ndarray) else q for q in queries]
            reqs.append(AnnSearchRequest(data=data, anns_field=field_name, limit=max(k, 20), expr=where or "",
                                         param={"metric_type": metric, "params": {} if metric == "BM25" else {"ef": 64}}))
        with self._filter_errors(next((w for _, _, w in requests if w), None)):
            # The fields come with the fused hits, in one call: with rushes' Milvus Lite speedups a candidate
            # converts only these columns, and a second call (get() of the final k) cost more than that
            # (at 100,000 clips 15.5 ms against 12.9 ms a hybrid search; docs/indexing.md, Benchmark).
            return [list(r) for r in self.client.hybrid_search(self.collection, reqs, RRFRanker(rrf_k), limit=k,
                                                               output_fields=output_fields or RESULT_FIELDS)]

    def close(self) -> None:
        self.client.close()


def open_store(uri: str, token: str | None, collection: str) -> ClipStore:
    return ClipStore(uri, token, collection)


def store_row(manifest_row: dict, visual: np.ndarray, text: np.ndarray | None, caption: str | None,
              captioner: str | None, text_dim: int) -> dict:
    """One collection row from a manifest row and its vectors (uncaptioned clips get a placeholder unit vector)."""
    row = {M.clip_id: manifest_row[M.clip_id], F_VISUAL: np.asarray(visual, dtype=np.float32).tolist()}
    if text is None:
        placeholder = np.zeros(text_dim, dtype=np.float32)
        placeholder[0] = 1.0  # never searched: text/keyword modes filter on has_caption
        row[F_TEXT] = placeholder.tolist()
    else:
        row[F_TEXT] = np.asarray(text, dtype=np.float32).tolist()
    row[F_CAPTION] = (caption or "")[:CAPTION_MAX_CHARS]
    row[F_HAS_CAPTION] = bool(caption)
    row[F_CAPTIONER] = captioner
    for name in SCALAR_COLUMNS:
        value = manifest_row.get(name)
        if isinstance(value, str):
            value = value[:STRING_MAX]
        row[name] = value
    return row


# The column upsert goes through pymilvus' connection handler, not its public API: only on the pymilvus
# release it was written and tested for (tests/indexing/test_store_columns.py); others take client.upsert.
COLUMN_UPSERT_PYMILVUS = "3.0."


def _columns_upsert_tested() -> bool:
    import pymilvus

    return str(getattr(pymilvus, "__version__", "")).startswith(COLUMN_UPSERT_PYMILVUS)
