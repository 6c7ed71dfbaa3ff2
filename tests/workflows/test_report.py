"""The report and the CLI's error paths, from hand-made tables: no Ray, no analysis, fast."""

import base64
import re

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.config import CurateConfig
from curation.core import schema
from curation.core.rundir import (
    RunDir,
    append_part,
    atomic_write_bytes,
    atomic_write_table,
    now_utc,
    rows_to_table,
)
from curation.core.tables import add_decisions
from curation.core.video import count_frames
from curation.pipeline import fold_quarantine
from workflows.cli import app
from workflows.generate import generate_footage
from workflows.report import funnel, write_report
from workflows.workflow import GenerateConfig

M, Q, CAP, E = schema.M, schema.Q, schema.CAP, schema.EMB
# a 1x1 JPEG: the report inlines whatever thumbnail file a row names
TINY_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0"
    "Hyc5PTgyPC4zNDL/wAALCAABAAEBAREA/8QAFAABAAAAAAAAAAAAAAAAAAAACf/EABQQAQAAAAAAAAAAAAAAAAAAAAD/2gAIAQEAAD8AKp//2Q=="
)


def _row(i, source, status, reasons=(), motion=1.0):
    return {M.clip_id: f"clip{i:02d}", M.source: source, M.start_frame: 10 * i, M.end_frame: 10 * i + 10,
            M.fps: 24.0, M.duration: 10 / 24, M.motion_score: motion, M.luminance_mean: 100.0, M.sharpness: 50.0,
            M.camera_motion: "static", M.status: status, M.filter_reasons: list(reasons), M.config_hash: "abc",
            M.thumb_path: f"thumbs/clip{i:02d}.jpg", M.clip_path: f"clips/clip{i:02d}.mp4" if status == "kept" else None}


@pytest.fixture
def run(tmp_path):
    run = RunDir(tmp_path)
    rows_a = [_row(0, "/v/a.mp4", "kept"), _row(1, "/v/a.mp4", "filtered", ["static"], 0.01),
              _row(2, "/v/a.mp4", "filtered", ["static", "too_dark"], 0.02)]
    rows_b = [_row(3, "/v/b.mp4", "kept", motion=3.0)]
    atomic_write_table(rows_to_table(rows_a, schema.MANIFEST), run.manifest / "a-abc.parquet")
    atomic_write_table(rows_to_table(rows_b, schema.MANIFEST), run.manifest / "b-abc.parquet")
    atomic_write_table(rows_to_table([], schema.MANIFEST), run.manifest / "c-abc.parquet")  # a source with no clips
    for i in range(4):
        atomic_write_bytes(run.thumbs / f"clip{i:02d}.jpg", TINY_JPEG)
    q = [{Q.source: "/v/bad.mp4", Q.stage: "probe", Q.error: "is empty (0 bytes) <re-export>", Q.created_at: now_utc()}]
    atomic_write_table(rows_to_table(q, schema.QUARANTINE), run.quarantine_parts / "d-abc.parquet")
    q = [{Q.source: "/v/a.mp4", Q.stage: "extract", Q.error: "ended early", Q.clip_id: "clip09",
          Q.created_at: now_utc()}]
    atomic_write_table(rows_to_table(q, schema.QUARANTINE), run.quarantine_parts / "a-abc.clips.parquet")
    fold_quarantine(run)
    return run


def test_funnel_counts_reconcile(run):
    f = funnel(run)
    assert (f.inputs, f.processed, f.quarantined) == (4, 3, 1)
    assert (f.detected, f.kept, f.filtered) == (4, 2, 2)
    assert f.reasons == {"static": 2, "too_dark": 1}
    assert f.clip_failures == 1


def test_report_is_self_contained_with_every_section(run):
    page = write_report(run, CurateConfig()).read_text()
    assert "src='file:" not in page and "src=\"http" not in page  # nothing outside the file
    for number in (4, 3, 1, 2):
        assert f"<td class=n>{number}</td>" in page
    # one histogram per score that has values, plus the camera motion bars
    assert len(re.findall(r"data:image/png;base64,", page)) == 5
    assert page.count(base64.b64encode(TINY_JPEG).decode()) == 5  # 2 kept + static (2) + too_dark (1)
    assert "static (2 clips)" in page and "too_dark (1 clips)" in page
    assert "is empty (0 bytes) &lt;re-export&gt;" in page  # escaped, not injected
    assert "clip09" in page


