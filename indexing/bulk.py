"""Bulk-loading OUT/embeddings into a Milvus server: files for Milvus' bulk import, no models needed.

`export_bulk` writes the collection's rows as Milvus bulk-import parquet files (one column per
field) plus `collection.json`, the collection metadata. `create_collection_from_export`
makes the empty collection on the server from that metadata; the files are then uploaded to the
server's object storage and imported with `pymilvus.bulk_writer.bulk_import` (docs/indexing.md has
the commands). For up to a few million clips `rushes index --milvus-uri ...` (batched upserts) is
simpler and needs no object storage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from curation.core.rundir import RunDir, atomic_write_table
from curation.core.schema import M
from curation.core.tables import kept_clips
from indexing.config import IndexConfig
from indexing.embed import TEXT, VISUAL, latest_captions, latest_vectors, text_input_hash, visual_input_hash
from indexing.models import clip_model_name, resolve_text_model
from indexing.store import ClipStore, StoreMeta, collection_schema, store_row


def collect_rows(out, cfg: IndexConfig) -> tuple[list[dict], StoreMeta]:
    """Collection rows of every kept clip embedded with `cfg`'s models (read from OUT/embeddings)."""
    run = RunDir(out)
    visual_name = clip_model_name(cfg.visual.clip_model, cfg.visual.clip_pretrained)
    _, text_name = resolve_text_model(cfg.text.text_model)
    vhash = visual_input_hash(cfg.visual)
    visual = {c: v for c, (v, h) in latest_vectors(run, VISUAL, visual_name).items() if h == vhash}
    if not visual:
        raise FileNotFoundError(f"{run.embeddings} has no visual vectors made by {visual_name}: "
                                f"run `rushes index --out {out}` with the same --clip-model first")
    captions = latest_captions(run)
    text = {c: v for c, (v, h) in latest_vectors(run, TEXT, text_name).items()
            if c in captions and h == text_input_hash(captions[c])}
    text_dim = len(next(iter(text.values()))) if text else 384
    meta = StoreMeta(visual_model=visual_name, text_model=text_name, visual_dim=len(next(iter(visual.values()))),
                     text_dim=text_dim, clip_model=cfg.visual.clip_model, clip_pretrained=cfg.visual.clip_pretrained,
                     text_model_ref=cfg.text.text_model)
    rows = [store_row(r, visual[r[M.clip_id]], text.get(r[M.clip_id]),
                      captions.get(r[M.clip_id]) if r[M.clip_id] in text else None, None, meta.text_dim)
            for r in kept_clips(run) if r[M.clip_id] in visual]
    return rows, meta


ROWS_PER_FILE = 100_000


def _arrow_type(field) -> pa.DataType:
    from pymilvus import DataType

    return {
        DataType.VARCHAR: pa.string(), DataType.BOOL: pa.bool_(), DataType.INT32: pa.int32(),
        DataType.INT64: pa.int64(), DataType.FLOAT: pa.float32(), DataType.DOUBLE: pa.float64(),
        DataType.FLOAT_VECTOR: pa.list_(pa.float32()), DataType.ARRAY: pa.list_(pa.string()),
    }[field.dtype]


def export_bulk(out, cfg: IndexConfig, dest: Path) -> tuple[list[list[str]], StoreMeta]:
    """Write bulk-import parquet files and collection.json under `dest`; returns (file batches, metadata).

    One column per collection field, as Milvus' parquet import reads them (vectors as lists of float32);
    the BM25 sparse vector is left out: the server computes it from the caption.
    """
    rows, meta = collect_rows(out, cfg)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    schema, _ = collection_schema(meta)
    fields = [f for f in schema.fields if not getattr(f, "is_function_output", False)]
    arrow_schema = pa.schema([(f.name, _arrow_type(f)) for f in fields])
    files: list[list[str]] = []
    for start in range(0, len(rows), ROWS_PER_FILE):
        chunk = rows[start : start + ROWS_PER_FILE]
        table = pa.table({f.name: [r.get(f.name) for r in chunk] for f in fields}, schema=arrow_schema)
        path = dest / f"rows-{start // ROWS_PER_FILE:05d}.parquet"
        atomic_write_table(table, path)
        files.append([str(path)])
    (dest / "collection.json").write_text(json.dumps({"meta": json.loads(meta.to_json()), "rows": len(rows),
                                                      "files": files}, indent=2))
    return files, meta


def create_collection_from_export(export_dir: Path, uri: str, token: str | None, collection: str) -> ClipStore:
    """The empty collection (schema, indexes, rushes metadata) on a server, ready for bulk import."""
    meta = StoreMeta(**json.loads((Path(export_dir) / "collection.json").read_text())["meta"])
    store = ClipStore(uri, token, collection)
    store.ensure(meta)
    return store
