"""The kernel's clip reader (curation.core.clips) and the clip files recorded after curation."""

from __future__ import annotations

from datetime import timedelta
from typing import get_args

import pytest
import yaml

from curation.core import schema
from curation.core.clips import ClipShape, cached_copy, clip_shape, run_kind, source_file
from curation.core.rundir import RunDir, atomic_write_table, now_utc, rows_to_table
from curation.core.stage import PermanentError
from curation.core.tables import add_clip_files, kept_clips, read_clips
from curation.extract import saved_extract_config

M = schema.M


def test_the_copy_of_a_remote_input_is_where_curation_keeps_it(tmp_path):
    from curation.inputs import source_key

    run = RunDir(tmp_path)
    for url, name in (("https://example.org/a/reel.mp4?token=1", "reel.mp4"), ("s3://bucket/x/y.mov", "y.mov"),
                      ("http://host/", "host")):
        assert cached_copy(run, url) == run.input_cache / source_key(url) / name


def test_a_source_that_moved_or_vanished_is_named(tmp_path):
    run = RunDir(tmp_path / "out")
    here = tmp_path / "reel.mp4"
    here.write_bytes(b"x")
    assert source_file(run, {M.clip_id: "c", M.source: str(here)}) == here
    assert source_file(run, {M.clip_id: "c", M.source: f"file://{here}"}) == here
    with pytest.raises(PermanentError, match=r"source .*gone\.mp4 of clip c is gone \(moved or deleted"):
        source_file(run, {M.clip_id: "c", M.source: str(tmp_path / "gone.mp4")})
    with pytest.raises(PermanentError, match=r"https://example.org/r.mp4 of clip c: its copy .* is gone"):
        source_file(run, {M.clip_id: "c", M.source: "https://example.org/r.mp4"})
    copy = cached_copy(run, "https://example.org/r.mp4")
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"x")
    assert source_file(run, {M.clip_id: "c", M.source: "https://example.org/r.mp4"}) == copy


def test_a_range_follows_the_runs_saved_extract_settings(tmp_path):
    run = RunDir(tmp_path)
    run.configs.mkdir(parents=True)
    (run.configs / "curate-abc.yaml").write_text(yaml.safe_dump({"extract": {"max_side": 128, "fps": 12.5, "crf": 30}}))
    assert clip_shape(run, {M.config_hash: "abc"}) == ClipShape(max_side=128, fps=12.5, crf=30)
    assert clip_shape(run, {M.config_hash: "missing"}) == ClipShape()  # the source's own size and rate
    # `rushes extract` writes what the stages read: the saved settings, or the source's size and rate
    for chash in ("abc", "missing"):
        written, read = saved_extract_config(run, chash), clip_shape(run, {M.config_hash: chash})
        assert (written.max_side, written.fps, written.crf) == (read.max_side, read.fps, read.crf)


def test_clip_files_written_later_join_the_clip_view(tmp_path):
    run = RunDir(tmp_path)
    curated = now_utc()
    rows = [{M.clip_id: f"c{i}", M.source: "a.mp4", M.status: schema.STATUS_KEPT, M.filter_reasons: [],
             M.thumb_path: f"thumbs/c{i}.jpg", M.created_at: curated} for i in range(2)]
    atomic_write_table(rows_to_table(rows, schema.MANIFEST), run.manifest / "a-h1.parquet")
    manifest = (run.manifest / "a-h1.parquet").read_bytes()
    assert run_kind(kept_clips(run)) == "clip-free"
    assert add_clip_files(run, {"c0": ("clips/c0.mp4", None)}, {"crf": 20}) == 1
    clips = {r[M.clip_id]: r for r in read_clips(run).to_pylist()}
    assert clips["c0"][M.clip_path] == "clips/c0.mp4" and clips["c0"][M.thumb_path] == "thumbs/c0.jpg"
    assert clips["c1"][M.clip_path] is None
    assert run_kind(kept_clips(run)) == "clip-free, partly extracted"
    add_clip_files(run, {"c0": ("clips/c0-new.mp4", "thumbs/c0-new.jpg")}, {"crf": 20})  # the newest wins
    assert {r[M.clip_id]: r[M.clip_path] for r in kept_clips(run)}["c0"] == "clips/c0-new.mp4"
    assert (run.manifest / "a-h1.parquet").read_bytes() == manifest
    # a source curated again afterwards starts afresh: files of its earlier clips no longer count
    for row in rows:
        row[M.created_at] = curated + timedelta(days=1)
    atomic_write_table(rows_to_table(rows, schema.MANIFEST), run.manifest / "a-h1.parquet")
    assert all(r[M.clip_path] is None for r in kept_clips(run))


def test_every_video_reader_setting_offers_the_readers_there_are():
    from curation.core.frames import READERS
    from indexing.config import VisualConfig
    from recaption.config import CaptionConfig
    from workflows.train_steps import ShardStepConfig

    for model in (CaptionConfig, VisualConfig, ShardStepConfig):
        assert get_args(model.model_fields["video_reader"].annotation) == READERS, model