def test_a_clip_filtered_after_curation_counts_as_filtered_with_its_reason(run):
    add_decisions(run, "dedup", {"clip03": "near_duplicate:clip00"}, {"threshold": 0.9})
    f = funnel(run)
    assert (f.detected, f.kept, f.filtered) == (4, 1, 3)
    assert f.detected == f.kept + f.filtered
    assert f.reasons == {"static": 2, "too_dark": 1, "near_duplicate:clip00": 1}
    page = write_report(run, CurateConfig()).read_text()
    assert "<td class=n>1</td>" in page and "<td class=n>3</td>" in page
    assert "near_duplicate:clip00 (1 clips)" in page
    assert page.count(base64.b64encode(TINY_JPEG).decode()) == 5  # 1 kept + static (2) + too_dark + duplicate


def test_report_escapes_captions_and_names_untrained_models(run):
    rows = [{CAP.clip_id: "clip00", CAP.caption_dense: "a <script>alert(1)</script> & more",
             CAP.caption_short: "<b>bold</b>", CAP.captioner: "tiny-untrained-vlm", CAP.prompt_version: "v1",
             CAP.created_at: now_utc()},
            {CAP.clip_id: "clip03", CAP.captioner: "tiny-untrained-vlm", CAP.created_at: now_utc(),
             CAP.error: "too short"}]
    append_part(run.captions, rows, schema.CAPTIONS, "caption")
    vectors = [{E.clip_id: "clip00", E.kind: "visual", E.model: "tiny-random [untrained random weights]",
                E.vector: [0.0, 1.0], E.created_at: now_utc()}]
    append_part(run.embeddings, vectors, schema.EMBEDDINGS, "visual")
    page = write_report(run, CurateConfig()).read_text()
    assert "<script>alert(1)" not in page and "<b>bold</b>" not in page
    assert "a &lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<tr><td>tiny-untrained-vlm</td><td class=n>1</td><td class=n>1</td></tr>" in page
    assert "Untrained placeholder model:" in page


def test_fold_quarantine_gathers_every_part(run):
    table = pq.read_table(run.quarantine)
    assert sorted(table.column(Q.source).to_pylist()) == ["/v/a.mp4", "/v/bad.mp4"]


def test_report_command_rerenders(run):
    run.report.unlink(missing_ok=True)
    result = CliRunner().invoke(app, ["report", str(run.root)])
    assert result.exit_code == 0, result.output
    assert run.report.exists() and re.search(r"kept\s+2", result.output)


def test_bad_workflow_config_is_exit_2_with_the_key_named(tmp_path):
    bad = tmp_path / "wf.yaml"
    bad.write_text("out: x\ncurate:\n  filters:\n    min_duraton: 3\n")
    result = CliRunner().invoke(app, ["run", str(bad)])
    assert result.exit_code == 2
    assert "unknown key 'curate.filters.min_duraton'" in result.output
    assert "Traceback" not in result.output


def test_bad_inputs_and_curate_config_are_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["curate", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "missing.mp4' does not exist" in result.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text("filters:\n  min_luminance: bright\n")
    (tmp_path / "v.mp4").write_bytes(b"x")
    result = CliRunner().invoke(app, ["curate", str(tmp_path / "v.mp4"), "--out", str(tmp_path / "o"), "-c", str(cfg)])
    assert result.exit_code == 2 and "filters.min_luminance" in result.output
    assert not (tmp_path / "o" / "manifest").exists()


def test_generated_footage_is_deterministic_and_not_rewritten(tmp_path):
    cfg = GenerateConfig(out_dir=tmp_path / "a", reels=2, seconds=1, width=64, height=48, seed=3)
    paths = generate_footage(cfg)
    assert [p.name for p in paths] == ["reel_0003.mp4", "reel_0004.mp4"]
    assert all(p.with_suffix(".truth.json").exists() for p in paths)
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert [p.stat().st_mtime_ns for p in generate_footage(cfg)] == mtimes
    again = generate_footage(cfg.model_copy(update={"out_dir": tmp_path / "b"}))
    truth = [p.with_suffix(".truth.json").read_text() for p in paths]
    assert [p.with_suffix(".truth.json").read_text() for p in again] == truth
    frames = [count_frames(p) for p in paths]
    assert [count_frames(p) for p in again] == frames and min(frames) > 0
    assert not list((tmp_path / "a").glob(".*"))


def test_every_score_gets_a_histogram_with_its_filter_thresholds():
    from curation.config import CurateConfig
    from curation.core.config import validate
    from curation.report_section import score_thresholds

    drawn = score_thresholds(validate({"filters": {"min_colorfulness": 10}}, CurateConfig))
    assert drawn[schema.M.colorfulness] == [("min_colorfulness", 10.0)]  # read off the filter's rule
    assert drawn[schema.M.motion_score] == [("min_motion", 0.001), ("max_motion", 1.0)]
    assert {schema.M.duration, schema.M.aesthetic_score, schema.M.sharpness} <= set(drawn)
    assert score_thresholds(CurateConfig())[schema.M.colorfulness] == []  # off by default: no line
