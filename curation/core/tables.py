"""Rules over the run's tables, each written once: "the clips as decided so far", "the newest caption".

Tables are append-only. Curation writes the manifest; later stages add rows to their own tables
(OUT/scores/, OUT/decisions/, OUT/captions/). What a clip *is* now is the manifest row with every
later row applied, and only `read_clips` applies them:

- a later score (newest per clip and score) fills its manifest columns (`schema.LATER_SCORES`);
- a decision filters the clip, and its reason joins the clip's `filter_reasons` (in the order made);
- a clip file written later (`rushes extract` on a clip-free run) fills `clip_path` and `thumb_path`.

Run directories of earlier versions, whose manifest parts were rewritten in place with aesthetic
scores and later filters, read the same: their manifest rows already hold those values.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curation.core import schema
from curation.core.rundir import RunDir, append_part, config_hash, now_utc, read_manifest, read_table
from curation.core.schema import CAP, CF, DEC, SC, M


def as_run(run: RunDir | Path | str) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir(run)


def read_clips(run: RunDir | Path | str) -> pa.Table:
    """Every detected clip (manifest columns) with later scores, decisions and clip files applied.

    Only rows made after the clip's manifest row count: re-curating a source (new filter settings)
    starts its clips afresh, as the stages after curation will see them again."""
    run = as_run(run)
    manifest = read_manifest(run)
    scores = read_table(run.scores, schema.SCORES).sort_by([(SC.created_at, "ascending")])
    decisions = read_table(run.decisions, schema.DECISIONS).sort_by([(DEC.created_at, "ascending")])
    files = read_table(run.clip_files, schema.CLIP_FILES).sort_by([(CF.created_at, "ascending")])
    if scores.num_rows == 0 and decisions.num_rows == 0 and files.num_rows == 0:
        return manifest
    later_files: dict[str, list[tuple]] = {}
    for clip_id, *rest in zip(*(files[c].to_pylist() for c in (CF.clip_id, CF.created_at, CF.clip_path, CF.thumb_path)),
                              strict=True):
        later_files.setdefault(clip_id, []).append(tuple(rest))
    later_scores: dict[str, list[tuple]] = {}
    for clip_id, *rest in zip(*(scores[c].to_pylist() for c in (SC.clip_id, SC.created_at, SC.score, SC.value, SC.model)),
                              strict=True):
        later_scores.setdefault(clip_id, []).append(tuple(rest))
    later_reasons: dict[str, list[tuple]] = {}
    for clip_id, *rest in zip(*(decisions[c].to_pylist() for c in (DEC.clip_id, DEC.created_at, DEC.reason)),
                              strict=True):
        later_reasons.setdefault(clip_id, []).append(tuple(rest))
    rows = manifest.to_pylist()
    for row in rows:
        curated_at = row[M.created_at]
        for created, name, value, model in later_scores.get(row[M.clip_id], ()):  # oldest first: the newest wins
            if curated_at is None or created >= curated_at:
                value_column, model_column = schema.LATER_SCORES[name]
                row[value_column], row[model_column] = value, model
        for created, clip_path, thumb_path in later_files.get(row[M.clip_id], ()):  # the newest file wins
            if curated_at is None or created >= curated_at:
                row[M.clip_path] = clip_path
                row[M.thumb_path] = thumb_path or row[M.thumb_path]
        reasons = [reason for created, reason in later_reasons.get(row[M.clip_id], ())
                   if curated_at is None or created >= curated_at]
        if reasons:
            row[M.status] = schema.STATUS_FILTERED
            row[M.filter_reasons] = list(dict.fromkeys(list(row[M.filter_reasons] or []) + reasons))
    return pa.Table.from_pylist(rows, schema=schema.MANIFEST)


def kept_clips(run: RunDir | Path | str) -> list[dict]:
    """The clips still kept after every decision so far: what captioning, indexing and sharding read."""
    return [r for r in read_clips(run).to_pylist() if r[M.status] == schema.STATUS_KEPT]


def add_scores(run: RunDir, name: str, values: dict[str, tuple[float, str]], settings) -> int:
    """Append the score `name` ({clip_id: (value, model)}) for clips whose current value differs; returns how many."""
    if name not in schema.LATER_SCORES:
        raise KeyError(f"score {name!r} has no columns in schema.LATER_SCORES; add it there")
    value_column, model_column = schema.LATER_SCORES[name]
    current = {r[M.clip_id]: (r[value_column], r[model_column]) for r in read_clips(run).to_pylist()}
    chash, created = config_hash(settings), now_utc()
    rows = []
    for clip_id, (value, model) in sorted(values.items()):
        old_value, old_model = current.get(clip_id, (None, None))
        if old_model == model and old_value is not None and abs(old_value - float(value)) <= 1e-4:
            continue
        rows.append({SC.clip_id: clip_id, SC.score: name, SC.value: float(value), SC.model: model,
                     SC.config_hash: chash, SC.created_at: created})
    append_part(run.scores, rows, schema.SCORES, name)
    return len(rows)


def add_decisions(run: RunDir, stage: str, reasons: dict[str, str], settings) -> int:
    """Filter clips after curation ({clip_id: reason}); a clip already filtered for that reason is skipped."""
    done = {(r[M.clip_id], reason) for r in read_clips(run).to_pylist() for reason in r[M.filter_reasons] or ()}
    chash, created = config_hash(settings), now_utc()
    rows = [{DEC.clip_id: clip_id, DEC.stage: stage, DEC.reason: reason, DEC.config_hash: chash, DEC.created_at: created}
            for clip_id, reason in sorted(reasons.items()) if (clip_id, reason) not in done]
    append_part(run.decisions, rows, schema.DECISIONS, stage)
    return len(rows)


def add_clip_files(run: RunDir, files: dict[str, tuple[str, str | None]], settings) -> int:
    """Record clip files written after curation ({clip_id: (clip_path, thumb_path)}, relative to OUT)."""
    chash, created = config_hash(settings), now_utc()
    rows = [{CF.clip_id: clip_id, CF.clip_path: clip_path, CF.thumb_path: thumb_path, CF.config_hash: chash,
             CF.created_at: created} for clip_id, (clip_path, thumb_path) in sorted(files.items())]
    append_part(run.clip_files, rows, schema.CLIP_FILES, "extract")
    return len(rows)


def read_captions(run: RunDir | Path | str) -> pa.Table:
    return read_table(as_run(run).captions, schema.CAPTIONS)


def latest_captions(run: RunDir | Path | str, captioner: str | None = None) -> pa.Table:
    """The newest caption per clip that passed its checks (of `captioner` only, when given).

    The one rule every consumer (indexing, shards, the report) reads captions by."""
    table = read_captions(run)
    table = table.filter(pc.is_null(table[CAP.error]))
    if captioner is not None:
        table = table.filter(pc.equal(table[CAP.captioner], captioner))
    if table.num_rows == 0:
        return table
    table = table.sort_by([(CAP.clip_id, "ascending"), (CAP.created_at, "descending")])
    ids = table[CAP.clip_id].to_pylist()
    first = [i for i, cid in enumerate(ids) if i == 0 or ids[i - 1] != cid]
    return table.take(first)
