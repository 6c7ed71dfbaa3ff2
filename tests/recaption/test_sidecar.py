"""caption_original from a sidecar next to the source: .srt by the clip's time range, .json, .txt."""

import json
import logging

import pytest

from curation.core.rundir import RunDir, atomic_write_table, now_utc, rows_to_table
from curation.core.schema import CAP, MANIFEST, M, clip_id_for
from curation.core.tables import latest_captions
from recaption.run import caption_run
from recaption.sidecar import SidecarCaptions, SidecarError, read_sidecar

SRT = """1
00:00:00,500 --> 00:00:01,800
<i>A kite</i> rises

2
00:00:02,000 --> 00:00:03,500
over the beach.

3
00:00:05,000 --> 00:00:06,000
{\\an8}Gulls circle.
"""


def clip(source, start, end) -> dict:
    return {M.clip_id: clip_id_for(str(source), int(start * 10), int(end * 10)), M.source: str(source),
            M.start_time: start, M.end_time: end}


def test_srt_cues_overlapping_the_clip_make_its_original_caption(tmp_path):
    source = tmp_path / "take07.mp4"
    (tmp_path / "take07.srt").write_text(SRT)
    sidecars = SidecarCaptions()
    assert sidecars.caption(clip(source, 0.0, 2.5)) == "A kite rises over the beach."  # markup gone
    assert sidecars.caption(clip(source, 4.0, 8.0)) == "Gulls circle."
    assert sidecars.caption(clip(source, 3.6, 4.9)) is None  # no cue in that range


@pytest.mark.parametrize("name, content, expected", [
    ("take07.json", json.dumps({"title": "Beach", "description": "A red kite  over a beach."}), "A red kite over a beach."),
    ("take07.mp4.json", json.dumps("A kite."), "A kite."),
    ("take07.txt", "\ufeffA red kite\nover a beach.\n", "A red kite over a beach."),
])
def test_json_and_txt_sidecars_caption_every_clip_of_the_source(tmp_path, name, content, expected):
    (tmp_path / name).write_text(content, encoding="utf-8")
    assert SidecarCaptions().caption(clip(tmp_path / "take07.mp4", 3.0, 4.0)) == expected


def test_a_cameras_capital_suffix_and_a_file_url_source_find_the_sidecar(tmp_path):
    (tmp_path / "DJI_0001.SRT").write_text(SRT)
    assert SidecarCaptions().caption(clip(tmp_path / "DJI_0001.MP4", 4.0, 8.0)) == "Gulls circle."
    assert SidecarCaptions().caption(clip(f"file://{tmp_path / 'DJI_0001.MP4'}", 4.0, 8.0)) == "Gulls circle."


def test_no_sidecar_or_a_url_gives_none(tmp_path):
    assert SidecarCaptions().caption(clip(tmp_path / "alone.mp4", 0.0, 1.0)) is None
    assert SidecarCaptions().caption(clip("https://example.com/a.mp4", 0.0, 1.0)) is None


@pytest.mark.parametrize("name, content, message", [
    ("a.json", "{bad", "not JSON"),
    ("a.json", json.dumps({"caption": 3}), "expected a JSON string or an object with one of caption"),
    ("a.srt", "just some words", "no subtitle cue with times"),
])
def test_a_bad_sidecar_is_named_and_skipped_with_a_warning(tmp_path, caplog, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SidecarError, match=message):
        read_sidecar(path)
    with caplog.at_level(logging.WARNING, logger="recaption.sidecar"):
        assert SidecarCaptions().caption(clip(tmp_path / "a.mp4", 0.0, 1.0)) is None
    assert str(path) in caplog.text and message in caplog.text


def test_caption_rows_carry_the_sources_own_caption(tmp_path):
    source = tmp_path / "take07.mp4"
    (tmp_path / "take07.srt").write_text(SRT)
    run = RunDir(tmp_path / "run")
    rows = [{**clip(source, start, end), M.start_frame: int(start * 12), M.end_frame: int(end * 12), M.fps: 12.0,
             M.duration: end - start, M.camera_motion: "static", M.status: "kept", M.filter_reasons: [],
             M.created_at: now_utc()} for start, end in ((0.0, 2.5), (4.0, 8.0))]
    atomic_write_table(rows_to_table(rows, MANIFEST), run.manifest / "part-0.parquet")
    caption_run(run.root)
    originals = sorted(r[CAP.caption_original] for r in latest_captions(run).to_pylist())
    assert originals == ["A kite rises over the beach.", "Gulls circle."]


def test_without_a_sidecar_the_containers_comment_or_title_is_used(tmp_path):
    import av
    import numpy as np

    def write(path, tags):
        with av.open(str(path), "w") as container:
            container.metadata.update(tags)
            stream = container.add_stream("mpeg4", rate=12)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")):
                container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    write(tmp_path / "a.mp4", {"title": "Beach", "comment": "A red  kite over a beach."})
    write(tmp_path / "b.mp4", {"title": "Beach at dawn"})
    write(tmp_path / "c.mp4", {})
    sidecars = SidecarCaptions()
    assert sidecars.caption(clip(tmp_path / "a.mp4", 0.0, 1.0)) == "A red kite over a beach."
    assert sidecars.caption(clip(tmp_path / "b.mp4", 0.0, 1.0)) == "Beach at dawn"
    assert sidecars.caption(clip(tmp_path / "c.mp4", 0.0, 1.0)) is None
    (tmp_path / "a.txt").write_text("From the sidecar.")
    assert SidecarCaptions().caption(clip(tmp_path / "a.mp4", 0.0, 1.0)) == "From the sidecar."  # a sidecar wins
