"""Near-duplicate clips: found through the index, the best of each group kept.

Each clip asks Milvus for its nearest neighbours (an ANN search per clip, batched; never all pairs).
Pairs at or above the cosine threshold are joined into groups (transitively: if A~B and B~C, all three
are one group). Each group keeps one clip, the best by aesthetic score, then duration, then
resolution; the others are filtered with reason `near_duplicate:<kept clip_id>`: rows of
OUT/decisions/ (stage "dedup"), so the manifest stays as curation wrote it.
"""

from __future__ import annotations

import numpy as np

from curation.core import schema
from curation.core.models import is_untrained
from curation.core.rundir import RunDir
from curation.core.schema import M
from curation.core.tables import add_decisions, read_clips
from indexing.store import F_VISUAL, ClipStore

QUERY_BATCH = 64
DUPLICATE_REASON = "near_duplicate"
DEDUP = "dedup"  # the deciding stage in OUT/decisions/


def find_duplicate_groups(store: ClipStore, vectors: dict[str, np.ndarray], threshold: float,
                          neighbours: int) -> list[list[str]]:
    """Groups (lists of clip ids, sorted) of clips whose visual vectors are at least `threshold` similar."""
    parent: dict[str, str] = {cid: cid for cid in vectors}

    def root(cid: str) -> str:
        while parent[cid] != cid:
            parent[cid] = parent[parent[cid]]
            cid = parent[cid]
        return cid

    ids = sorted(vectors)
    where = f'{M.status} == "{schema.STATUS_KEPT}"'
    for start in range(0, len(ids), QUERY_BATCH):
        chunk = ids[start : start + QUERY_BATCH]
        results = store.search(F_VISUAL, [vectors[c] for c in chunk], neighbours + 1, where, [M.clip_id])
        for query_id, hits in zip(chunk, results, strict=True):
            for hit in hits:
                other = hit[M.clip_id] if M.clip_id in hit else hit["id"]
                if other != query_id and other in parent and float(hit["distance"]) >= threshold:
                    parent[root(other)] = root(query_id)
    groups: dict[str, list[str]] = {}
    for cid in ids:
        groups.setdefault(root(cid), []).append(cid)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def keeper_rank(row: dict) -> tuple:
    """Higher is better: aesthetic score, then duration, then pixel count; clip_id breaks ties stably.

    A score from an untrained placeholder head is noise, so it does not count.
    """
    aesthetic = row.get(M.aesthetic_score)
    if is_untrained(row.get(M.aesthetic_model)):
        aesthetic = None
    return (
        float("-inf") if aesthetic is None else float(aesthetic),
        float(row.get(M.duration) or 0.0),
        int(row.get(M.width) or 0) * int(row.get(M.height) or 0),
        # a fixed, arbitrary winner among exact ties: the smallest id
        tuple(-ord(ch) for ch in row[M.clip_id]),
    )


def apply_duplicates(run: RunDir, groups: list[list[str]], settings=None) -> dict[str, str]:
    """Filter all but the best clip of each group (decisions of stage "dedup"); returns {dropped: kept}."""
    rows = {r[M.clip_id]: r for r in read_clips(run).to_pylist()}
    dropped: dict[str, str] = {}
    for group in groups:
        members = [rows[c] for c in group if c in rows]
        if len(members) < 2:
            continue
        keeper = max(members, key=keeper_rank)[M.clip_id]
        for row in members:
            if row[M.clip_id] != keeper:
                dropped[row[M.clip_id]] = keeper
    add_decisions(run, DEDUP, {cid: f"{DUPLICATE_REASON}:{keeper}" for cid, keeper in dropped.items()}, settings)
    return dropped
