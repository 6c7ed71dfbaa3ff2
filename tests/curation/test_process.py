"""analyze_source: the rows workflows/ writes, their ids, and how bad inputs fail."""

import shutil

import pyarrow as pa
import pytest

from curation.config import CurateConfig
from curation.core import schema
from curation.core.rundir import config_hash, rows_to_table
from curation.core.stage import PermanentError
from curation.process import analyze_source

M = schema.M
WORKFLOW_SETS = {M.clip_path, M.thumb_path, M.created_at}


def test_rows_fill_every_manifest_column_but_the_workflows(reel):
    _path, truth, rows = reel
    for row in rows:
        assert set(row) == set(schema.MANIFEST.names) - WORKFLOW_SETS
        assert row[M.end_frame] > row[M.start_frame]
        assert row[M.duration] == pytest.approx(row[M.end_time] - row[M.start_time])
        assert row[M.config_hash] == config_hash(CurateConfig())
        assert (
            row[M.source] == "reel.mp4" and row[M.fps] == 24 and (row[M.width], row[M.height]) == (256, 192)
        )
    assert [r[M.clip_index] for r in rows] == list(range(len(rows)))
    assert len({r[M.clip_id] for r in rows}) == len(rows)
    table = rows_to_table(rows, schema.MANIFEST)  # the rows fit the schema as they are
    assert isinstance(table, pa.Table) and table.num_rows == len(rows)


def test_truth_segments_get_their_filter_outcomes(reel):
    _path, truth, rows = reel
    outcome = {}
    for seg in truth.segments:
        row = max(rows, key=lambda r: min(r[M.end_frame], seg.end) - max(r[M.start_frame], seg.start))
        outcome[seg.caption] = row[M.filter_reasons]
    assert "too_dark" in outcome["a black screen"]
    assert outcome["a still white square on a green background"] == ["static"]
    assert outcome[
        'a green circle moving left on a yellow background, with the text "BREAKING NEWS" burnt in'
    ] == ["text_overlay"]
    assert outcome["a red circle moving right on a blue background"] == []
    assert outcome["a still yellow square on a green background, the camera panning right"] == []
    kept = [r for r in rows if r[M.status] == schema.STATUS_KEPT]
    assert all(r[M.filter_reasons] == [] for r in kept) and len(kept) == 7


def test_clip_ids_survive_a_rename(reel, tmp_path):
    path, _truth, rows = reel
    moved = tmp_path / "elsewhere" / "renamed.mp4"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    cfg = CurateConfig()
    cfg.analysis.text_detector = "none"  # ids do not depend on scores; keep this quick
    again = analyze_source("renamed.mp4", moved, cfg)
    assert [r[M.clip_id] for r in again] == [r[M.clip_id] for r in rows]


@pytest.mark.parametrize("kind", ["zero_bytes", "text", "random_bytes", "audio_only", "truncated"])
def test_bad_inputs_raise_permanent_errors(broken_files, kind):
    with pytest.raises(PermanentError, match=broken_files[kind].name):
        analyze_source(str(broken_files[kind]), broken_files[kind], CurateConfig())


def test_opencv_doc_clips_give_sensible_outcomes(opencv_clip):
    cfg = CurateConfig()
    for name in ("Megamind.avi", "Megamind_bugy.avi", "vtest.avi", "tree.avi"):
        rows = analyze_source(name, opencv_clip(name), cfg)
        assert rows, name
        kept = [r for r in rows if r[M.status] == schema.STATUS_KEPT]
        # real, watchable footage: most of it is kept, none of it is called dark, blurred or text
        assert len(kept) >= len(rows) / 2, (name, [r[M.filter_reasons] for r in rows])
        for r in rows:
            assert not {"too_dark", "blurred", "text_overlay", "low_resolution"} & set(r[M.filter_reasons]), (
                name
            )
