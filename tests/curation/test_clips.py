"""The kernel's clip reader (curation.core.clips) and the clip files recorded after curation."""

from __future__ import annotations

from datetime import timedelta
from typing import get_args

import pytest
import yaml

from curation.core import schema
from curation.core.clips import (
    ClipShape,
    cached_copy,
    clip_frame_count,
    clip_frames,
    clip_shape,
    cut_range,
    run_kind,
    source_file,
)
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


def test_a_cut_range_is_its_clip_frames_decoded_in_one_pass(tmp_path, monkeypatch):
    """The player's cut of a range (resampled and shrunk by the run's extract settings) shows the frames
    `clip_frames` reads, and the range is decoded once: reading it in chunks, each from the range's
    start, decoded it again and again (quadratic in its length)."""
    import av
    import numpy as np

    from curation.core import frames as F
    from workflows.synthetic.footage import Segment, write_footage

    source = tmp_path / "source.mp4"
    write_footage(source, [Segment(60, "circle", "red", "right", "blue"),
                           Segment(400, "square", "green", "left", "yellow", camera="pan_left")], 160, 96, fps=24)
    run = RunDir(tmp_path / "out")
    run.configs.mkdir(parents=True)
    (run.configs / "curate-abc.yaml").write_text(yaml.safe_dump({"extract": {"max_side": 128, "fps": 16}}))
    row = {M.clip_id: "c", M.source: str(source), M.config_hash: "abc", M.fps: 24.0, M.clip_path: None,
           M.start_frame: 60, M.end_frame: 460, M.start_time: 60 / 24}
    F._clock(source)  # the source's clock, read once per source (one frame), is not the cut's decoding
    decoded = [0]
    frames_from = F._frames_from

    def counting(*args):
        for frame in frames_from(*args):
            decoded[0] += 1
            yield frame

    monkeypatch.setattr(F, "_frames_from", counting)
    monkeypatch.setattr(F, "_wants_decord", lambda reader: False)  # every read counted here, none in decord's worker
    cut = cut_range(run, row, tmp_path / "cut.mp4")
    assert decoded[0] <= 460  # at most one pass (from the key frame before the range)
    monkeypatch.undo()
    with av.open(str(cut)) as container:
        played = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    reference = clip_frames(run, row, reader="pyav")
    assert len(played) == len(reference) == clip_frame_count(run, row) == 267  # 400 frames at 24 fps -> 16 fps
    assert played[0].shape == reference[0].shape == (76, 128, 3)
    assert max(np.abs(a.astype(int) - b).mean() for a, b in zip(played, reference, strict=True)) < 4  # h264
    with pytest.raises(ValueError, match="has a file"):
        cut_range(run, {**row, M.clip_path: "clips/c.mp4"}, tmp_path / "again.mp4")
