"""ClipStore.upsert sends rows column by column; Milvus then holds exactly what a row-by-row upsert gives."""

from __future__ import annotations

import numpy as np

from curation.core.schema import M
from indexing.store import F_BM25, ClipStore, StoreMeta, store_row


def _rows(rng: np.random.Generator, n: int, version: int) -> list[dict]:
    rows = []
    for i in range(n):
        manifest = {M.clip_id: f"{i:020x}", M.source: f"reel{i % 3}.mp4", M.duration: float(1 + i % 4) + version,
                    M.width: 640, M.height: None if i % 5 == 0 else 360, M.status: "kept",
                    M.aesthetic_score: None if i % 4 == 0 else float(rng.uniform(1, 9)),
                    M.dominant_colors: [["red"], [], None, ["blue", "green"]][i % 4],
                    M.camera_motion: "pan_left" if i % 2 else None}
        captioned = i % 6 != 0
        rows.append(store_row(manifest, rng.standard_normal(8).astype(np.float32),
                              rng.standard_normal(4).astype(np.float32) if captioned else None,
                              f"clip {i} version {version} red dog" if captioned else None,
                              "test" if captioned else None, 4))
    return rows


def _contents(store: ClipStore, collection: str) -> list[dict]:
    rows = store.client.query(collection, filter="", output_fields=["*"], limit=1000)
    for row in rows:
        row.pop(F_BM25, None)  # made by Milvus from the caption (compared through keyword search below)
    return sorted(rows, key=lambda r: r[M.clip_id])


def test_column_upsert_equals_row_upsert(tmp_path):
    from indexing.store import _columns_upsert_tested

    assert _columns_upsert_tested(), "the installed pymilvus is not the one the column upsert was written for"
    store = ClipStore(str(tmp_path / "m.db"), None, "by_columns")
    meta = StoreMeta(visual_model="test", text_model="test", visual_dim=8, text_dim=4)
    store.ensure(meta)
    by_rows = ClipStore(str(tmp_path / "m.db"), None, "by_rows")
    by_rows.ensure(meta)
    rng = np.random.default_rng(0)
    first, second = _rows(rng, 40, 0), _rows(rng, 25, 1)  # the second upserts new versions of 25 rows
    assert store.upsert(first, batch=16) == 40 and store.upsert(second, batch=7) == 25
    for rows in (first, second):
        by_rows.client.upsert("by_rows", rows)
    columns, rows = _contents(store, "by_columns"), _contents(by_rows, "by_rows")
    assert len(columns) == 40 and columns == rows
    assert {r[M.duration] for r in columns if int(r[M.clip_id], 16) < 25} <= {2.0, 3.0, 4.0, 5.0}  # second version
    keyword = [[(h[M.clip_id], h["distance"]) for h in s.search(F_BM25, ["version dog"], 10, None, [M.clip_id])[0]]
               for s in (store, by_rows)]
    assert keyword[0] and keyword[0] == keyword[1]
    store.close()
