"""Append-only tables: later scores and decisions join the manifest in one view; old run directories read."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from curation.core import schema
from curation.core.rundir import RunDir, atomic_write_table, config_hash, now_utc, rows_to_table
from curation.core.tables import add_decisions, add_scores, kept_clips, read_clips

M = schema.M


def curated(run: RunDir, n: int = 3) -> dict[str, bytes]:
    rows = [{M.clip_id: f"c{i}", M.source: "a.mp4", M.status: schema.STATUS_KEPT,
             M.filter_reasons: [], M.start_frame: 10 * i} for i in range(n)]
    rows[-1].update({M.status: schema.STATUS_FILTERED, M.filter_reasons: ["too_dark"]})
    atomic_write_table(rows_to_table(rows, schema.MANIFEST), run.manifest / "a-h1.parquet")
    return {p.name: p.read_bytes() for p in run.manifest.iterdir()}


def test_scores_and_decisions_join_the_manifest_without_touching_it(tmp_path):
    run = RunDir(tmp_path)
    before = curated(run)
    settings = {"threshold": 0.9}
    assert add_scores(run, "aesthetic", {"c0": (5.5, "head-a"), "c1": (4.0, "head-a")}, settings) == 2
    assert add_scores(run, "aesthetic", {"c0": (5.5, "head-a"), "c1": (4.0, "head-a")}, settings) == 0  # same: no row
    assert add_scores(run, "aesthetic", {"c1": (6.0, "head-b")}, settings) == 1  # the newest wins
    assert add_decisions(run, "dedup", {"c1": "near_duplicate:c0", "c2": "near_duplicate:c0"}, settings) == 2
    assert add_decisions(run, "dedup", {"c1": "near_duplicate:c0"}, settings) == 0  # decided already
    clips = {r[M.clip_id]: r for r in read_clips(run).to_pylist()}
    assert (clips["c0"][M.aesthetic_score], clips["c0"][M.aesthetic_model]) == (5.5, "head-a")
    assert (clips["c1"][M.aesthetic_score], clips["c1"][M.aesthetic_model]) == (6.0, "head-b")
    assert clips["c1"][M.status] == schema.STATUS_FILTERED and clips["c1"][M.filter_reasons] == ["near_duplicate:c0"]
    assert clips["c2"][M.filter_reasons] == ["too_dark", "near_duplicate:c0"]  # curation's reasons first
    assert [r[M.clip_id] for r in kept_clips(run)] == ["c0"]
    assert {p.name: p.read_bytes() for p in run.manifest.iterdir()} == before
    decisions = pq.read_table(next(run.decisions.glob("dedup-*.parquet")))
    assert set(decisions[schema.DEC.config_hash].to_pylist()) == {config_hash(settings)}  # what decided them
    assert decisions[schema.DEC.stage].to_pylist() == ["dedup", "dedup"]


def test_a_run_directory_of_the_previous_version_reads(tmp_path):
    """Earlier versions rewrote manifest parts in place (aesthetic scores, later filters) and had fewer
    columns: such a run reads as it was, and new decisions add to it."""
    run = RunDir(tmp_path)
    rows = [{M.clip_id: "old0", M.status: "kept", M.filter_reasons: [], M.aesthetic_score: 5.0,
             M.aesthetic_model: "head-a"},
            {M.clip_id: "old1", M.status: "filtered", M.filter_reasons: ["near_duplicate:old0"],
             M.aesthetic_score: 4.0, M.aesthetic_model: "head-a"}]
    table = rows_to_table(rows, schema.MANIFEST).drop_columns([M.text_detector, M.transition_in])  # older columns
    run.manifest.mkdir(parents=True)
    pq.write_table(table, run.manifest / "old-h0.parquet")
    clips = {r[M.clip_id]: r for r in read_clips(run).to_pylist()}
    assert clips["old0"][M.aesthetic_score] == 5.0 and clips["old0"][M.text_detector] is None
    assert clips["old1"][M.status] == "filtered" and clips["old1"][M.filter_reasons] == ["near_duplicate:old0"]
    assert add_scores(run, "aesthetic", {"old0": (5.0, "head-a")}, {}) == 0  # the in-place score still counts
    add_decisions(run, "aesthetic", {"old0": "low_aesthetic"}, {})
    assert kept_clips(run) == []
    assert read_clips(run).schema == pa.schema(schema.MANIFEST)


def test_re_curating_a_source_starts_its_clips_afresh(tmp_path):
    """Decisions and scores made before a clip's manifest row was (re)written no longer apply to it."""
    run = RunDir(tmp_path)
    curated(run)
    add_decisions(run, "dedup", {"c0": "near_duplicate:c1"}, {})
    add_scores(run, "aesthetic", {"c0": (5.0, "head-a")}, {})
    assert read_clips(run).to_pylist()[0][M.status] == schema.STATUS_FILTERED
    rows = [{M.clip_id: "c0", M.status: schema.STATUS_KEPT, M.filter_reasons: [],
             M.created_at: now_utc()}]  # curation ran again, after those decisions
    atomic_write_table(rows_to_table(rows, schema.MANIFEST), run.manifest / "a-h1.parquet")
    again = read_clips(run).to_pylist()[0]
    assert (again[M.status], again[M.filter_reasons], again[M.aesthetic_score]) == (schema.STATUS_KEPT, [], None)
    assert add_decisions(run, "dedup", {"c0": "near_duplicate:c1"}, {}) == 1  # decided anew, and it counts
    assert read_clips(run).to_pylist()[0][M.filter_reasons] == ["near_duplicate:c1"]
