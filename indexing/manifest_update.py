"""Changing manifest rows in place: aesthetic scores, and clips filtered by aesthetic or as duplicates.

The manifest is a directory of parquet parts written by curation. A part that holds a changed row is
rewritten whole to a temporary file and renamed over the old one, so a killed run leaves either the
old part or the new one, never half of each.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.core import schema
from curation.core.rundir import RunDir, atomic_write_table, read_manifest
from curation.core.schema import M


def kept_rows(run: RunDir) -> list[dict]:
    return [r for r in read_manifest(run).to_pylist() if r[M.status] == schema.STATUS_KEPT]


def update_manifest(run: RunDir, changes: dict[str, dict]) -> int:
    """Apply column values per clip_id (`{"filter_reasons_add": [...]}` appends reasons); returns rows changed."""
    if not changes:
        return 0
    parts = sorted(p for p in Path(run.manifest).glob("*.parquet") if not p.name.startswith("."))
    changed = 0
    for part in parts:
        table = pq.read_table(part)
        rows = table.to_pylist()
        touched = False
        for row in rows:
            change = changes.get(row[M.clip_id])
            if not change:
                continue
            for key, value in change.items():
                if key == "filter_reasons_add":
                    reasons = list(row.get(M.filter_reasons) or [])
                    row[M.filter_reasons] = reasons + [r for r in value if r not in reasons]
                elif row.get(key) != value:
                    row[key] = value
            touched = True
            changed += 1
        if touched:
            atomic_write_table(pa.Table.from_pylist(rows, schema=table.schema), part)
    return changed
