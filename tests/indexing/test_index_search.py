"""Index a generated run into Milvus Lite (for real) and search it every way, through the CLI too.

One run directory and one Milvus Lite database serve the whole module: indexing happens once in the
`indexed` fixture and the tests then read (or, at the end, change) it.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from indexing_testkit import SHOTS, UNCAPTIONED, clip_id, index_config
from typer.testing import CliRunner

from curation.core import schema
from curation.core.rundir import RunDir, atomic_write_table, now_utc, rows_to_table
from curation.core.schema import CAP, EMB, M
from curation.core.tables import read_clips
from indexing.embed import read_embeddings
from indexing.pipeline import index_run
from indexing.search import Searcher, SearchError
from indexing.store import ClipStore, FilterExpressionError, StoreMeta, StoreSchemaError, default_uri
from workflows.cli import app

runner = CliRunner()
KEPT = len(SHOTS) + 2  # five shots and two near-duplicates


@pytest.fixture(scope="module")
def indexed(run_template, tmp_path_factory):
    out = tmp_path_factory.mktemp("indexed") / "run"
    shutil.copytree(run_template, out)
    first = index_run(out, index_config())
    second = index_run(out, index_config())
    return out, first, second


@pytest.fixture(scope="module")
def searcher(indexed):
    out, _, _ = indexed
    store = ClipStore(default_uri(out), None, "rushes_clips")
    return Searcher(store, device="cpu")


def test_index_embeds_every_kept_clip_once(indexed):
    out, first, second = indexed
    assert first.counts["visual_embedded"] == KEPT
    assert first.counts["captions_embedded"] == KEPT - 1  # one clip has no caption
    assert first.counts["uncaptioned"] == 1
    assert first.counts["collection_rows"] == KEPT
    # the second run reuses every vector and leaves one row per clip
    assert second.counts["visual_embedded"] == 0 and second.counts["captions_embedded"] == 0
    assert second.counts["visual_reused"] == KEPT
    assert second.counts["collection_rows"] == KEPT
    emb = read_embeddings(RunDir(out))
    assert emb.num_rows == KEPT + KEPT - 1
    assert all("untrained" in m for m, k in zip(emb[EMB.model].to_pylist(), emb[EMB.kind].to_pylist(), strict=True)
               if k == "visual")
    assert any("all-MiniLM-L6-v2" in m for m in emb[EMB.model].to_pylist())
    vec = np.asarray(emb[EMB.vector][0].as_py())
    assert abs(np.linalg.norm(vec) - 1) < 1e-4
    assert "untrained" in " ".join(first.notes)


def test_aesthetic_scores_fill_the_clip_view(indexed):
    out, _, _ = indexed
    rows = read_clips(RunDir(out)).to_pylist()
    kept = [r for r in rows if r[M.status] == schema.STATUS_KEPT]
    assert all(r[M.aesthetic_score] is not None for r in kept)
    assert all("untrained" in r[M.aesthetic_model] for r in kept)
    assert len({round(r[M.aesthetic_score], 6) for r in kept}) > 1  # a function of the clip, not a constant
    filtered = [r for r in rows if r[M.status] == schema.STATUS_FILTERED]
    assert filtered and all(r[M.aesthetic_score] is None for r in filtered)


def test_text_search_finds_the_described_clip(searcher):
    hits = searcher.search("a yellow square moving up on a green background", mode="text", k=3)
    assert hits[0].clip_id == clip_id(1)
    assert hits[0].caption.startswith("a yellow square")
    assert hits[0].clip_path == f"clips/{clip_id(1)}.mp4"
    assert hits[0].start_time == 10.0 and hits[0].end_time == 11.5
    assert hits[0].score > hits[1].score
    # the uncaptioned clip never answers a caption search
    assert clip_id(UNCAPTIONED) not in {h.clip_id for h in searcher.search("pink square", mode="text", k=10)}


def test_keyword_search_is_bm25_over_captions(searcher):
    hits = searcher.search("triangle", mode="keyword", k=5)
    assert [h.clip_id for h in hits] == [clip_id(2)]  # the only caption with the word
    assert hits[0].score > 0
    assert searcher.search("zeppelin", mode="keyword", k=5) == []


def test_visual_search_uses_clip_text_embeddings(searcher):
    hits = searcher.search("a red circle", mode="visual", k=KEPT)
    assert len(hits) == KEPT  # every clip has a visual vector, captioned or not
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert clip_id(UNCAPTIONED) in {h.clip_id for h in hits}
    assert any("untrained" in n for n in searcher.notes)


def test_hybrid_fuses_the_modes(searcher):
    hits = searcher.search("a white triangle moving left", mode="hybrid", k=4)
    assert hits[0].clip_id == clip_id(2)  # first in text and keyword ranks
    assert len(hits) == 4
    assert all(0 < h.score < 0.1 for h in hits)  # reciprocal-rank scores, 1/(60+rank) summed


def test_filters_restrict_results(searcher):
    hits = searcher.search("a shape moving", mode="visual", k=20, where="duration > 1.2")
    assert hits and all(h.duration > 1.2 for h in hits)
    assert {h.clip_id for h in hits} == {clip_id(1), clip_id(3)}
    colour = searcher.search("a shape", mode="visual", k=20, where='array_contains(dominant_colors, "purple")')
    assert [h.clip_id for h in colour] == [clip_id(2)]
    assert searcher.search("a shape", mode="text", k=20, where='source == "reel1.mp4" and width >= 96')


def test_bad_filter_names_the_usable_fields(searcher):
    with pytest.raises(FilterExpressionError, match=r"(?s)no_such_field.*Fields you can filter on: .*duration \(DOUBLE\)"):
        searcher.search("a shape", mode="visual", where="no_such_field > 3")
    with pytest.raises(FilterExpressionError, match="aesthetic_score"):
        searcher.search("a shape", mode="hybrid", where="duration >>> 2")


def test_bad_queries_are_clear_errors(searcher):
    with pytest.raises(SearchError, match="limit is 500"):
        searcher.search("x" * 501)
    with pytest.raises(SearchError, match="unknown"):
        searcher.search("x", mode="telepathy")
    with pytest.raises(SearchError, match="not in the index"):
        searcher.like("0" * 20)
    for bad in ("no-such-clip", "x'", 'abc" or clip_id != "'):  # never reaches a filter expression
        with pytest.raises(SearchError, match="is not a clip id"):
            searcher.like(bad)


def test_like_finds_the_near_duplicates_first(searcher):
    hits = searcher.like(clip_id(0), k=3)
    assert clip_id(0) not in {h.clip_id for h in hits}
    assert {h.clip_id for h in hits[:2]} == {clip_id(5), clip_id(6)}
    assert hits[0].score > 0.99


def test_cli_search_json_and_text(indexed):
    out, _, _ = indexed
    res = runner.invoke(app, ["search", "a yellow square moving up", "--out", str(out), "--mode", "text",
                              "--k", "2", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["results"][0]["clip_id"] == clip_id(1)
    assert set(data["results"][0]) >= {"clip_id", "score", "caption", "source", "start_time", "end_time", "clip_path"}
    assert any("untrained" in n for n in data["notes"])
    res = runner.invoke(app, ["search", "--like", clip_id(0), "--out", str(out), "--k", "2"])
    assert res.exit_code == 0, res.output
    assert clip_id(5) in res.stdout and clip_id(6) in res.stdout
    res = runner.invoke(app, ["search", "x", "--out", str(out), "--where", "nope == 1"])
    assert res.exit_code == 2 and "Fields you can filter on" in res.stderr
    res = runner.invoke(app, ["search", "x", "--out", str(out / "missing")])
    assert res.exit_code == 2 and "rushes index" in res.stderr


def test_schema_mismatch_is_a_clear_error(indexed):
    out, _, _ = indexed
    store = ClipStore(default_uri(out), None, "rushes_clips")
    wrong = StoreMeta(visual_model=store.meta.visual_model, text_model=store.meta.text_model,
                      visual_dim=512, text_dim=store.meta.text_dim)
    with pytest.raises(StoreSchemaError, match=r"visual_vector.*dim 64.*dim 512.*--recreate"):
        store.ensure(wrong)
    other_model = StoreMeta(visual_model="open_clip:ViT-B-32/laion2b_s34b_b79k", text_model=store.meta.text_model,
                            visual_dim=64, text_dim=store.meta.text_dim)
    with pytest.raises(StoreSchemaError, match="visual_model"):
        store.ensure(other_model)


def test_new_caption_reembeds_only_that_clip_and_recreate_rebuilds(indexed):
    out, _, _ = indexed
    run = RunDir(out)
    newer = [{CAP.clip_id: clip_id(UNCAPTIONED), CAP.caption_dense: "a pink square sliding to the right",
              CAP.captioner: "test-truth-v2", CAP.created_at: now_utc()}]
    atomic_write_table(rows_to_table(newer, schema.CAPTIONS), run.captions / "part-1.parquet")
    summary = index_run(out, index_config(recreate=True))
    assert summary.counts["visual_embedded"] == 0 and summary.counts["captions_embedded"] == 1
    assert summary.counts["collection_rows"] == KEPT  # rebuilt from OUT/embeddings
    searcher = Searcher(ClipStore(default_uri(out), None, "rushes_clips"))
    assert searcher.search("sliding", mode="keyword", k=3)[0].clip_id == clip_id(UNCAPTIONED)


def test_min_aesthetic_filters_and_removes_from_index(indexed):
    out, _, _ = indexed
    curated = {p.name: p.read_bytes() for p in (out / "manifest").glob("*.parquet")}
    scores = {r[M.clip_id]: r[M.aesthetic_score] for r in read_clips(RunDir(out)).to_pylist()
              if r[M.status] == schema.STATUS_KEPT}
    cut = sorted(scores.values())[2]  # the two lowest go
    cfg = index_config()
    cfg.visual.min_aesthetic = cut
    summary = index_run(out, cfg)
    assert summary.counts["aesthetic_filtered"] == 2
    rows = {r[M.clip_id]: r for r in read_clips(RunDir(out)).to_pylist()}
    low = [c for c, s in scores.items() if s < cut]
    assert all(rows[c][M.status] == "filtered" and "low_aesthetic" in rows[c][M.filter_reasons] for c in low)
    assert summary.counts["collection_rows"] == KEPT - 2
    # scores and the filter are rows of OUT/scores/ and OUT/decisions/: the manifest parts are untouched
    assert {p.name: p.read_bytes() for p in (out / "manifest").glob("*.parquet")} == curated
    assert index_run(out, cfg).counts["aesthetic_scored"] == 0  # a re-run appends nothing


def test_bulk_export_writes_import_files_and_metadata(indexed, tmp_path):
    import pyarrow.parquet as pq

    from indexing.bulk import create_collection_from_export

    out, _, _ = indexed
    res = runner.invoke(app, ["index", "--out", str(out), "--clip-model", "tiny-random", "--frames", "3",
                              "--export-bulk", str(tmp_path / "bulk")])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "bulk" / "collection.json").read_text())
    files = [f for batch in meta["files"] for f in batch]
    table = pq.read_table(files[0]) if len(files) == 1 else None
    assert table is not None and table.num_rows == meta["rows"] > 0
    assert {"clip_id", "visual_vector", "caption_vector", "caption", "duration"} <= set(table.column_names)
    assert "caption_bm25" not in table.column_names  # the server computes BM25 from the caption
    # the empty collection for the import, made from the exported metadata
    store = create_collection_from_export(tmp_path / "bulk", default_uri(out), None, "bulk_target")
    assert store.count() == 0 and store.meta.visual_dim == 64
